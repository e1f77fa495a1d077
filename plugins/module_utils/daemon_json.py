# Copyright: gpu-install contributors
# Apache License 2.0
"""Docker's daemon.json, merged and never overwritten: one implementation, stdlib only.

Imported by the ``gpu_install.nvidia.docker_daemon_json`` module on managed
hosts (Python >= 3.8) and by the CLI.  Layers, each usable on its own:

* ``parse(data, path) -> dict``: strict JSON (what Go's encoding/json accepts),
  with line/column for every refusal.  Strings and numbers keep their source
  text (``JsonString``/``JsonNumber``) so a rewrite re-emits ``1e3``, ``1.50``
  and ``"\\u00e9"`` exactly as written.  Duplicate keys, comments, trailing
  commas, BOMs, non-UTF-8 bytes, NaN and non-object tops are refused.
* ``merge(doc, options, record) -> Merge``: what we own (``runtimes.<name>``,
  ``default-runtime``, on request ``features.cdi`` and
  ``node-generic-resources``) set or taken out; everything else kept in place.
* ``dumps(doc, like=original_text) -> str``: the original's indentation
  (2/4 spaces or tab; 4 for a new file), its line ending, a trailing newline.
* ``plan(...)``/``configure(...)``: read, merge, decide reload vs restart,
  validate with ``dockerd --validate``, back up and write atomically.  Every
  failure is a ``DaemonJsonError`` carrying the exit code and one sentence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, fileio
from ansible_collections.gpu_install.nvidia.plugins.module_utils.fileio import decode_utf8, line_col, write_atomic

DEFAULT_PATH = "/etc/docker/daemon.json"
DEFAULT_STATE_DIR = "/var/lib/gpu-install"
STATE_FILE = "docker-daemon-json.json"
# The record's mark that gpu-install created daemon.json (the host had none).
CREATED = "file_created"
BACKUP_SUFFIX = ".gpu-install.bak"
FIX_IT = "fix or move it, then run again"
GPU_RESOURCE = "NVIDIA-GPU"
MAX_DEPTH = 200

# Top-level keys dockerd re-reads on SIGHUP (Docker's "configuration reload
# behavior"); a change to any other key needs a restart.  `features` is
# deliberately absent: the CDI cache is set up when the daemon starts.
RELOADABLE = frozenset(
    [
        "debug",
        "labels",
        "live-restore",
        "max-concurrent-downloads",
        "max-concurrent-uploads",
        "max-download-attempts",
        "default-runtime",
        "runtimes",
        "authorization-plugins",
        "insecure-registries",
        "registry-mirrors",
        "shutdown-timeout",
    ]
)
# Docker's own runtime, its default when daemon.json names none (moby, daemon/config: StockRuntimeName).
STOCK_RUNTIME = "runc"
# Runtime names dockerd reserves for itself.
RESERVED_RUNTIMES = frozenset(
    ["runc", "io.containerd.runc.v1", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux"]
)

Doc = Dict[str, Any]


class DaemonJsonError(errors.Failure):
    """A daemon.json refusal or write failure."""


# ---------------------------------------------------------------------------
# Values that remember their source text
# ---------------------------------------------------------------------------
class JsonString(str):
    """A str that re-emits the exact text it was parsed from (escapes kept)."""

    raw: Optional[str] = None

    def __new__(cls, value: str, raw: Optional[str] = None) -> JsonString:
        obj = super().__new__(cls, value)
        obj.raw = raw
        return obj


class JsonNumber:
    """A JSON number kept as written: ``1e3`` stays ``1e3``, ``1.50`` stays ``1.50``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"

    def value(self) -> Any:
        return json.loads(self.text)


def to_plain(value: Any) -> Any:
    """The value with plain Python types (for return values and the state record)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, JsonNumber):
        return value.value()
    if isinstance(value, str):
        return str(value)
    return value


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares key order and number text."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Parsing with positions
# ---------------------------------------------------------------------------
class ParseError(Exception):
    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what)
        self.what = what
        self.offset = offset


_WS = " \t\n\r"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PLAIN = re.compile(r'[^"\\\x00-\x1f]*')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NAMES = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.positions: Dict[Tuple[str, ...], int] = {}

    def ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        self.pos = pos

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def unexpected(self, expected: str) -> ParseError:
        ch = self.peek()
        if ch == "":
            return ParseError(f"the file ends early (truncated?) where {expected} was expected", self.pos)
        if ch == "/":
            return ParseError("a comment (JSON has none)", self.pos)
        if ch == "'":
            return ParseError("a single-quoted string (JSON needs double quotes)", self.pos)
        if ch == "\ufeff":
            return ParseError("a byte-order mark", self.pos)
        if ch == "\x00":
            return ParseError("a NUL byte (UTF-16 text?)", self.pos)
        word = re.match(r"[A-Za-z_][A-Za-z0-9_]*", self.text[self.pos :])
        if word and word.group(0) in ("NaN", "Infinity", "undefined", "None", "True", "False"):
            return ParseError(f"{word.group(0)} (not a JSON value)", self.pos)
        if ch in "}]" and expected.startswith(("a value", "a key")):
            return ParseError(f"a trailing comma before {ch!r}", self.pos)
        shown = ch if ch.isprintable() else f"U+{ord(ch):04X}"
        return ParseError(f"unexpected {shown!r} where {expected} was expected", self.pos)

    def document(self) -> Doc:
        self.ws()
        if self.pos == len(self.text):
            return {}
        start = self.pos
        ch = self.peek()
        if ch != "{":
            if ch in '[-"0123456789tfn':
                value = self.value((), 0)
                kind = {list: "an array", JsonString: "a string", JsonNumber: "a number"}.get(type(value), "a literal")
                raise ParseError(f"the top level is {kind}, not an object", start)
            raise self.unexpected("'{'")
        doc = self.value((), 0)
        self.ws()
        if self.pos != len(self.text):
            raise ParseError("extra data after the object", self.pos)
        return doc

    def value(self, where: Tuple[str, ...], depth: int) -> Any:
        self.ws()
        self.positions[where] = self.pos
        ch = self.peek()
        if ch == "{":
            return self.obj(where, depth + 1)
        if ch == "[":
            return self.arr(where, depth + 1)
        if ch == '"':
            return self.string()
        if ch == "-" or "0" <= ch <= "9":
            m = _NUMBER.match(self.text, self.pos)
            if not m:
                if self.text.startswith("-Infinity", self.pos):
                    raise ParseError("-Infinity (not a JSON value)", self.pos)
                raise ParseError("a malformed number", self.pos)
            self.pos = m.end()
            if self.peek() in (".", "e", "E") or self.peek().isdigit():
                raise ParseError("a malformed number", m.start())
            return JsonNumber(m.group(0))
        for name, val in _NAMES.items():
            if self.text.startswith(name, self.pos):
                self.pos += len(name)
                return val
        raise self.unexpected("a value")

    def obj(self, where: Tuple[str, ...], depth: int) -> Doc:
        if depth > MAX_DEPTH:
            raise ParseError(f"nesting deeper than {MAX_DEPTH} levels", self.pos)
        self.pos += 1
        out: Doc = {}
        self.ws()
        if self.peek() == "}":
            self.pos += 1
            return out
        while True:
            self.ws()
            if self.peek() != '"':
                raise self.unexpected("a key in double quotes")
            key_at = self.pos
            key = self.string()
            if key in out:
                raise ParseError(f"the key {key.raw} appears twice (Docker would silently use one)", key_at)
            self.ws()
            if self.peek() != ":":
                raise self.unexpected("':'")
            self.pos += 1
            out[key] = self.value(where + (str(key),), depth)
            self.ws()
            ch = self.peek()
            if ch == ",":
                self.pos += 1
                self.ws()
                if self.peek() == "}":
                    raise ParseError("a trailing comma", self._last_comma())
                continue
            if ch == "}":
                self.pos += 1
                return out
            raise self.unexpected("',' or '}'")

    def _last_comma(self) -> int:
        return self.text.rfind(",", 0, self.pos)

    def arr(self, where: Tuple[str, ...], depth: int) -> List[Any]:
        if depth > MAX_DEPTH:
            raise ParseError(f"nesting deeper than {MAX_DEPTH} levels", self.pos)
        self.pos += 1
        out: List[Any] = []
        self.ws()
        if self.peek() == "]":
            self.pos += 1
            return out
        while True:
            out.append(self.value(where + (str(len(out)),), depth))
            self.ws()
            ch = self.peek()
            if ch == ",":
                self.pos += 1
                self.ws()
                if self.peek() == "]":
                    raise ParseError("a trailing comma", self._last_comma())
                continue
            if ch == "]":
                self.pos += 1
                return out
            raise self.unexpected("',' or ']'")

    def string(self) -> JsonString:
        text = self.text
        start = self.pos
        pos = start + 1
        parts: List[str] = []
        while True:
            m = _PLAIN.match(text, pos)
            assert m is not None
            parts.append(m.group(0))
            pos = m.end()
            if pos >= len(text):
                raise ParseError("the file ends early (truncated?) inside a string", start)
            ch = text[pos]
            if ch == '"':
                pos += 1
                break
            if ch == "\\":
                esc = text[pos + 1 : pos + 2]
                if esc in _ESCAPES:
                    parts.append(_ESCAPES[esc])
                    pos += 2
                elif esc == "u" and re.match(r"[0-9a-fA-F]{4}", text[pos + 2 : pos + 6]):
                    parts.append(chr(int(text[pos + 2 : pos + 6], 16)))
                    pos += 6
                else:
                    raise ParseError("an invalid escape in a string", pos)
            else:
                what = "a NUL byte (UTF-16 text?)" if ch == "\x00" else "a raw control character in a string"
                raise ParseError(what, pos)
        self.pos = pos
        value = "".join(parts)
        raw = text[start:pos]
        return JsonString(value, raw)


def refusal(path: str, what: str, line: int, col: int) -> DaemonJsonError:
    return DaemonJsonError(
        errors.INVALID_INPUT,
        f"{path} cannot be merged: {what} at line {line}, column {col}; {FIX_IT}.",
    )


def decode(data: bytes, path: str) -> str:
    """The file's text; anything but UTF-8 without a BOM is refused."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise refusal(path, "a UTF-8 byte-order mark", 1, 1)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise refusal(path, "UTF-16 text (a byte-order mark)", 1, 1)
    return decode_utf8(data, lambda what, line, col: refusal(path, what, line, col))


def parse_text(text: str, path: str) -> Tuple[Doc, Dict[Tuple[str, ...], int]]:
    parser = _Parser(text)
    try:
        doc = parser.document()
    except ParseError as exc:
        line, col = line_col(text, exc.offset)
        raise refusal(path, exc.what, line, col) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps well below the limit
        raise refusal(path, "nesting too deep", 1, 1) from None
    _check_shape(doc, parser.positions, text, path)
    return doc, parser.positions


def parse(data: bytes, path: str = "daemon.json") -> Doc:
    """The document in ``data`` (bytes of a daemon.json); an empty file is {}."""
    return parse_text(decode(data, path), path)[0]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, JsonNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "null"


# (path in the document, the kinds it must have, how to name them)
_SHAPE: List[Tuple[Tuple[str, ...], Tuple[type, ...], str]] = [
    (("runtimes",), (dict,), "an object"),
    (("features",), (dict,), "an object"),
    (("default-runtime",), (str,), "a string"),
    (("node-generic-resources",), (list,), "a list"),
]


def _check_shape(doc: Doc, positions: Dict[Tuple[str, ...], int], text: str, path: str) -> None:
    checks = list(_SHAPE)
    runtimes = doc.get("runtimes")
    if isinstance(runtimes, dict):
        for name in runtimes:
            checks.append((("runtimes", name), (dict,), "an object"))
            entry = runtimes[name]
            if isinstance(entry, dict):
                checks.append((("runtimes", name, "path"), (str,), "a string"))
                checks.append((("runtimes", name, "runtimeArgs"), (list,), "a list"))
                checks.append((("runtimes", name, "args"), (list,), "a list"))
    for where, kinds, named in checks:
        node: Any = doc
        for part in where:
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING or (isinstance(node, kinds) and not isinstance(node, bool)):
            continue
        line, col = line_col(text, positions.get(where, 0))
        dotted = ".".join(where)
        raise refusal(path, f'"{dotted}" is {_kind(node)}, not {named}', line, col)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------
def indent_of(text: str) -> str:
    """The original's indentation unit: a tab or N spaces; 4 spaces when none shows."""
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if not stripped or len(stripped) == len(line):
            continue
        lead = line[: len(line) - len(stripped)]
        if lead.startswith("\t"):
            return "\t"
        if 1 <= len(lead) <= 8 and set(lead) == {" "}:
            return lead
        break
    return "    "


def _emit_string(value: str) -> str:
    raw = getattr(value, "raw", None)
    return raw if raw is not None else json.dumps(str(value), ensure_ascii=False)


def _emit(value: Any, unit: str, level: int, out: List[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = unit * (level + 1)
        out.append("{\n")
        for i, (key, val) in enumerate(value.items()):
            out.append(inner + _emit_string(key) + ": ")
            _emit(val, unit, level + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(unit * level + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = unit * (level + 1)
        out.append("[\n")
        for i, val in enumerate(value):
            out.append(inner)
            _emit(val, unit, level + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(unit * level + "]")
    elif isinstance(value, JsonNumber):
        out.append(value.text)
    elif isinstance(value, str):
        out.append(_emit_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    else:  # an int or float from a caller: plain JSON
        out.append(json.dumps(value))


def dumps(doc: Doc, like: str = "") -> str:
    """``doc`` as text in the style of ``like`` (the original), ending in a newline."""
    out: List[str] = []
    _emit(doc, indent_of(like), 0, out)
    text = "".join(out) + "\n"
    if "\r\n" in like:
        text = text.replace("\n", "\r\n")
    return text


# ---------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------
class Options:
    """What the caller asks for (the module's options, less path and plumbing)."""

    def __init__(
        self,
        runtime_name: str = "nvidia",
        runtime_path: str = "nvidia-container-runtime",
        default_runtime: bool = True,
        cdi: bool = False,
        state: str = "present",
        generic_resources: Optional[List[str]] = None,
        runtime: bool = True,
    ) -> None:
        self.runtime = runtime
        self.runtime_name = runtime_name
        self.runtime_path = runtime_path
        self.default_runtime = default_runtime
        self.cdi = cdi
        self.state = state
        self.generic_resources = generic_resources

    def check(self) -> None:
        """Refuse options dockerd would refuse (exit code 4)."""
        if self.state not in ("present", "absent"):
            raise DaemonJsonError(errors.INVALID_INPUT, f"state must be present or absent, not {self.state!r}.")
        if not self.runtime_name or self.runtime_name.strip() != self.runtime_name:
            raise DaemonJsonError(errors.INVALID_INPUT, "runtime_name must be a non-empty name without spaces.")
        if self.runtime_name in RESERVED_RUNTIMES:
            raise DaemonJsonError(
                errors.INVALID_INPUT,
                f"runtime_name {self.runtime_name!r} is reserved by dockerd: choose another name, such as nvidia.",
            )
        if not self.runtime_path:
            raise DaemonJsonError(errors.INVALID_INPUT, "runtime_path must not be empty.")
        for uuid in self.generic_resources or []:
            if not uuid or re.search(r"[\s=,]", uuid):
                raise DaemonJsonError(
                    errors.INVALID_INPUT,
                    f"generic_resources entry {uuid!r} is not a GPU UUID (such as GPU-0f3c...).",
                )


class Merge:
    """The result of ``merge``."""

    def __init__(self, doc: Doc, record: Dict[str, Any], warnings: List[str]) -> None:
        self.doc = doc
        self.record = record
        self.warnings = warnings


def _remember(record: Dict[str, Any], key: str, obj: Doc, name: str, ours: Any) -> None:
    """Record what ``obj[name]`` held before we set it to ``ours`` (unless it already was ours)."""
    before = obj.get(name, _MISSING)
    if before is not _MISSING and same(before, ours):
        return
    if before is _MISSING:
        record[key] = {"had": False, "set": to_plain(ours)}
    else:
        record[key] = {"had": True, "previous": to_plain(before), "set": to_plain(ours)}


def _restore(record: Dict[str, Any], key: str, obj: Doc, name: str) -> None:
    """Give ``obj[name]`` back its recorded value, if it still holds what we set."""
    entry = record.get(key)
    if not isinstance(entry, dict) or name not in obj:
        return
    if to_plain(obj[name]) != entry.get("set"):
        return
    if entry.get("had"):
        obj[name] = entry.get("previous")
    else:
        del obj[name]


def merge(doc: Doc, options: Options, record: Optional[Dict[str, Any]] = None) -> Merge:
    """Set (present) or take out (absent) what we own; every other key keeps value and place.

    ``record`` is what an earlier run recorded for this file (the default
    runtime, features.cdi and node-generic-resources as they were before we
    set them); the returned ``Merge.record`` is the one to keep now.
    """
    options.check()
    doc = _copy(doc)
    record = dict(record or {})
    warnings: List[str] = []
    if options.state == "present":
        _present(doc, options, record, warnings)
    else:
        _absent(doc, options, record)
    return Merge(doc, record, warnings)


def _present(doc: Doc, options: Options, record: Dict[str, Any], warnings: List[str]) -> None:
    if options.runtime:
        _register_runtime(doc, options, record, warnings)
    else:  # CDI mode: no runtime of ours (taken out if an earlier run registered it)
        _remove_runtime(doc, options, record)
    _present_features(doc, options, record)


def _register_runtime(doc: Doc, options: Options, record: Dict[str, Any], warnings: List[str]) -> None:
    name = options.runtime_name
    if "runtimes" not in doc:
        record["runtimes"] = {"had": False}
        doc["runtimes"] = {}
    runtimes: Doc = doc["runtimes"]
    entry: Doc = runtimes.get(name) if isinstance(runtimes.get(name), dict) else {}  # type: ignore[assignment]
    if "args" in entry:
        moved: List[Any] = list(entry["args"])
        if not moved:  # nvidia-ctk writes "args": [] - nothing to move
            del entry["args"]
            warnings.append(f'runtimes.{name} had an empty "args" key, which Docker ignores: removed it.')
        else:
            if "runtimeArgs" in entry:
                existing = list(entry["runtimeArgs"])
                entry["runtimeArgs"] = existing + [a for a in moved if a not in existing]
                del entry["args"]
            else:  # rename in place, keeping the key's position
                entry = {("runtimeArgs" if k == "args" else k): v for k, v in entry.items()}
                entry["runtimeArgs"] = moved
            warnings.append(
                f'runtimes.{name} had "args", which Docker silently ignores: '
                f'moved {json.dumps(to_plain(moved))} to "runtimeArgs".'
            )
    if not (isinstance(entry.get("path"), str) and entry["path"] == options.runtime_path):
        entry["path"] = JsonString(options.runtime_path)
    runtimes[name] = entry
    if options.default_runtime:
        _remember(record, "default-runtime", doc, "default-runtime", name)
        if doc.get("default-runtime") != name:
            doc["default-runtime"] = JsonString(name)
    else:
        _drop_default(doc, options, record)


def _present_features(doc: Doc, options: Options, record: Dict[str, Any]) -> None:
    if options.cdi:
        if "features" not in doc:
            record["features"] = {"had": False}
            doc["features"] = {}
        features: Doc = doc["features"]
        _remember(record, "features.cdi", features, "cdi", True)
        if features.get("cdi") is not True:
            features["cdi"] = True
    if options.generic_resources is not None:
        ours = [f"{GPU_RESOURCE}={uuid}" for uuid in options.generic_resources]
        current = doc.get("node-generic-resources", [])
        kept = [r for r in current if not (isinstance(r, str) and r.startswith(GPU_RESOURCE + "=")) or r in ours]
        wanted = kept + [r for r in ours if r not in kept]
        if wanted or "node-generic-resources" in doc:
            _remember(record, "node-generic-resources", doc, "node-generic-resources", wanted)
            if not same(current, wanted) or "node-generic-resources" not in doc:
                if wanted:
                    doc["node-generic-resources"] = [r if isinstance(r, JsonString) else JsonString(r) for r in wanted]
                else:
                    del doc["node-generic-resources"]


def _drop_default(doc: Doc, options: Options, record: Dict[str, Any]) -> None:
    """Our runtime stops being the default: the recorded previous one comes back, else runc.

    While the file stays ours (state present), runc is named explicitly: dockerd's reload sets the default
    runtime only when the file names one (moby, daemon/reload_unix.go, reloadPlatform), so a removed key would
    leave the running daemon on our runtime until it restarts. Taking everything back (state absent) restores
    the user's file as it was, and `needs` asks for the restart a removed key takes."""
    name = options.runtime_name
    if doc.get("default-runtime") != name:
        return
    entry = record.get("default-runtime")
    if isinstance(entry, dict) and entry.get("had") and entry.get("previous") not in (None, name):
        doc["default-runtime"] = JsonString(str(entry["previous"]))
    elif options.state == "present":
        doc["default-runtime"] = JsonString(STOCK_RUNTIME)
    else:
        del doc["default-runtime"]
    record.pop("default-runtime", None)


def _remove_runtime(doc: Doc, options: Options, record: Dict[str, Any]) -> None:
    name = options.runtime_name
    runtimes = doc.get("runtimes")
    if isinstance(runtimes, dict) and name in runtimes:
        del runtimes[name]
    if isinstance(runtimes, dict) and not runtimes and record.get("runtimes", {}).get("had") is False:
        del doc["runtimes"]
    record.pop("runtimes", None)
    _drop_default(doc, options, record)


def _absent(doc: Doc, options: Options, record: Dict[str, Any]) -> None:
    _remove_runtime(doc, options, record)
    features = doc.get("features")
    if isinstance(features, dict):
        _restore(record, "features.cdi", features, "cdi")
        if not features and record.get("features", {}).get("had") is False:
            del doc["features"]
    record.pop("features.cdi", None)
    record.pop("features", None)
    _restore(record, "node-generic-resources", doc, "node-generic-resources")
    record.pop("node-generic-resources", None)


# ---------------------------------------------------------------------------
# Deciding
# ---------------------------------------------------------------------------
def changed_keys(before: Doc, after: Doc) -> List[str]:
    """Top-level keys whose value (or presence) differs."""
    keys = list(before) + [k for k in after if k not in before]
    return [k for k in keys if k not in before or k not in after or not same(before[k], after[k])]


def needs(before: Doc, after: Doc) -> Tuple[bool, bool]:
    """(reload_needed, restart_needed): SIGHUP when only reloadable keys changed, else a restart.

    A reloadable key that goes away needs a restart too: dockerd's reload applies only what the file sets
    (moby, daemon/reload.go and reload_unix.go: IsValueSet, or a non-empty default-runtime), so the running
    daemon would keep the old value."""
    keys = changed_keys(before, after)
    if not keys:
        return False, False
    restart = any(k not in RELOADABLE or k not in after for k in keys)
    return (not restart), restart


# ---------------------------------------------------------------------------
# dockerd --validate
# ---------------------------------------------------------------------------
_VALIDATE_PROBE: Dict[str, bool] = {}
Runner = Callable[[List[str]], Tuple[int, str, str]]


def _run(argv: List[str]) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def can_validate(dockerd: str, run: Runner = _run) -> bool:
    """Whether this dockerd has ``--validate`` (Docker 23+); probed once per binary."""
    if dockerd not in _VALIDATE_PROBE:
        _rc, out, err = run([dockerd, "--help"])
        _VALIDATE_PROBE[dockerd] = "--validate" in out + err
    return _VALIDATE_PROBE[dockerd]


def validate(dockerd: str, text: str, path: str, run: Runner = _run) -> None:
    """Run ``dockerd --validate`` on ``text`` in a private temp dir; refuse with dockerd's own line."""
    tmpdir = tempfile.mkdtemp(prefix="gpu-install-validate-")
    try:
        candidate = os.path.join(tmpdir, "daemon.json")
        with open(candidate, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        rc, out, err = run([dockerd, "--validate", "--config-file", candidate])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if rc == 0:
        return
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "unable to configure" in ln), lines[-1] if lines else f"exit {rc}")
    line = line.replace(candidate, path)
    raise DaemonJsonError(
        errors.INVALID_INPUT,
        f"dockerd --validate refused the new {path} ({line}); the file is unchanged.",
    )


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def host_error(path: str, exc: OSError, doing: str) -> DaemonJsonError:
    what = exc.strerror or str(exc)
    return DaemonJsonError(
        errors.HOST_ERROR,
        f"Could not {doing} {path}: [Errno {exc.errno}] {what}; the original is unchanged.",
    )


def backup_name(target: str, now: Optional[float] = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    name = f"{target}.{stamp}{BACKUP_SUFFIX}"
    n = 0
    while os.path.lexists(name):
        n += 1
        name = f"{target}.{stamp}-{n}{BACKUP_SUFFIX}"
    return name


def load_record(state_dir: str, target: str) -> Dict[str, Any]:
    return fileio.load_file_record(state_dir, STATE_FILE, target)


def save_record(state_dir: str, target: str, record: Dict[str, Any]) -> None:
    fileio.save_file_record(state_dir, STATE_FILE, target, record)


# ---------------------------------------------------------------------------
# The whole task
# ---------------------------------------------------------------------------
class Plan:
    """What ``plan`` found: the texts before and after and what it means for dockerd."""

    def __init__(self) -> None:
        self.path = ""
        self.exists = False
        self.before_text = ""
        self.after_text = ""
        self.before: Doc = {}
        self.after: Doc = {}
        self.record: Dict[str, Any] = {}
        self.new_record: Dict[str, Any] = {}
        self.warnings: List[str] = []

    @property
    def changed(self) -> bool:
        return self.after_text != self.before_text or (not self.exists and self.after_text != "")


def read(target: str) -> Tuple[bool, bytes]:
    try:
        with open(target, "rb") as fh:
            return True, fh.read()
    except FileNotFoundError:
        return False, b""
    except OSError as exc:
        raise host_error(target, exc, "read") from None


def plan(path: str, options: Options, state_dir: str = DEFAULT_STATE_DIR) -> Plan:
    """Read and merge, changing nothing.  Raises DaemonJsonError."""
    options.check()
    result = Plan()
    target = os.path.realpath(path)
    result.path = target
    if os.path.isdir(target):
        raise DaemonJsonError(errors.INVALID_INPUT, f"{target} is a directory, not a file; {FIX_IT}.")
    result.exists, data = read(target)
    text = decode(data, path)
    doc, _ = parse_text(text, path)
    result.before_text, result.before = text, doc
    result.record = load_record(state_dir, target)
    merged = merge(doc, options, result.record)
    result.after, result.new_record, result.warnings = merged.doc, merged.record, merged.warnings
    if not result.exists and options.state == "present" and merged.doc:
        result.new_record[CREATED] = True  # removal deletes the file again when nothing else is left in it
    if not result.exists and (options.state == "absent" or not merged.doc):
        result.after_text = ""  # nothing to say: no file is created
    elif options.state == "absent" and not merged.doc and result.record.get(CREATED):
        result.after_text = ""  # gpu-install created the file and nothing of the user's is in it: it goes
    elif same(doc, merged.doc) and result.exists:
        result.after_text = text  # nothing differs: the very same bytes
    else:
        result.after_text = dumps(merged.doc, like=text)
    return result


def find_dockerd(dockerd_path: Optional[str]) -> Optional[str]:
    if dockerd_path:
        return dockerd_path
    return shutil.which("dockerd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin")


def configure(
    path: str,
    options: Options,
    *,
    backup: bool = True,
    validate_mode: str = "auto",
    dockerd_path: Optional[str] = None,
    state_dir: str = DEFAULT_STATE_DIR,
    check_mode: bool = False,
    run: Runner = _run,
) -> Dict[str, Any]:
    """Plan, validate and (unless ``check_mode``) write.  Returns the module's result keys.

    Raises DaemonJsonError; ``result_skeleton(path)`` gives the keys to return with it.
    """
    p = plan(path, options, state_dir)
    result = result_skeleton(p.path)
    result["previous_default_runtime"] = _default_of(p.before)
    result["default_runtime"] = _default_of(p.after)
    result["warnings"] = list(p.warnings)
    if not p.changed:
        if not check_mode and p.new_record != p.record and p.exists:
            _save(state_dir, p.path, p.new_record)
        return result
    result["changed"] = True
    result["reload_needed"], result["restart_needed"] = needs(p.before, p.after)
    result["diff"] = {
        "before": p.before_text,
        "after": p.after_text,
        "before_header": p.path,
        "after_header": p.path,
    }
    if validate_mode not in ("auto", "always", "never"):
        raise DaemonJsonError(errors.INVALID_INPUT, "validate must be auto, always or never.")
    if validate_mode != "never" and p.after_text:
        dockerd = find_dockerd(dockerd_path)
        usable = dockerd is not None and can_validate(dockerd, run)
        if dockerd is not None and usable:
            validate(dockerd, p.after_text, p.path, run)
        elif validate_mode == "always":
            raise DaemonJsonError(
                errors.UNSUPPORTED,
                "validate=always needs a dockerd with --validate (Docker 23 or later); {}.".format(
                    f"{dockerd} has none" if dockerd else "no dockerd was found"
                ),
            )
    if check_mode:
        return result
    _save(state_dir, p.path, p.new_record)
    if p.exists:
        st = os.stat(p.path)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    else:
        mode, uid, gid = 0o644, 0, 0
        if os.geteuid() != 0:
            uid, gid = os.geteuid(), os.getegid()
    backup_file = None
    directory = os.path.dirname(p.path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        if backup and p.exists:
            backup_file = backup_name(p.path)
            write_atomic(backup_file, p.before_text.encode("utf-8"), mode, uid, gid, like=p.path)
        if p.exists and not p.after_text:
            os.unlink(p.path)  # removal: the file gpu-install created holds nothing else
        else:
            write_atomic(p.path, p.after_text.encode("utf-8"), mode, uid, gid, like=p.path if p.exists else None)
    except OSError as exc:
        if backup_file is not None and os.path.exists(backup_file):
            try:
                os.unlink(backup_file)
            except OSError:
                pass
        raise host_error(p.path, exc, "write") from None
    result["backup_file"] = backup_file
    return result


def _save(state_dir: str, target: str, record: Dict[str, Any]) -> None:
    try:
        save_record(state_dir, target, record)
    except OSError as exc:
        raise DaemonJsonError(
            errors.HOST_ERROR,
            f"Could not record the previous default runtime in {os.path.join(state_dir, STATE_FILE)}: "
            f"[Errno {exc.errno}] {exc.strerror or exc}; {target} is unchanged.",
        ) from None


def _default_of(doc: Doc) -> Optional[str]:
    value = doc.get("default-runtime")
    return str(value) if isinstance(value, str) else None


def result_skeleton(path: str) -> Dict[str, Any]:
    """The keys every result carries, on every path (failures included)."""
    return {
        "changed": False,
        "path": path,
        "backup_file": None,
        "previous_default_runtime": None,
        "default_runtime": None,
        "restart_needed": False,
        "reload_needed": False,
        "diff": {},
        "warnings": [],
    }
