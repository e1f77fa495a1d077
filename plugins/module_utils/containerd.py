# Copyright: gpu-install contributors
# Apache License 2.0
"""containerd's CRI configuration for NVIDIA's runtime and CDI: one implementation, stdlib only.

Imported by the ``gpu_install.nvidia.containerd_config`` module on managed hosts (Python >= 3.8) and by the
CLI.  The user's config.toml changes by one line at most (its top-level ``imports`` gains the drop-in
directory's glob, as NVIDIA's ``nvidia-ctk runtime configure`` does); everything gpu-install sets lives in a
drop-in file it owns.  Layers, each usable on its own:

* ``loads(data, path)``: the TOML document (tomllib, else tomli, else a refusal naming python3-tomli), with
  line and column in every refusal.
* ``release(version)``: what the installed containerd does, from a table (config version it speaks, how it
  merges imported files, CDI).  ``schema(config_version)``: where the CRI keys live in a config of that version.
* ``add_import(text, glob)``: the config.toml text with the glob added to ``imports`` (one line added or
  changed; comments, order, spacing and line endings kept byte for byte).
* ``dumps(doc)``: a small TOML emitter for the drop-in.
* ``plan(...)``/``configure(...)``: read, decide, back up, write atomically, validate with
  ``containerd config dump``, restart and wait, roll back.  Failures are ``ContainerdError`` with the exit code
  and one sentence.

Facts and their sources: docs/containerd.md.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import math
import os
import re
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, fileio, gpu_detect
from ansible_collections.gpu_install.nvidia.plugins.module_utils.daemon_json import FIX_IT, backup_name
from ansible_collections.gpu_install.nvidia.plugins.module_utils.docker_service import systemd_running
from ansible_collections.gpu_install.nvidia.plugins.module_utils.fileio import (
    decode_utf8,
    line_col,
    toml_reader,
    write_atomic,
)

DEFAULT_PATH = "/etc/containerd/config.toml"
DEFAULT_DROP_IN = "/etc/containerd/conf.d/99-gpu-install.toml"
DEFAULT_SOCKET = "/run/containerd/containerd.sock"
DEFAULT_STATE_DIR = "/var/lib/gpu-install"
# What configure changed in config.toml, so that removal takes back exactly that (docs/containerd.md, Removal).
RECORD_NAME = "containerd.json"
# The imports entry NVIDIA's `nvidia-ctk runtime configure` adds (toolkit 1.20.0,
# pkg/config/engine/containerd/config_drop_in.go importPattern), gpu-install's too with the default drop-in: without a
# record (a host applied by an older release) removal takes out only this entry.
NVIDIA_GLOB = "/etc/containerd/conf.d/*.toml"
SERVICE = "containerd"
# NVIDIA's package path of the runtime, used when it is not on PATH (nvidia-container-toolkit 1.20.0,
# cmd/nvidia-ctk/runtime/configure/configure.go: defaultNVIDIARuntimeExpecutablePath).
NVIDIA_RUNTIME_PATH = "/usr/bin/nvidia-container-runtime"
# containerd's default CDI spec directories (containerd 1.7 and 2.1 `config dump`), where gpu-install's spec is.
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
# containerd's default runtime when default_runtime_name is unset (its `config dump` shows "runc").
STOCK_RUNTIME = "runc"
# The runtime type NVIDIA's entry gets when no runtime of the user's can be copied (toolkit 1.20.0,
# pkg/config/engine/containerd/config.go, GetDefaultRuntimeOptions; RuntimeType io.containerd.runc.v2).
RUNC_V2 = "io.containerd.runc.v2"
# Runtimes whose entry NVIDIA copies for its own, in order after the default one (toolkit 1.20.0,
# pkg/config/engine/engine.go GetLowLevelRuntimes: the default runtime unless it is nvidia*, then runc, crun).
TEMPLATE_RUNTIMES = ("runc", "crun")
MODES = ("runtime", "cdi")
# disabled_plugins entries that turn the CRI plugin off (v1 ids, v2 and v3 URIs).


class Schema(NamedTuple):
    """Where a config of one version keeps the keys gpu-install sets (paths below plugins.<plugin>)."""

    plugin: str
    runtimes: Tuple[str, ...]
    default_runtime_name: Tuple[str, ...]
    enable_cdi: Tuple[str, ...]
    cdi_spec_dirs: Tuple[str, ...]


# config version -> CRI plugin id and key paths (toolkit 1.20.0 pkg/config/engine/containerd/containerd.go;
# containerd docs/cri/config.md for v2 and v3).  A file without `version` is version 1.
SCHEMAS: Dict[int, Schema] = {
    1: Schema("cri", ("containerd", "runtimes"), ("containerd", "default_runtime_name"), ("enable_cdi",),
              ("cdi_spec_dirs",)),
    2: Schema("io.containerd.grpc.v1.cri", ("containerd", "runtimes"), ("containerd", "default_runtime_name"),
              ("enable_cdi",), ("cdi_spec_dirs",)),
    3: Schema("io.containerd.cri.v1.runtime", ("containerd", "runtimes"), ("containerd", "default_runtime_name"),
              ("enable_cdi",), ("cdi_spec_dirs",)),
}  # fmt: skip


class Release(NamedTuple):
    """What a containerd release does with its configuration."""

    since: Tuple[int, int]
    config_version: int  # the version it speaks (`containerd config default`, and what `config dump` prints)
    replaces_sections: bool  # an imported file's plugin section replaces the section whole (1.x), else deep merge
    cdi: bool  # the CRI plugin reads CDI specs (enable_cdi exists)
    cdi_default: bool  # enable_cdi is on when unset


# Newest first.  Evidence (the real binaries, tests/integration/test_containerd_merge.py) in docs/containerd.md.
RELEASES: Tuple[Release, ...] = (
    Release((2, 0), 3, False, True, True),
    Release((1, 7), 2, True, True, False),
    Release((1, 6), 2, True, False, False),
)

Doc = Dict[str, Any]
Runner = Callable[[Sequence[str], float], Tuple[int, str, str]]


class ContainerdError(errors.Failure):
    """A containerd configuration refusal, write failure or failed restart."""


# ---------------------------------------------------------------------------
# Reading TOML
# ---------------------------------------------------------------------------
def _toml() -> Any:
    reader = toml_reader()
    if reader is None:
        raise ContainerdError(
            errors.UNSUPPORTED,
            "Reading containerd's TOML configuration needs Python 3.11 or the python3-tomli package on this host; "
            "install python3-tomli, then run again.",
        )
    return reader


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def refusal(path: str, what: str, line: int, col: int) -> ContainerdError:
    return ContainerdError(
        errors.INVALID_INPUT, f"{path} cannot be merged: {what} at line {line}, column {col}; {FIX_IT}."
    )


def decode(data: bytes, path: str) -> str:
    return decode_utf8(data, lambda what, line, col: refusal(path, what, line, col))


def loads(data: bytes, path: str) -> Doc:
    """The TOML document in ``data``; malformed TOML is refused (code 4) naming the path, line and column."""
    text = decode(data, path)
    toml = _toml()
    try:
        doc = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        msg = str(getattr(exc, "msg", "") or exc)
        line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        found = _AT.search(msg)
        if found:
            msg = msg[: found.start()]
            line, col = int(found.group(1)), int(found.group(2))
        elif line is None:
            end = "(at end of document)"
            msg = msg.replace(end, "").strip()
            line, col = line_col(text, len(text))
        what = msg[:1].lower() + msg[1:] if msg else "malformed TOML"
        raise refusal(path, what, int(line), int(col or 1)) from None
    return dict(doc)


def config_version(doc: Optional[Doc]) -> Optional[int]:
    """The file's ``version``: 1 when the file has none, None when there is no file."""
    if doc is None:
        return None
    value = doc.get("version", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------
# Releases and versions
# ---------------------------------------------------------------------------
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(output: str) -> Optional[Tuple[int, int, int]]:
    """containerd's version from ``containerd --version`` ("containerd github.com/containerd/containerd 1.7.24~ds1
    ...", "containerd containerd.io 1.7.27 05044ec...", "containerd github.com/containerd/containerd/v2 2.1.9")."""
    for word in output.split()[1:]:
        found = _VERSION.match(word)
        if found:
            return int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)
    return None


def release(version: Tuple[int, ...]) -> Release:
    """The row of RELEASES for a containerd version; older than 1.6 is refused (code 3)."""
    for row in RELEASES:
        if tuple(version[:2]) >= row.since:
            return row
    shown = ".".join(str(v) for v in version)
    raise ContainerdError(
        errors.UNSUPPORTED,
        f"containerd {shown} is older than 1.6, the oldest containerd gpu-install configures; upgrade containerd, "
        "or leave containerd out of gpu_install_container_engines.",
    )


def schema(version: int) -> Schema:
    try:
        return SCHEMAS[version]
    except KeyError:
        raise ContainerdError(
            errors.UNSUPPORTED,
            f"containerd configuration version {version} is not one gpu-install knows (1, 2, 3); "
            "check the `version` line of the configuration.",
        ) from None


def drop_in_version(rel: Release, user_version: Optional[int]) -> int:
    """The drop-in's ``version``: config.toml's, since containerd merges the files first and migrates the result
    from the highest version among them (a version 3 import leaves a version 2 config.toml's CRI settings
    unread on 2.1; a version 2 import under a version 1 config.toml is refused by 1.7: 'invalid plugin key URI
    "cri"'). Without a config.toml, or under a version 1 one on containerd 2.x (which ignores its CRI settings
    anyway), the version the installed containerd speaks."""
    if user_version is None or (user_version == 1 and not rel.replaces_sections):
        return rel.config_version
    return user_version


# ---------------------------------------------------------------------------
# Dict paths
# ---------------------------------------------------------------------------
def get_path(doc: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def set_path(doc: Doc, path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        nxt = doc.get(key)
        if not isinstance(nxt, dict):
            nxt = doc[key] = {}
        doc = nxt
    doc[path[-1]] = value


def deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value


def deep_merge(dst: Doc, src: Doc) -> Doc:
    """containerd 2.x's merge of an imported file: tables merge key by key, other values replace."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            deep_merge(dst[key], value)
        else:
            dst[key] = deep_copy(value)
    return dst


# ---------------------------------------------------------------------------
# The top level of a TOML text: where keys and the first table header are
# ---------------------------------------------------------------------------
class TopKey(NamedTuple):
    name: str
    line_start: int
    value_start: int
    value_end: int  # after the value's last character (trailing spaces and comment excluded)
    line_end: int  # after the line's newline (or len(text))


def _skip_string(text: str, k: int) -> int:
    """The offset after the string starting at k (basic, literal, or either multi-line form)."""
    for quote in ('"""', "'''"):
        if text.startswith(quote, k):
            j = k + 3
            while True:
                j = text.find(quote, j)
                if j < 0:
                    return len(text)
                if quote == '"""' and _escaped(text, j):
                    j += 1
                    continue
                j += 3
                while j < len(text) and text[j] == quote[0]:  # up to two quotes may close the content
                    j += 1
                return j
    quote = text[k]
    j = k + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and quote == '"':
            j += 2
            continue
        if c in (quote, "\n"):
            return j + 1
        j += 1
    return j


def _escaped(text: str, j: int) -> bool:
    n = 0
    while j - 1 - n >= 0 and text[j - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def _scan_value(text: str, k: int) -> Tuple[int, int]:
    """(end of value, end of line) for a value starting at k: brackets and strings may span lines."""
    depth = 0
    last = k
    n = len(text)
    while k < n:
        c = text[k]
        if c in "\"'":
            k = _skip_string(text, k)
            last = k
            continue
        if c == "#":
            nl = text.find("\n", k)
            k = n if nl < 0 else nl
            continue
        if c == "\n":
            if depth <= 0:
                return last, k + 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        if not c.isspace():
            last = k + 1
        k += 1
    return last, n


def _unquote(key: str) -> str:
    key = key.strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        return key[1:-1]
    return key


def top_level(text: str) -> Tuple[List[TopKey], int]:
    """The top-level keys of a TOML text and the offset of its first table header (len(text) if none)."""
    keys: List[TopKey] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j >= n:
            break
        c = text[j]
        if c in "\r\n" or c == "#":
            nl = text.find("\n", j)
            i = n if nl < 0 else nl + 1
            continue
        if c == "[":
            return keys, i
        k = j
        while k < n and text[k] != "=" and text[k] != "\n":
            k = _skip_string(text, k) if text[k] in "\"'" else k + 1
        if k >= n or text[k] != "=":  # not a key line (tomllib accepted the file, so this does not happen)
            nl = text.find("\n", j)
            i = n if nl < 0 else nl + 1
            continue
        end, line_end = _scan_value(text, k + 1)
        keys.append(TopKey(_unquote(text[j:k]), i, k + 1, end, line_end))
        i = line_end
    return keys, n


def _array_tail(text: str, start: int, end: int) -> int:
    """For the array text[start:end] ('[' ... ']'): the offset of its last significant character before the
    closing ']' (the '[' itself when the array is empty)."""
    last = start
    k = start + 1
    close = end - 1
    while k < close:
        c = text[k]
        if c in "\"'":
            k = _skip_string(text, k)
            last = k - 1
            continue
        if c == "#":
            nl = text.find("\n", k)
            k = close if nl < 0 else nl
            continue
        if not c.isspace():
            last = k
        k += 1
    return last


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _quoted(value: str) -> str:
    return _emit_string(value)


def add_import(text: str, glob: str) -> str:
    """``text`` with ``glob`` appended to its top-level ``imports``: one line changed or added, nothing else."""
    keys, header = top_level(text)
    eol = _eol(text)
    found = [k for k in keys if k.name == "imports"]
    item = _quoted(glob)
    if not found:
        version = [k for k in keys if k.name == "version"]
        anchor = version[0] if version else (keys[-1] if keys else None)
        at = anchor.line_end if anchor else 0
        prefix = ""
        if at > 0 and not text[:at].endswith("\n"):
            prefix = eol
        return text[:at] + prefix + f"imports = [{item}]" + eol + text[at:]
    key = found[0]
    start = text.index("[", key.value_start)
    close = key.value_end - 1
    tail = _array_tail(text, start, key.value_end)
    if tail == start:  # empty array
        return text[:close] + item + text[close:]
    if "\n" not in text[start:close]:  # one line
        sep = " " if text[tail] == "," else ", "
        return text[: tail + 1] + sep + item + text[tail + 1 :]
    close_line = text.rfind("\n", 0, close) + 1
    closes_alone = text[close_line:close].strip() == ""
    if text[tail] == "," and closes_alone and text.rfind("\n", 0, tail) + 1 != close_line:
        tail_line = text.rfind("\n", 0, tail) + 1
        indent = re.match(r"[ \t]*", text[tail_line:]).group(0)  # type: ignore[union-attr]
        return text[:close_line] + indent + item + "," + eol + text[close_line:]
    sep = " " if text[tail] == "," else ", "
    return text[: tail + 1] + sep + item + text[tail + 1 :]


def _array_items(text: str, start: int, end: int) -> List[Tuple[int, int]]:
    """The (start, end) offsets of the string items of the array text[start:end] ('[' ... ']')."""
    items: List[Tuple[int, int]] = []
    k = start + 1
    close = end - 1
    while k < close:
        c = text[k]
        if c in "\"'":
            j = _skip_string(text, k)
            items.append((k, j))
            k = j
            continue
        if c == "#":
            nl = text.find("\n", k)
            k = close if nl < 0 else nl
            continue
        k += 1
    return items


def _without_import(doc: Doc, glob: str, line_gone: bool) -> Doc:
    """``doc`` with the last ``glob`` of its imports taken out (and ``imports`` itself when its line went)."""
    expected = dict(doc)
    entries = list(doc.get("imports") or [])
    del entries[len(entries) - 1 - entries[::-1].index(glob)]
    if line_gone and not entries:
        expected.pop("imports", None)
    else:
        expected["imports"] = entries
    return expected


def remove_import(
    text: str, glob: str, path: str, line_created: Optional[bool] = None, sha256_before: Optional[str] = None
) -> str:
    """``text`` with ``glob`` taken out of its top-level ``imports``: the inverse of ``add_import``.

    The candidates are the edits ``add_import`` can have made (the whole line it created, the item with the
    separator it put before it, the line it added to a multi-line array); the one chosen is one that
    ``add_import`` turns back into ``text``: the file as it was before it, byte for byte. Where several are
    (``["/a", "G" ]`` came from ``["/a", ]`` or from ``["/a" ]``), the record decides: the one whose SHA-256 is the
    file's before the import was added, else the whole line when gpu-install created it (``line_created``). A file
    edited around the entry since then gets the smallest edit that reads back as the file without the entry.
    Anything else is refused (code 4)."""
    doc = loads(text.encode("utf-8"), path)
    entries = doc.get("imports")
    if not isinstance(entries, list) or glob not in entries:
        return text
    keys, _header = top_level(text)
    key = [k for k in keys if k.name == "imports"][0]
    start = text.index("[", key.value_start)
    items = _array_items(text, start, key.value_end)
    toml = _toml()
    ours = [(s, e) for s, e in items if toml.loads("v = " + text[s:e])["v"] == glob][-1]
    s, e = ours
    eol = _eol(text)
    whole_line: List[str] = []
    others: List[str] = []
    if len(items) == 1:
        whole_line.append(text[: key.line_start] + text[key.line_end :])
        if key.line_end == len(text) and text[: key.line_start].endswith(eol):  # a newline add_import put before
            whole_line.append(text[: key.line_start - len(eol)])
        others.append(text[:s] + text[e:])
    for sep in (", ", " "):
        if text[:s].endswith(sep):
            others.append(text[: s - len(sep)] + text[e:])
    line_start = text.rfind("\n", 0, s) + 1
    line_end = text.find("\n", e)
    line_end = len(text) if line_end < 0 else line_end + 1
    if text[line_start:line_end].strip() == text[s:e] + ",":
        others.append(text[:line_start] + text[line_end:])
    ordered = others + whole_line if line_created is False else whole_line + others
    exact = [c for c in ordered if add_import(c, glob) == text]
    if sha256_before:
        exact.sort(key=lambda c: _sha256(c.encode("utf-8")) != sha256_before)
    # Edited since: the item and its own comma (the next item's line then untouched), else the comma before it.
    edited: List[str] = []
    after = re.match(r"[ \t]*,[ \t]*", text[e:])
    if after:
        edited.append(text[:s] + text[e + after.end() :])
    if items.index(ours) > 0:
        prev_end = items[items.index(ours) - 1][1]
        comma = text.find(",", prev_end, s)
        if comma >= 0:
            edited.append(text[:comma] + text[comma + 1 : s].rstrip(" \t") + text[e:])
    for candidate in exact + ordered + edited:
        try:
            found = loads(candidate.encode("utf-8"), path)
        except ContainerdError:
            continue
        if found == _without_import(doc, glob, "imports" not in found):
            return candidate
    raise ContainerdError(
        errors.INVALID_INPUT,
        f"{path}: the import {glob} could not be taken out of `imports` by a text edit; take it out yourself, then "
        "run again.",
    )


def covers(pattern: str, path: str) -> bool:
    """Whether an imports entry names ``path`` or is a glob matching it (segment by segment, as Go's filepath.Match,
    whose * does not cross '/')."""
    if pattern == path:
        return True
    a, b = pattern.split("/"), path.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(y, x) for x, y in zip(a, b))


def resolve_import(entry: str, config_path: str) -> str:
    """containerd reads a relative import relative to the directory of the file that names it."""
    return entry if os.path.isabs(entry) else os.path.join(os.path.dirname(config_path), entry)


# ---------------------------------------------------------------------------
# TOML emitter (the drop-in)
# ---------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_STR_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _emit_string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _STR_ESC:
            out.append(_STR_ESC[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _emit_key(key: str) -> str:
    return key if _BARE.match(key) else _emit_string(key)


def _emit_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _emit_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_emit_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_emit_key(k)} = {_emit_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _emit_table(table: Doc, path: List[str], out: List[str], depth: int = 0) -> None:
    """A table's header (when it has values of its own, or nothing else) and values, then its sub-tables, each
    header indented two spaces per header above it."""
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    indent = "  " * depth
    if path and (scalars or not tables):
        if out and out[-1] != "":
            out.append("")
        out.append(indent + "[" + ".".join(_emit_key(k) for k in path) + "]")
        depth += 1
    for key, value in scalars:
        out.append("  " * depth + f"{_emit_key(key)} = {_emit_value(value)}")
    for key, value in tables:
        _emit_table(value, path + [key], out, depth)


def dumps(doc: Doc, header: str = "") -> str:
    """``doc`` as TOML text (tables as headers, nested tables below their parent)."""
    out: List[str] = []
    _emit_table(doc, [], out)
    return header + "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# The effective CRI section and what gpu-install adds
# ---------------------------------------------------------------------------
def import_order(config_path: str, doc: Doc, drop_in: str) -> Tuple[List[str], List[str]]:
    """The files ``doc`` imports, in containerd's order (entries in order, each glob's matches sorted as Go's
    filepath.Glob sorts them), split around our drop-in: (before it, after it). Our drop-in itself is left out;
    when no entry covers it yet, every file comes before it (its glob is appended last)."""
    import glob as globmod

    before: List[str] = []
    after: List[str] = []
    ours = os.path.realpath(drop_in)
    passed = False
    entries = doc.get("imports") or []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, str):
            continue
        pattern = resolve_import(entry, config_path)
        matches = sorted(globmod.glob(pattern)) if globmod.has_magic(pattern) else [pattern]
        covering = not passed and covers(pattern, drop_in)
        for found in matches:
            real = os.path.realpath(found)
            if real == ours or found in before or found in after or not os.path.isfile(found):
                continue
            if covering and os.path.basename(found) > os.path.basename(drop_in):
                passed = True
            (after if passed else before).append(found)
        passed = passed or covering
    return before, after


def later_conflicts(rel: Release, later: Sequence[Tuple[str, Doc]], keys: Sequence[Tuple[str, ...]]) -> List[str]:
    """Files containerd reads after our drop-in that would undo it: on 1.x any CRI table (it replaces ours whole),
    on 2.x one that sets a key gpu-install sets."""
    found = []
    for path, doc in later:
        section = get_path(doc, ("plugins", schema(config_version(doc) or 1).plugin))
        if not isinstance(section, dict):
            continue
        if rel.replaces_sections or any(get_path(section, k) is not None for k in keys):
            found.append(path)
    return found


def effective_section(rel: Release, sources: Sequence[Tuple[str, Doc]]) -> Doc:
    """The CRI runtime section containerd builds from config.toml and its imports (paths relative to the plugin's
    table): 1.x takes the last file's section whole, 2.x merges them key by key."""
    section: Doc = {}
    for _path, doc in sources:
        version = config_version(doc) or 1
        found = get_path(doc, ("plugins", schema(version).plugin))
        if not isinstance(found, dict):
            continue
        if rel.replaces_sections:
            section = deep_copy(found)
        else:
            deep_merge(section, found)
    return section


def template_runtime(section: Doc, sch: Schema, runtime_name: str, stock: Optional[Doc] = None) -> Doc:
    """The runtime entry NVIDIA's is made from: the default runtime's unless it is nvidia*, else runc's, else crun's
    (toolkit 1.20.0 GetDefaultRuntimeOptions), from the user's section, else from containerd's own defaults
    (``stock``: the runtimes of `containerd config default`), else a bare runc v2 entry."""
    default = get_path(section, sch.default_runtime_name)
    names = [default] if isinstance(default, str) and default and not default.startswith("nvidia") else []
    for runtimes in (get_path(section, sch.runtimes), stock):
        for name in names + list(TEMPLATE_RUNTIMES):
            entry = runtimes.get(name) if isinstance(runtimes, dict) else None
            if isinstance(entry, dict) and name != runtime_name:
                return deep_copy(entry)
    return {"runtime_type": RUNC_V2}


class Options(NamedTuple):
    mode: str = "runtime"
    runtime_name: str = "nvidia"
    runtime_path: str = NVIDIA_RUNTIME_PATH  # absolute
    default_runtime: bool = False


def wanted(
    rel: Release, section: Doc, sch: Schema, options: Options, stock: Optional[Doc] = None
) -> List[Tuple[Tuple[str, ...], Any]]:
    """The keys gpu-install sets (paths relative to the CRI plugin's table) given the user's effective section."""
    keys: List[Tuple[Tuple[str, ...], Any]] = []
    if options.mode == "runtime":
        entry = template_runtime(section, sch, options.runtime_name, stock)
        if not isinstance(entry.get("options"), dict):
            entry["options"] = {}
        entry["options"]["BinaryName"] = options.runtime_path
        entry.setdefault("runtime_type", RUNC_V2)
        keys.append((sch.runtimes + (options.runtime_name,), entry))
    current_default = get_path(section, sch.default_runtime_name)
    if options.default_runtime and options.mode == "runtime":
        keys.append((sch.default_runtime_name, options.runtime_name))
    elif current_default == options.runtime_name:
        # Left by an earlier run or by nvidia-ctk: the default goes back to containerd's own.
        keys.append((sch.default_runtime_name, STOCK_RUNTIME))
    if rel.cdi:
        if not rel.cdi_default or get_path(section, sch.enable_cdi) is False:
            keys.append((sch.enable_cdi, True))
        dirs = get_path(section, sch.cdi_spec_dirs)
        if isinstance(dirs, list):
            missing = [d for d in CDI_SPEC_DIRS if d not in dirs]
            if missing:
                keys.append((sch.cdi_spec_dirs, list(dirs) + missing))
        elif not rel.cdi_default:
            keys.append((sch.cdi_spec_dirs, list(CDI_SPEC_DIRS)))
    return keys


def drop_in_doc(
    rel: Release, version: int, section: Doc, options: Options, stock: Optional[Doc] = None
) -> Optional[Doc]:
    """The drop-in's document, or None when containerd needs nothing from gpu-install.

    ``stock``: the runtimes containerd has when a config names none (`containerd config default`). containerd 1.x
    decodes a section's ``runtimes`` table over its default map by replacing the map, so a drop-in that names only
    our runtime would take runc away; there the drop-in names containerd's own runtimes too."""
    sch = schema(version)
    keys = wanted(rel, section, sch, options, stock)
    if not keys:
        return None
    body: Doc = deep_copy(section) if rel.replaces_sections else {}
    if rel.replaces_sections and options.mode == "runtime" and not isinstance(get_path(body, sch.runtimes), dict):
        set_path(body, sch.runtimes, deep_copy(stock or {}))
    for path, value in keys:
        set_path(body, path, value)
    return {"version": version, "plugins": {sch.plugin: body}}


def header(config_path: str, rel: Release) -> str:
    lines = [
        "# Written by gpu-install (module gpu_install.nvidia.containerd_config): a later run rewrites this file.",
        "# Change it through gpu-install's settings (containerd_runtime_path, containerd_default_runtime,",
        "# nvidia_container_mode), then run gpu-install again. Your own settings belong in",
        f"# {config_path}, which imports this directory.",
    ]
    if rel.replaces_sections:
        lines.append("# containerd 1.x replaces a plugin's whole section with an imported file's, so this file repeats")
        lines.append(f"# the CRI section of {config_path} (and the files it imports) as containerd merges them:")
        lines.append("# after changing that section there, run gpu-install again to bring this copy up to date.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Running containerd
# ---------------------------------------------------------------------------
def _run(argv: Sequence[str], timeout: float = 60) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def find_binary(name: str, given: Optional[str] = None) -> Optional[str]:
    if given:
        return given if os.access(given, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for base in ("/usr/bin", "/usr/local/bin", "/usr/sbin"):
        path = os.path.join(base, name)
        if os.access(path, os.X_OK):
            return path
    return None


def installed_version(containerd: str, run: Runner = _run) -> Tuple[int, int, int]:
    rc, out, err = run([containerd, "--version"], 30)
    found = parse_version(out) if rc == 0 else None
    if found is None:
        raise ContainerdError(
            errors.UNSUPPORTED,
            f"`{containerd} --version` did not give containerd's version ({(err or out).strip()[:200] or rc}); "
            "check the containerd installation.",
        )
    return found


def resolve_runtime_path(runtime_path: str) -> str:
    """An absolute path: as given, else found on PATH, else NVIDIA's package path."""
    if os.path.isabs(runtime_path):
        return runtime_path
    return shutil.which(runtime_path) or os.path.join(os.path.dirname(NVIDIA_RUNTIME_PATH), runtime_path)


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip() and "level=warning" not in line]
    return " ".join(kept[-lines:])[:400]


def config_dump(containerd: str, config: str, run: Runner = _run) -> Tuple[Optional[Doc], str]:
    """``containerd --config CONFIG config dump`` parsed; (None, containerd's message) when it refuses."""
    rc, out, err = run([containerd, "--config", config, "config", "dump"], 60)
    if rc != 0:
        return None, _tail(err or out) or f"exit status {rc}"
    try:
        return loads(out.encode("utf-8"), "config dump"), ""
    except ContainerdError as exc:
        return None, exc.reason


def dump_problems(dump: Doc, before: Optional[Doc], rel: Release, options: Options) -> List[str]:
    """What the merged configuration lacks: our runtime, default, CDI, and the runtimes it had before."""
    sch = schema(rel.config_version)
    section = get_path(dump, ("plugins", sch.plugin)) or {}
    runtimes = get_path(section, sch.runtimes) or {}
    problems = []
    if options.mode == "runtime":
        binary = get_path(runtimes, (options.runtime_name, "options", "BinaryName"))
        if binary != options.runtime_path:
            problems.append(f"runtime {options.runtime_name} with BinaryName {options.runtime_path} is missing")
    default = get_path(section, sch.default_runtime_name)
    if options.default_runtime and options.mode == "runtime" and default != options.runtime_name:
        problems.append(f"the default runtime is {default}, not {options.runtime_name}")
    if rel.cdi and get_path(section, sch.enable_cdi) is not True:
        problems.append("enable_cdi is not true")
    if before is not None:
        old = get_path(before, ("plugins", sch.plugin) + sch.runtimes) or {}
        lost = sorted(set(old) - set(runtimes) - {options.runtime_name})  # ours goes in cdi mode
        if lost:
            problems.append(f"runtimes {', '.join(lost)} are gone")
    return problems


def stock_runtimes(containerd: str, rel: Release, run: Runner = _run) -> Optional[Doc]:
    """The runtimes containerd has when its configuration names none (`containerd config default`)."""
    rc, out, _err = run([containerd, "config", "default"], 60)
    if rc != 0:
        return None
    try:
        found = get_path(loads(out.encode("utf-8"), "config default"), ("plugins", schema(rel.config_version).plugin))
    except ContainerdError:
        return None
    runtimes = get_path(found, schema(rel.config_version).runtimes)
    return runtimes if isinstance(runtimes, dict) else None


def unit_active(run: Runner = _run) -> Optional[bool]:
    if not systemd_running():
        return None
    return run(["systemctl", "is-active", "--quiet", SERVICE], 30)[0] == 0


def process_started(pid: int) -> Optional[float]:
    """When process ``pid`` started, as a Unix time (proc(5): /proc/PID/stat field 22 in clock ticks after boot,
    /proc/stat btime)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii", errors="replace") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def service_started(run: Runner = _run) -> Optional[float]:
    """When containerd's running main process started (None when it does not run under systemd)."""
    rc, out, _err = run(["systemctl", "show", "-p", "MainPID", "--value", SERVICE], 30)
    pid = int(out.strip()) if rc == 0 and out.strip().isdigit() else 0
    return process_started(pid) if pid > 0 else None


def wait_answering(
    ctr: Optional[str],
    socket: str,
    timeout: float,
    run: Runner = _run,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Tuple[bool, str]:
    """Until ``ctr --address SOCKET version`` answers (or, without ctr, the socket exists)."""
    deadline = clock() + timeout
    last = ""
    while True:
        if ctr:
            rc, out, err = run([ctr, "--address", socket, "version"], 15)
            if rc == 0:
                return True, ""
            last = _tail(err or out)
        elif os.path.exists(socket):
            return True, ""
        if clock() >= deadline:
            return False, last or f"{socket} did not answer within {timeout:g} s"
        sleep(0.5)


# ---------------------------------------------------------------------------
# Plan and apply
# ---------------------------------------------------------------------------
class File(NamedTuple):
    path: str
    exists: bool
    data: bytes
    mode: int = 0o644
    uid: int = -1  # -1: a new file's owner (root, or the user running a test)
    gid: int = -1


def read(path: str) -> File:
    """The file as it is now: bytes, mode and owner (kept to write it back even after it was removed)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return File(path, True, fh.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid)
    except FileNotFoundError:
        return File(path, False, b"")
    except OSError as exc:
        raise host_error(path, exc, "read") from None


def host_error(path: str, exc: OSError, doing: str) -> ContainerdError:
    return ContainerdError(
        errors.HOST_ERROR, f"Could not {doing} {path}: [Errno {exc.errno}] {exc.strerror or exc}; nothing was changed."
    )


class Plan(NamedTuple):
    config: File
    config_after: Optional[bytes]  # None: unchanged
    drop_in: File
    drop_in_after: Optional[bytes]  # None: no drop-in wanted
    version: int  # the drop-in's (and a new config.toml's) config version
    plugin_id: str
    release: Release
    warnings: List[str]
    cri_disabled: bool = False  # config.toml's disabled_plugins names the CRI plugin
    drop_in_dir_existed: bool = True  # a rollback removes the directory when this run made it
    state_dir: str = ""  # where the record is (empty: none kept)
    record_before: Optional[Dict[str, Any]] = None  # the record's entry before this run, put back by a rollback

    @property
    def config_changed(self) -> bool:
        return self.config_after is not None and self.config_after != self.config.data

    @property
    def drop_in_changed(self) -> bool:
        if self.drop_in_after is None:
            return self.drop_in.exists
        return not self.drop_in.exists or self.drop_in.data != self.drop_in_after

    @property
    def changed(self) -> bool:
        return self.config_changed or self.drop_in_changed


def plan(path: str, drop_in: str, options: Options, version: Tuple[int, ...], stock: Optional[Doc] = None) -> Plan:
    """What config.toml and the drop-in become; reads only. ``stock``: containerd's default runtimes."""
    if options.mode not in MODES:
        raise ContainerdError(errors.INVALID_INPUT, f"mode must be runtime or cdi, not {options.mode!r}.")
    rel = release(version)
    shown = ".".join(str(v) for v in version)
    if options.mode == "cdi" and not rel.cdi:
        raise ContainerdError(
            errors.UNSUPPORTED,
            f"containerd {shown} has no CDI support (it came with containerd 1.7); upgrade containerd to 1.7 or "
            "later, or set nvidia_container_mode: runtime.",
        )
    path = os.path.realpath(path)
    drop_in = os.path.realpath(drop_in)
    warnings: List[str] = []
    config = read(path)
    doc = loads(config.data, path) if config.exists else None
    user_version = config_version(doc)
    if doc is not None and user_version is None:
        raise ContainerdError(errors.INVALID_INPUT, f"{path} has a `version` that is not a number; {FIX_IT}.")
    if user_version is not None:
        schema(user_version)
    imports = doc.get("imports") if doc is not None else None
    if (
        doc is not None
        and "imports" in doc
        and not (isinstance(imports, list) and all(isinstance(i, str) for i in imports))
    ):
        raise ContainerdError(errors.INVALID_INPUT, f"{path} has `imports` that is not a list of file names; {FIX_IT}.")
    if user_version == 1 and not rel.replaces_sections:
        warnings.append(
            f"{path} is a version 1 configuration, whose CRI settings containerd {shown} ignores; "
            "run `containerd config migrate` to keep them."
        )
    version_out = drop_in_version(rel, user_version)
    glob_entry = os.path.join(os.path.dirname(drop_in), "*.toml")
    covered = any(covers(resolve_import(i, path), drop_in) for i in (imports or []))

    sources: List[Tuple[str, Doc]] = []
    later: List[Tuple[str, Doc]] = []
    if doc is not None:
        sources.append((path, doc))
        # The order as it will be: files in the drop-in's directory that config.toml does not import yet come in
        # with the glob gpu-install adds.
        planned = dict(doc, imports=list(imports or []) + ([] if covered else [glob_entry]))
        first, last = import_order(path, planned, drop_in)
        sources += [(f, loads(read(f).data, f)) for f in first]
        later = [(f, loads(read(f).data, f)) for f in last]
    section = effective_section(rel, sources)
    sch_out = schema(version_out)
    ours = [sch_out.runtimes + (options.runtime_name,), sch_out.default_runtime_name, sch_out.enable_cdi,
            sch_out.cdi_spec_dirs]  # fmt: skip
    shadows = later_conflicts(rel, later, ours)
    if shadows:
        undoes = "replaces its CRI section" if rel.replaces_sections else "sets keys of its CRI section"
        raise ContainerdError(
            errors.INVALID_INPUT,
            f"{shadows[0]} is read after {drop_in} and {undoes} (an nvidia-ctk drop-in?): remove it, or rename "
            f"it to sort before {os.path.basename(drop_in)}, then run again; gpu-install keeps containerd's NVIDIA "
            "settings in one file.",
        )
    disabled = (doc or {}).get("disabled_plugins")
    cri_disabled = isinstance(disabled, list) and gpu_detect.cri_disabled(
        [str(p) for p in disabled], version[0], user_version
    )
    if cri_disabled:
        warnings.append(
            f"{path} disables containerd's CRI plugin (disabled_plugins): the configuration is written all the same, "
            "and Kubernetes gets it once the plugin is on."
        )

    new_doc = drop_in_doc(rel, version_out, section, options, stock)
    drop_after = dumps(new_doc, header(path, rel)).encode("utf-8") if new_doc is not None else None
    if drop_after is not None:
        loads(drop_after, drop_in)  # the emitter's output reads back

    config_after: Optional[bytes] = None
    if new_doc is not None:
        if doc is None:
            config_after = created_config(version_out, glob_entry)
        elif not covered:
            text = config.data.decode("utf-8")
            new_text = add_import(text, glob_entry)
            _check_added(doc, loads(new_text.encode("utf-8"), path), glob_entry, path)
            config_after = new_text.encode("utf-8")
    return Plan(config, config_after, read(drop_in), drop_after, version_out,
                schema(version_out).plugin, rel, warnings, cri_disabled,
                os.path.isdir(os.path.dirname(drop_in)))  # fmt: skip


def created_config(version: int, glob_entry: str) -> bytes:
    """The config.toml gpu-install writes where there is none."""
    return f"version = {version}\nimports = [{_quoted(glob_entry)}]\n".encode()


def _check_added(before: Doc, after: Doc, glob_entry: str, path: str) -> None:
    expected = dict(before)
    expected["imports"] = list(before.get("imports") or []) + [glob_entry]
    if after != expected:
        raise ContainerdError(
            errors.INVALID_INPUT,
            f"{path} could not be given the import {glob_entry} by one line; add it to `imports` yourself, then run "
            "again.",
        )


def _diffs(p: Plan) -> List[Dict[str, str]]:
    out = []
    if p.config_changed:
        out.append({
            "before_header": p.config.path, "after_header": p.config.path,
            "before": p.config.data.decode("utf-8", "replace"), "after": (p.config_after or b"").decode("utf-8"),
        })  # fmt: skip
    if p.drop_in_changed:
        out.append({
            "before_header": p.drop_in.path, "after_header": p.drop_in.path,
            "before": p.drop_in.data.decode("utf-8", "replace"), "after": (p.drop_in_after or b"").decode("utf-8"),
        })  # fmt: skip
    return out


def result_skeleton(path: str, drop_in: str) -> Dict[str, Any]:
    """The keys every result carries, on every path (failures included)."""
    return {
        "changed": False,
        "path": path,
        "drop_in": drop_in,
        "config_version": None,
        "plugin_id": None,
        "backup_file": None,
        "drop_in_backup_file": None,
        "restarted": False,
        "diff": [],
        "items": [],
        "kept": [],
        "msg": "",
        "warnings": [],
    }


def _stat(f: File) -> Tuple[int, int, int]:
    if f.exists:
        return f.mode, f.uid, f.gid
    if os.geteuid() != 0:
        return 0o644, os.geteuid(), os.getegid()
    return 0o644, 0, 0


def _put(f: File, data: Optional[bytes]) -> None:
    """Make f.path hold data (None: absent), keeping mode and owner."""
    if data is None:
        if os.path.lexists(f.path):
            os.unlink(f.path)
        return
    mode, uid, gid = _stat(f)
    directory = os.path.dirname(f.path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    write_atomic(f.path, data, mode, uid, gid, like=f.path if os.path.exists(f.path) else None)


def _backup(f: File) -> Optional[str]:
    if not f.exists:
        return None
    name = backup_name(f.path)
    mode, uid, gid = _stat(f)
    write_atomic(name, f.data, mode, uid, gid, like=f.path)
    return name


def configure(
    path: str = DEFAULT_PATH,
    drop_in: str = DEFAULT_DROP_IN,
    options: Optional[Options] = None,
    restart: bool = True,
    timeout: float = 60,
    backup: bool = True,
    check_mode: bool = False,
    containerd_path: Optional[str] = None,
    ctr_path: Optional[str] = None,
    socket: str = DEFAULT_SOCKET,
    run: Runner = _run,
    state_dir: Optional[str] = None,
) -> Dict[str, Any]:
    """Plan, and (not in check mode) write, validate, restart, roll back. Returns the module's result.

    ``state_dir``: where the record of what changed in config.toml is kept for removal (None: no record)."""
    result = result_skeleton(os.path.realpath(path), os.path.realpath(drop_in))
    options = options or Options()
    containerd = find_binary("containerd", containerd_path)
    if containerd is None:
        raise ContainerdError(
            errors.UNSUPPORTED,
            f"containerd is not installed{' at ' + containerd_path if containerd_path else ''} (gpu-install configures "
            "containerd but never installs it); install it, or leave containerd out of gpu_install_container_engines.",
        )
    version = installed_version(containerd, run)
    options = options._replace(runtime_path=resolve_runtime_path(options.runtime_path))
    p = plan(path, drop_in, options, version, stock_runtimes(containerd, release(version), run))
    result.update(config_version=p.version, plugin_id=p.plugin_id, warnings=list(p.warnings))
    if not p.changed:
        result["msg"] = "containerd's configuration already has what gpu-install sets"
        if restart and p.drop_in.exists and unit_active(run) is True and _restart_pending(p.drop_in.path, run):
            # A run killed between the write and the restart: the file says it, the running containerd does not.
            result.update(changed=True, msg="containerd runs without the drop-in written before it started")
            result["diff"] = [{"prepared": f"{p.drop_in.path} is newer than the running containerd: it is restarted"}]
            if not check_mode:
                _restart(p, result, ctr_path, socket, timeout, run, rollback=False)
        return result
    result.update(changed=True, diff=_diffs(p))
    if check_mode:
        result["msg"] = "containerd's configuration would change"
        return result

    before_dump = None
    if p.config.exists:
        before_dump, why = config_dump(containerd, p.config.path, run)
        if before_dump is None:
            raise ContainerdError(
                errors.INVALID_INPUT, f"containerd cannot load {p.config.path} as it is: {why}; {FIX_IT}."
            )
    new_config = p.config_after if p.config_changed else None
    candidate = os.path.join(os.path.dirname(p.config.path), "." + os.path.basename(p.config.path) + ".gpu-install-new")
    if state_dir:
        old_entry = load_record(state_dir, p.config.path)
        new_entry = record_entry(p, old_entry)
        if new_entry != old_entry:
            p = p._replace(state_dir=state_dir, record_before=old_entry)
            save_record(state_dir, p.config.path, new_entry)
    try:
        if backup:
            result["backup_file"] = _backup(p.config) if new_config is not None else None
            result["drop_in_backup_file"] = _backup(p.drop_in)
        _put(p.drop_in, p.drop_in_after)
        check_path = p.config.path
        if new_config is not None:
            if not os.path.isdir(os.path.dirname(p.config.path)):
                os.makedirs(os.path.dirname(p.config.path), mode=0o755)
            mode, uid, gid = _stat(p.config)
            write_atomic(candidate, new_config, mode, uid, gid, like=p.config.path if p.config.exists else None)
            check_path = candidate
    except OSError as exc:
        _undo(p, candidate, result)
        raise host_error(p.drop_in.path, exc, "write") from None
    after_dump, why = config_dump(containerd, check_path, run)
    if after_dump is None:
        problems = [why]
    elif p.cri_disabled:  # containerd's dump leaves out a disabled plugin's section: loading is all it shows
        problems = []
    else:
        problems = dump_problems(after_dump, before_dump, p.release, options)
    if problems:
        _undo(p, candidate, result)
        raise ContainerdError(
            errors.INVALID_INPUT,
            f"containerd does not accept the new configuration ({'; '.join(problems)}); {p.config.path} and "
            f"{p.drop_in.path} are as they were.",
        )
    if new_config is not None:
        try:
            os.replace(candidate, p.config.path)
        except OSError as exc:
            _undo(p, candidate, result)
            raise host_error(p.config.path, exc, "write") from None
    result["msg"] = "containerd's configuration changed"
    if not restart or unit_active(run) is not True:
        return result
    _restart(p, result, ctr_path, socket, timeout, run, candidate=candidate)
    return result


def _restart_pending(drop_in: str, run: Runner) -> bool:
    started = service_started(run)
    try:
        return started is not None and os.stat(drop_in).st_mtime > started + 1.0
    except OSError:
        return False


def _restart(
    p: Plan,
    result: Dict[str, Any],
    ctr_path: Optional[str],
    socket: str,
    timeout: float,
    run: Runner,
    candidate: str = "",
    rollback: bool = True,
) -> None:
    """Restart containerd and wait until it answers; if it does not, put the files back (``rollback``), restart it
    again and fail with code 7."""
    ctr = find_binary("ctr", ctr_path)
    run(["systemctl", "reset-failed", SERVICE], 30)
    rc, out, err = run(["systemctl", "restart", SERVICE], max(timeout, 30))
    ok, why = (rc == 0, _tail(err or out)) if rc != 0 else wait_answering(ctr, socket, timeout, run)
    if ok:
        result["restarted"] = True
        result["msg"] += "; containerd was restarted and answers"
        return
    if not rollback:
        raise ContainerdError(
            errors.ENGINE_ROLLED_BACK,
            f"containerd did not come back after a restart with the configuration already in place: {why}",
        )
    _undo(p, candidate, result, config_too=True)
    run(["systemctl", "reset-failed", SERVICE], 30)
    run(["systemctl", "restart", SERVICE], max(timeout, 30))
    wait_answering(ctr, socket, timeout, run)
    raise ContainerdError(
        errors.ENGINE_ROLLED_BACK,
        f"containerd did not come back with the new configuration; the previous configuration is restored: {why}",
    )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _undo(p: Plan, candidate: str, result: Dict[str, Any], config_too: bool = False) -> None:
    """Back to the host as it was: the files restored, the candidate and this run's backups (copies of what is
    back in place) removed."""
    _unlink(candidate)
    _restore(p, config_too)
    if p.state_dir and p.record_before is not None:
        try:
            save_record(p.state_dir, p.config.path, p.record_before)
        except ContainerdError:
            pass
    if not p.drop_in_dir_existed:
        try:
            os.rmdir(os.path.dirname(p.drop_in.path))
        except OSError:
            pass
    for key in ("backup_file", "drop_in_backup_file"):
        if result.get(key):
            _unlink(result[key])
            result[key] = None


def _restore(p: Plan, config_too: bool = False) -> None:
    """Put the files back as they were before this run."""
    _put(p.drop_in, p.drop_in.data if p.drop_in.exists else None)
    if config_too and p.config_changed:
        _put(p.config, p.config.data if p.config.exists else None)


# ---------------------------------------------------------------------------
# The record of what configure changed, and removal (state: absent)
# ---------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_record(state_dir: str, config_path: str) -> Dict[str, Any]:
    """The record's entry for config.toml (its realpath); {} when there is none or the record is unreadable."""
    return fileio.load_file_record(state_dir, RECORD_NAME, config_path)


def save_record(state_dir: str, config_path: str, entry: Dict[str, Any]) -> None:
    """Write config.toml's entry ({} drops it; a record left without entries is removed), atomically."""
    try:
        fileio.save_file_record(state_dir, RECORD_NAME, config_path, entry, drop_empty=True)
    except OSError as exc:
        path = os.path.join(state_dir, RECORD_NAME)
        raise ContainerdError(
            errors.HOST_ERROR,
            f"Could not write {path}: [Errno {exc.errno}] {exc.strerror or exc}; containerd's files are unchanged.",
        ) from None


def record_entry(p: Plan, old: Dict[str, Any]) -> Dict[str, Any]:
    """The record's entry once ``p`` is written: what gpu-install added to config.toml (or that it created it), the
    SHA-256 of config.toml and of the drop-in as it wrote them, and whether it made the drop-in's directory. Kept
    from earlier runs where this one does not write the file."""
    entry = dict(old)
    if p.config_changed:
        glob_entry = os.path.join(os.path.dirname(p.drop_in.path), "*.toml")
        if p.config.exists:
            had_line = "imports" in loads(p.config.data, p.config.path)
            entry.update(created=False, imports_line_created=not had_line, sha256_before=_sha256(p.config.data))
        else:
            entry.update(created=True, imports_line_created=True, sha256_before=None)
        entry.update(import_added=glob_entry, sha256=_sha256(p.config_after or b""))
    if p.drop_in_changed:
        entry["drop_in"] = p.drop_in.path
        entry["drop_in_sha256"] = _sha256(p.drop_in_after) if p.drop_in_after is not None else None
        if p.drop_in_after is not None and not p.drop_in_dir_existed:
            entry["drop_in_dir_created"] = True
    return entry


HEADER_START = b"# Written by gpu-install "


class Removal(NamedTuple):
    """What removal takes back (reads only)."""

    config: File
    config_after: Optional[bytes]  # the edited config.toml; None: not edited
    delete_config: bool  # config.toml is gpu-install's own, as it wrote it
    drop_in: File
    drop_in_edited: bool  # differs from what gpu-install wrote: backed up before it goes
    remove_dir: str  # the drop-in's directory, gpu-install's and empty once the drop-in goes ("" = stays)
    record: Dict[str, Any]
    glob: str  # the imports entry taken out ("" = none)
    kept: List[Dict[str, str]]

    @property
    def changed(self) -> bool:
        return self.config_after is not None or self.delete_config or self.drop_in.exists or bool(self.remove_dir)


def plan_removal(
    path: str = DEFAULT_PATH, drop_in: str = DEFAULT_DROP_IN, state_dir: str = DEFAULT_STATE_DIR
) -> Removal:
    """What ``state: absent`` takes back, from the record (else, for a host applied by an older release, what can be
    told to be gpu-install's); reads only."""
    path = os.path.realpath(path)
    drop_in = os.path.realpath(drop_in)
    entry = load_record(state_dir, path)
    config = read(path)
    drop = read(drop_in)
    kept: List[Dict[str, str]] = []
    if not entry and not drop.exists:
        return Removal(config, None, False, drop, False, "", entry, "", kept)
    glob_entry = os.path.join(os.path.dirname(drop_in), "*.toml")
    config_after: Optional[bytes] = None
    delete = False
    taken = ""
    if config.exists:
        doc = loads(config.data, path)
        found = doc.get("imports")
        imports: List[Any] = found if isinstance(found, list) else []
        if entry:
            taken = str(entry.get("import_added") or "")
            delete = bool(entry.get("created")) and entry.get("sha256") == _sha256(config.data)
            if entry.get("created") and not delete:
                kept.append({"target": path, "why": "gpu-install created it, and it was changed since: it stays, "
                             "without gpu-install's import"})  # fmt: skip
        elif any(covers(resolve_import(i, path), drop_in) for i in imports if isinstance(i, str)):
            import glob as globmod

            others = sorted(f for f in globmod.glob(NVIDIA_GLOB) if os.path.realpath(f) != drop_in)
            if glob_entry != NVIDIA_GLOB or NVIDIA_GLOB not in imports:
                why = f"gpu-install has no record of adding the import that reads {drop_in} (it is not {NVIDIA_GLOB})"
            elif others:
                why = f"the import {NVIDIA_GLOB} also reads {others[0]}, and gpu-install has no record of adding it"
            else:
                why = ""
                taken = NVIDIA_GLOB
                delete = config.data in (created_config(v, NVIDIA_GLOB) for v in SCHEMAS)
            if why:
                kept.append({"target": f"{path} imports", "why": why})
        if taken and not delete and taken in imports:
            line_created = entry.get("imports_line_created") if entry else None
            text = decode(config.data, path)
            config_after = remove_import(text, taken, path, line_created, entry.get("sha256_before")).encode("utf-8")
        elif not delete:
            taken = ""
    recorded = entry.get("drop_in_sha256")
    edited = drop.exists and (_sha256(drop.data) != recorded if recorded else not drop.data.startswith(HEADER_START))
    remove_dir = ""
    directory = os.path.dirname(drop_in)
    if entry.get("drop_in_dir_created") and not edited and os.path.isdir(directory):
        try:
            left = set(os.listdir(directory)) - {os.path.basename(drop_in)}
        except OSError:
            left = {"?"}
        remove_dir = "" if left else directory
    return Removal(config, config_after, delete, drop, edited, remove_dir, entry, taken, kept)


def _removal_items(r: Removal, restart: bool, done: Optional[Dict[str, Any]] = None) -> List[Dict[str, str]]:
    """The plan (or, with ``done``, the result's backups named) in the shared item shape."""
    done = done or {}
    items = []
    backup = f"; backed up to {done['backup_file']}" if done.get("backup_file") else ""
    if r.delete_config:
        items.append({"kind": "file", "target": r.config.path, "action": "remove",
                      "detail": "gpu-install created it" + backup})  # fmt: skip
    elif r.config_after is not None:
        items.append({"kind": "setting", "target": f"{r.config.path} imports", "action": "edit",
                      "detail": f"takes out {r.glob}" + backup})  # fmt: skip
    if r.drop_in.exists:
        detail = ""
        if r.drop_in_edited:
            where = done.get("drop_in_backup_file")
            detail = f"edited after apply: backed up to {where}" if where else "edited after apply: backed up first"
        items.append({"kind": "file", "target": r.drop_in.path, "action": "remove", "detail": detail})
    if r.remove_dir:
        items.append({"kind": "file", "target": r.remove_dir, "action": "remove",
                      "detail": "the directory gpu-install created, empty"})  # fmt: skip
    if restart:
        items.append({"kind": "setting", "target": SERVICE, "action": "restart",
                      "detail": "containerd restarts to drop the runtime"})  # fmt: skip
    return items


def _removal_pending(r: Removal, run: Runner) -> bool:
    """A removal killed after its changes and before containerd's restart: the record is still there, nothing is
    left to change, and config.toml (or the directories whose files went) is newer than the running containerd."""
    if not r.record or r.changed:
        return False
    started = service_started(run)
    if started is None:
        return False
    newest = 0.0
    for path in (r.config.path, os.path.dirname(r.config.path), os.path.dirname(r.drop_in.path)):
        try:
            newest = max(newest, os.stat(path).st_mtime)
        except OSError:
            pass
    return newest > started + 1.0


def _restart_wanted(r: Removal, restart: bool, run: Runner) -> Tuple[bool, bool]:
    """(restart containerd, only because a killed removal left it pending)."""
    if not restart or not (r.changed or r.record) or unit_active(run) is not True:
        return False, False
    if r.changed:
        return True, False
    pending = _removal_pending(r, run)
    return pending, pending


def removal_plan(
    path: str = DEFAULT_PATH,
    drop_in: str = DEFAULT_DROP_IN,
    state_dir: str = DEFAULT_STATE_DIR,
    restart: bool = True,
    run: Runner = _run,
) -> Tuple[List[Dict[str, str]], List[Dict[str, str]]]:
    """(items, kept): what ``state: absent`` takes back and what it leaves, and why; reads only. Both empty on a
    host whose containerd gpu-install never configured."""
    r = plan_removal(path, drop_in, state_dir)
    return _removal_items(r, _restart_wanted(r, restart, run)[0]), r.kept


def removal_items(
    path: str = DEFAULT_PATH, drop_in: str = DEFAULT_DROP_IN, state_dir: str = DEFAULT_STATE_DIR, run: Runner = _run
) -> List[Dict[str, str]]:
    """The plan of ``state: absent`` in the shared item shape (kind, target, action, detail); reads only."""
    return removal_plan(path, drop_in, state_dir, run=run)[0]


def _removal_diffs(r: Removal) -> List[Dict[str, str]]:
    out = []
    if r.delete_config or r.config_after is not None:
        out.append({"before_header": r.config.path, "after_header": r.config.path,
                    "before": r.config.data.decode("utf-8", "replace"),
                    "after": (r.config_after or b"").decode("utf-8")})  # fmt: skip
    if r.drop_in.exists:
        out.append({"before_header": r.drop_in.path, "after_header": r.drop_in.path,
                    "before": r.drop_in.data.decode("utf-8", "replace"), "after": ""})  # fmt: skip
    return out


def remove(
    path: str = DEFAULT_PATH,
    drop_in: str = DEFAULT_DROP_IN,
    restart: bool = True,
    timeout: float = 60,
    backup: bool = True,
    check_mode: bool = False,
    ctr_path: Optional[str] = None,
    socket: str = DEFAULT_SOCKET,
    state_dir: str = DEFAULT_STATE_DIR,
    run: Runner = _run,
) -> Dict[str, Any]:
    """``state: absent``: take back the drop-in and what the record says configure changed in config.toml (dated
    backup first), restart containerd where its unit runs and wait until it answers; if it does not, put both files
    back, restart it again and fail with code 7. The record's entry goes last, so a removal killed on the way is
    finished (restart included) by the next one. Returns the module's result."""
    result = result_skeleton(os.path.realpath(path), os.path.realpath(drop_in))
    r = plan_removal(path, drop_in, state_dir)
    restart_now, pending = _restart_wanted(r, restart, run)
    result["kept"] = r.kept
    if not r.changed and not pending:
        if r.record and not check_mode:
            save_record(state_dir, r.config.path, {})  # what it records is gone: nothing left to take back
        result["msg"] = "containerd has nothing of gpu-install's to take back"
        return result
    result.update(changed=True, diff=_removal_diffs(r), items=_removal_items(r, restart_now))
    if pending:
        result["diff"] = [{"prepared": "containerd runs with the configuration an interrupted removal took back: "
                                      "it is restarted"}]  # fmt: skip
    if check_mode:
        result["msg"] = "containerd's configuration would be taken back"
        return result
    # The rollback of configure's restart serves here too: a Plan whose "before" is the host as it is now.
    p = Plan(r.config, b"" if r.delete_config else r.config_after, r.drop_in, None, 0, "", RELEASES[0], [])
    try:
        if backup and (r.delete_config or r.config_after is not None):
            result["backup_file"] = _backup(r.config)
        if backup and r.drop_in_edited:
            result["drop_in_backup_file"] = _backup(r.drop_in)
        if r.delete_config:
            _unlink_strict(r.config.path)
        elif r.config_after is not None:
            _put(r.config, r.config_after)
        if r.drop_in.exists:
            _unlink_strict(r.drop_in.path)
        if r.remove_dir:
            os.rmdir(r.remove_dir)
    except OSError as exc:
        _undo(p, "", result, config_too=True)
        raise host_error(r.config.path, exc, "take back") from None
    result["msg"] = "containerd's configuration was taken back"
    result["items"] = _removal_items(r, restart_now, result)
    if restart_now:
        _restart(p, result, ctr_path, socket, timeout, run, rollback=not pending)
    save_record(state_dir, r.config.path, {})
    return result


def _unlink_strict(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
