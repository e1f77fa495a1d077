# Copyright: gpu-install contributors
# Apache License 2.0
"""Atomic file writes, the one way every module writes a file (stdlib only).

A temp file in the target's directory, the content, mode, owner (and an
existing file's SELinux label), fsync, rename onto the target, fsync of the
directory: a reader sees the old file or the new one, never a part; on any
failure the temp file is removed and the target is as it was.

Reading: ``decode_utf8`` gives a file's text or refuses bytes that are not UTF-8 at their line and column
(``line_col``), through the caller's own refusal.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

TEMP_SUFFIX = ".gpu-install.tmp"


def line_col(text: str, offset: int) -> Tuple[int, int]:
    """The 1-based line and column of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def decode_utf8(data: bytes, refuse: Callable[[str, int, int], Exception]) -> str:
    """``data`` as UTF-8 text; the first byte that is not UTF-8 raises ``refuse(what, line, column)``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start].decode("utf-8", "replace")
        line, col = line_col(head, len(head))
        raise refuse(f"bytes that are not UTF-8 (0x{data[exc.start]:02x})", line, col) from None


def toml_reader() -> Any:
    """Python's TOML reader: ``tomllib`` (3.11 and newer), else the ``tomli`` package, else None."""
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]

        return tomllib
    except ImportError:
        pass
    try:
        import tomli  # type: ignore[import-not-found,unused-ignore]

        return tomli
    except ImportError:
        return None


def _copy_selinux(src_fd: Optional[int], dst_fd: int) -> None:
    if src_fd is None or not hasattr(os, "getxattr"):
        return
    try:
        os.setxattr(dst_fd, "security.selinux", os.getxattr(src_fd, "security.selinux"))
    except OSError:
        pass


def stale_temps(target: str) -> list:
    """Temp files of ``target`` that a killed write left beside it (ours only: prefix and suffix match)."""
    directory = os.path.dirname(target) or "."
    prefix = "." + os.path.basename(target) + "."
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.startswith(prefix) and n.endswith(TEMP_SUFFIX))


def remove_stale_temps(target: str) -> list:
    """Remove what ``stale_temps`` finds (a write killed between mkstemp and rename); returns what went."""
    removed = []
    for path in stale_temps(target):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def write_atomic(
    target: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0, like: Optional[str] = None
) -> None:
    """Write ``data`` to ``target``: temp file beside it, fsync, rename, fsync the directory.

    ``like`` (an existing file) lends its SELinux label.  On failure the temp
    file is removed and ``target`` is as it was.
    """
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=TEMP_SUFFIX, dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if os.geteuid() == 0 or (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, uid, gid)
            if like is not None:
                src = os.open(like, os.O_RDONLY)
                try:
                    _copy_selinux(src, fd)
                finally:
                    os.close(src)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_file_record(state_dir: str, name: str, target: str) -> Dict[str, Any]:
    """``target``'s entry in the record ``state_dir/name`` (``{"schema": 1, "files": {target: entry}}``); {} when
    there is none, or the record is unreadable."""
    try:
        with open(os.path.join(state_dir, name), encoding="utf-8") as fh:
            data = json.load(fh)
        entry = data.get("files", {}).get(target, {})
        return entry if isinstance(entry, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def save_file_record(state_dir: str, name: str, target: str, entry: Dict[str, Any], drop_empty: bool = False) -> None:
    """Set (or, with an empty ``entry``, drop) ``target``'s entry, atomically; ``drop_empty``: a record left with no
    entries is removed.  Raises OSError."""
    path = os.path.join(state_dir, name)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError
    except (OSError, ValueError):
        data = {"schema": 1, "files": {}}
    if entry:
        data["files"][target] = entry
    else:
        data["files"].pop(target, None)
    if drop_empty and not data["files"]:
        if os.path.lexists(path):
            os.unlink(path)
        return
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"), 0o644, os.geteuid(), os.getegid())


# The first lines of every whole file gpu-install writes say so.
MARKER = "Written by gpu-install"


def marked(text: Optional[str]) -> bool:
    """A file's text (None: unreadable) that carries gpu-install's marker near its start."""
    return text is not None and MARKER in text[:512]


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None
