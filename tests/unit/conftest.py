"""Unit-test helpers (no fixtures): make the source checkout's ``gpu_install`` importable.

Tests import target-side code the way the CLI does::

    from gpu_install.collection import module_utils
    gpu_detect = module_utils("gpu_detect")
"""

from __future__ import annotations

import sys
from pathlib import Path

INSTALLER = Path(__file__).resolve().parents[2] / "installer"
if str(INSTALLER) not in sys.path:
    sys.path.insert(0, str(INSTALLER))

from gpu_install.collection import module_utils  # noqa: E402

__all__ = ["ansible_doc", "make_tree", "module_utils", "run_module"]


def run_module(name: str, args_file: Path, args: dict) -> tuple[int, dict]:
    """Run plugins/modules/<name>.py as Ansible runs it (an args file in, one JSON object out)."""
    import json
    import os
    import subprocess

    from gpu_install.collection import collection_dir, collections_path

    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(collections_path()), *sys.path]))
    proc = subprocess.run(
        [sys.executable, str(collection_dir() / "plugins" / "modules" / f"{name}.py"), str(args_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def make_tree(root: Path, files: dict) -> Path:
    """Write ``{path: text|bytes}`` below root (a captured host tree); a value ("->", target) makes a symlink."""
    for rel, data in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, tuple):
            path.symlink_to(data[1])
        elif isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    return root


def ansible_doc(name: str) -> dict:
    """``ansible-doc --json`` of gpu_install.nvidia.<name>, from the collection the CLI uses."""
    import json
    import os
    import shutil
    import subprocess

    import pytest

    from gpu_install.collection import collections_path

    binary = shutil.which("ansible-doc", path=os.path.dirname(sys.executable)) or shutil.which("ansible-doc")
    if binary is None:
        pytest.fail("ansible-doc is not installed beside this Python")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path()))
    fqcn = f"gpu_install.nvidia.{name}"
    proc = subprocess.run([binary, "--json", fqcn], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)[fqcn]
