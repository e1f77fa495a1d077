"""Where the bundled Ansible collection lives, and importing its module_utils.

The wheel carries the collection ``gpu_install.nvidia`` under
``gpu_install/_collection/ansible_collections/gpu_install/nvidia``; that
``_collection`` directory is a collections path for Ansible and a sys.path
entry for the CLI, so the CLI imports the very module_utils the modules run.
From a source checkout (no ``_collection``), a link farm pointing at the
checkout stands in for it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

NAMESPACE = "gpu_install"
NAME = "nvidia"
FQCN = f"{NAMESPACE}.{NAME}"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _source_checkout() -> Path | None:
    root = _PACKAGE_DIR.parent.parent
    if (root / "galaxy.yml").is_file() and (root / "plugins" / "module_utils").is_dir():
        return root
    return None


def collections_path() -> Path:
    """The directory that holds ``ansible_collections/gpu_install/nvidia``."""
    bundled = _PACKAGE_DIR / "_collection"
    if (bundled / "ansible_collections" / NAMESPACE / NAME).is_dir():
        return bundled
    src = _source_checkout()
    if src is None:
        raise RuntimeError("the gpu_install.nvidia collection is missing from this installation")
    import tempfile  # only here (a source checkout): it costs gpu-install detect a few ms at start

    farm = Path(tempfile.gettempdir()) / f"gpu-install-src-{os.getuid()}"
    link = farm / "ansible_collections" / NAMESPACE / NAME
    if not (link.is_symlink() and link.resolve() == src):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{NAME}.{os.getpid()}")
        tmp.symlink_to(src)
        os.replace(tmp, link)
    return farm


def collection_dir() -> Path:
    return collections_path() / "ansible_collections" / NAMESPACE / NAME


def module_utils(name: str) -> ModuleType:
    """Import ``plugins/module_utils/<name>`` of the bundled collection."""
    path = str(collections_path())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils.{name}")
