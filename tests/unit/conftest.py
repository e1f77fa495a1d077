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

__all__ = ["module_utils", "run_module"]


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
