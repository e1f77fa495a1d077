"""Where the bundled Ansible collection lives, and importing its module_utils.

The wheel carries the collection ``gpu_install.nvidia`` under
``gpu_install/_collection/ansible_collections/gpu_install/nvidia``; that
``_collection`` directory is a collections path for Ansible and a sys.path
entry for the CLI, so the CLI imports the very module_utils the modules run.
From a source checkout (no ``_collection``), a link farm pointing at the
checkout stands in for it.
"""

from __future__ import annotations

import os
import sys

# typing.TYPE_CHECKING without importing typing (mypy reads any TYPE_CHECKING name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

NAMESPACE = "gpu_install"
NAME = "nvidia"
FQCN = f"{NAMESPACE}.{NAME}"

# os.path, not pathlib, on the import path of every subcommand: pathlib brings urllib.parse and ipaddress with
# it, a few milliseconds of `gpu-install detect` (bench/detect). Callers that want a Path get one.
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))


def _source_checkout() -> str | None:
    root = os.path.dirname(os.path.dirname(_PACKAGE_DIR))
    checkout = os.path.isfile(os.path.join(root, "galaxy.yml"))
    if checkout and os.path.isdir(os.path.join(root, "plugins", "module_utils")):
        return root
    return None


def _collections_path() -> str:
    bundled = os.path.join(_PACKAGE_DIR, "_collection")
    if os.path.isdir(os.path.join(bundled, "ansible_collections", NAMESPACE, NAME)):
        return bundled
    src = _source_checkout()
    if src is None:
        raise RuntimeError("the gpu_install.nvidia collection is missing from this installation")
    import tempfile  # only here (a source checkout): it costs gpu-install detect a few ms at start

    # One farm per checkout: two checkouts on one machine (a clone beside a working tree) never take each other's.
    checkout = src.strip("/").replace("/", "-")[-120:]
    farm = os.path.join(tempfile.gettempdir(), f"gpu-install-src-{os.getuid()}-{checkout}")
    link = os.path.join(farm, "ansible_collections", NAMESPACE, NAME)
    if not (os.path.islink(link) and os.path.realpath(link) == src):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp = os.path.join(os.path.dirname(link), f".{NAME}.{os.getpid()}")
        os.symlink(src, tmp)
        os.replace(tmp, link)
    return farm


def collections_path() -> Path:
    """The directory that holds ``ansible_collections/gpu_install/nvidia``."""
    from pathlib import Path

    return Path(_collections_path())


def collection_dir() -> Path:
    return collections_path() / "ansible_collections" / NAMESPACE / NAME


def module_utils(name: str) -> ModuleType:
    """Import ``plugins/module_utils/<name>`` of the bundled collection."""
    path = _collections_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    from importlib import import_module

    return import_module(f"ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils.{name}")
