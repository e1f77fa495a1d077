# Copyright: gpu-install contributors
# Apache License 2.0
"""nvidia-persistenced's systemd unit: found, checked for --no-persistence-mode, written where none exists.

The one place that reads and writes nvidia-persistenced's unit files (stdlib only):

* the unit systemd loads is the first ``nvidia-persistenced.service`` in the unit directories
  (``UNIT_DIRS``, highest priority first); a symlink to /dev/null or an empty file masks it;
* its effective ``ExecStart=`` is the unit's own assignments followed by those of its drop-ins,
  sorted by file name across the drop-in directories (an empty assignment resets the list), read
  with systemd's syntax: comments, continuation lines, quoting;
* where that command passes ``--no-persistence-mode`` (Ubuntu's nvidia-compute-utils unit does),
  a drop-in (``DROPIN``) resets ``ExecStart=`` and runs the same command without the flag; where
  the unit has no [Install] section (Ubuntu's is static, started by udev) the same drop-in adds
  ``WantedBy=multi-user.target`` so that the unit can be enabled;
* where no unit is installed but the binary is (a runfile install, a driver in /usr/local/nvidia),
  ``WRITTEN_UNIT`` is written for it; a unit shipped later by a package replaces it.

``plan()`` only reads (the module's check mode); ``apply()`` writes through
``fileio.write_atomic``. Paths are host paths; ``root`` reads and writes the tree below a
directory instead (an image being built, a test tree).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, fileio

UNIT_NAME = "nvidia-persistenced.service"
# systemd's unit search path for system units, highest priority first (systemd.unit(5)); /lib/systemd/system is
# where Debian and Ubuntu releases before the /usr merge install units.
UNIT_DIRS: Tuple[str, ...] = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
# Drop-in directory names that apply to this unit: its own, its dash prefix's (systemd 239+), every service's.
DROPIN_DIR_NAMES: Tuple[str, ...] = (UNIT_NAME + ".d", "nvidia-.service.d", "service.d")
WRITTEN_UNIT = "/etc/systemd/system/" + UNIT_NAME
DROPIN = "/etc/systemd/system/" + UNIT_NAME + ".d/gpu-install.conf"
# Where drivers put the binary: packages (/usr/bin), the runfile (/usr/bin), a driver tree in /usr/local/nvidia.
BINARY_PATHS: Tuple[str, ...] = (
    "/usr/bin/nvidia-persistenced",
    "/usr/sbin/nvidia-persistenced",
    "/usr/local/bin/nvidia-persistenced",
    "/usr/local/nvidia/bin/nvidia-persistenced",
)
FLAG = "--no-persistence-mode"
MARKER = "# Written by gpu-install"
INSTALL_KEYS: Tuple[str, ...] = ("WantedBy", "RequiredBy", "UpheldBy", "Alias", "Also")
COMMENTS = "#;"
WHITESPACE = " \t\n\r"
MAX_UNIT_BYTES = 1 << 20


class Entry(NamedTuple):
    """One assignment of a unit file: its section, key, value and the line it starts on (1-based)."""

    section: str
    key: str
    value: str
    line: int


class Token(NamedTuple):
    """One word of a command line: where it starts and ends in the text, and its unquoted value."""

    start: int
    end: int
    value: str


class Command(NamedTuple):
    """One effective ExecStart= command and where it was set."""

    value: str
    path: str
    line: int


# ---------------------------------------------------------------------------
# systemd's syntax
# ---------------------------------------------------------------------------
def parse_unit(text: str) -> List[Entry]:
    """The assignments of a unit file, read as systemd's config parser reads them.

    Lines whose first non-blank character is ``#`` or ``;`` are comments (inside a continuation
    too); a line ending in an unescaped backslash continues on the next one, the backslash
    becoming a space; keys and values are stripped of surrounding whitespace.
    """
    entries: List[Entry] = []
    section = ""
    pending: Optional[str] = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.lstrip(WHITESPACE)
        if stripped and stripped[0] in COMMENTS:
            continue
        line = raw if pending is None else pending + raw
        if pending is None:
            start = number
        if _ends_in_escape(line):
            pending = line[:-1] + " "
            continue
        pending = None
        section = _parse_line(line, section, start, entries)
    if pending is not None:
        _parse_line(pending, section, start, entries)
    return entries


def _ends_in_escape(line: str) -> bool:
    escaped = False
    for char in line:
        escaped = not escaped if char == "\\" else False
    return escaped


def _parse_line(line: str, section: str, number: int, entries: List[Entry]) -> str:
    body = line.strip(WHITESPACE)
    if not body:
        return section
    if body.startswith("[") and body.endswith("]"):
        return body[1:-1]
    key, sep, value = body.partition("=")
    if sep:
        entries.append(Entry(section, key.strip(WHITESPACE), value.strip(WHITESPACE), number))
    return section


def split_command(command: str) -> List[Token]:
    """The words of an ExecStart= command line: whitespace-separated, "double" and 'single' quotes
    and backslash escapes honoured, each with its span in ``command`` and its unquoted value."""
    tokens: List[Token] = []
    i, size = 0, len(command)
    while i < size:
        if command[i] in WHITESPACE:
            i += 1
            continue
        start, quote = i, ""
        value: List[str] = []
        while i < size and (quote or command[i] not in WHITESPACE):
            char = command[i]
            if char == "\\" and i + 1 < size:
                value.append(command[i + 1])
                i += 2
                continue
            if quote and char == quote:
                quote = ""
            elif not quote and char in "\"'":
                quote = char
            else:
                value.append(char)
            i += 1
        tokens.append(Token(start, i, "".join(value)))
    return tokens


def has_flag(command: str) -> bool:
    """Whether the command passes --no-persistence-mode as a word of its own (not its program)."""
    return any(token.value == FLAG for token in split_command(command)[1:])


def strip_flag(command: str) -> str:
    """The same command line without its --no-persistence-mode words; every other byte is kept."""
    tokens = split_command(command)
    out: List[str] = []
    kept_until = 0
    previous_end = tokens[0].end if tokens else 0
    for token in tokens[1:]:
        if token.value == FLAG:
            out.append(command[kept_until:previous_end])
            kept_until = token.end
        else:
            previous_end = token.end
    out.append(command[kept_until:])
    return "".join(out).strip(WHITESPACE)


def effective(sources: Sequence[Tuple[str, str]]) -> Tuple[List[Command], bool]:
    """(ExecStart= commands, whether [Install] says how to enable) of a unit and its drop-ins, in order.

    ``sources`` are (host path, text): the unit first, then its drop-ins in the order systemd
    applies them. An empty assignment resets a list.
    """
    commands: List[Command] = []
    install: Dict[str, List[str]] = {}
    for path, text in sources:
        for entry in parse_unit(text):
            if entry.section == "Service" and entry.key == "ExecStart":
                if entry.value:
                    commands.append(Command(entry.value, path, entry.line))
                else:
                    commands = []
            elif entry.section == "Install" and entry.key in INSTALL_KEYS:
                if entry.value:
                    install.setdefault(entry.key, []).append(entry.value)
                else:
                    install.pop(entry.key, None)
    return commands, any(install.values())


# ---------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------
def _at(root: str, path: str) -> str:
    return path if root in ("", "/") else os.path.join(root, path.lstrip("/"))


def _read(full: str) -> str:
    try:
        with open(full, "rb") as handle:
            return handle.read(MAX_UNIT_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        raise errors.Failure(errors.HOST_ERROR, f"Could not read {full}: {exc.strerror or exc}.") from exc


def _read_bytes(full: str) -> Optional[bytes]:
    try:
        with open(full, "rb") as handle:
            return handle.read(MAX_UNIT_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.Failure(errors.HOST_ERROR, f"Could not read {full}: {exc.strerror or exc}.") from exc


def _masks(full: str) -> bool:
    """A symlink to /dev/null or an empty file masks a unit or a drop-in, as systemd reads them."""
    if os.path.islink(full) and os.readlink(full) == "/dev/null":
        return True
    try:
        return os.path.realpath(full) == "/dev/null" or os.path.getsize(full) == 0
    except OSError:
        return False


def _ours(full: str) -> bool:
    data = _read_bytes(full)
    return data is not None and data.startswith(MARKER.encode())


def find_binary(root: str = "/", paths: Sequence[str] = BINARY_PATHS) -> Optional[str]:
    """The first of ``paths`` that is an executable file, or None."""
    for path in paths:
        full = _at(root, path)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return path
    return None


def find_unit(root: str = "/") -> Tuple[Optional[str], bool, bool]:
    """(host path of the unit systemd loads, masked, the file at WRITTEN_UNIT is gpu-install's own).

    gpu-install's own unit is skipped, so that the path is that of a unit something else installed
    (a package, the administrator), or None.
    """
    ours = False
    for directory in UNIT_DIRS:
        path = f"{directory}/{UNIT_NAME}"
        full = _at(root, path)
        if not os.path.lexists(full):
            continue
        if _masks(full):
            return path, True, ours
        if path == WRITTEN_UNIT and _ours(full):
            ours = True
            continue
        if os.path.isfile(full):
            return path, False, ours
    return None, False, ours


def find_dropins(root: str = "/") -> List[str]:
    """Host paths of the unit's drop-ins in the order systemd applies them (by file name; for one name the
    highest-priority directory's file wins, and a masked one hides the name)."""
    chosen: Dict[str, Optional[str]] = {}
    for directory in UNIT_DIRS:
        for name in DROPIN_DIR_NAMES:
            folder = f"{directory}/{name}"
            try:
                entries = sorted(os.listdir(_at(root, folder)))
            except OSError:
                continue
            for entry in entries:
                if not entry.endswith(".conf") or entry in chosen:
                    continue
                path = f"{folder}/{entry}"
                chosen[entry] = None if _masks(_at(root, path)) else path
    return [path for _name, path in sorted(chosen.items()) if path is not None]


# ---------------------------------------------------------------------------
# What gpu-install writes
# ---------------------------------------------------------------------------
def unit_text(binary: str) -> str:
    """The unit written where the installed driver ships none (NVIDIA's sample unit, run as root)."""
    return (
        f"{MARKER} (role gpu_install.nvidia.nvidia_persistenced): the installed NVIDIA driver\n"
        "# ships no unit for nvidia-persistenced (a runfile install, or a driver in /usr/local/nvidia).\n"
        "# Rewritten on every run; removed when a package installs its own unit.\n"
        "[Unit]\n"
        "Description=NVIDIA Persistence Daemon\n"
        "\n"
        "[Service]\n"
        "Type=forking\n"
        "PIDFile=/run/nvidia-persistenced/nvidia-persistenced.pid\n"
        f"ExecStart={binary} --verbose\n"
        "ExecStopPost=/bin/rm -rf /run/nvidia-persistenced\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def dropin_text(unit: str, commands: Optional[Sequence[str]], add_install: bool) -> str:
    """The drop-in: ExecStart= reset and ``commands`` (already without the flag), and/or an [Install] section."""
    lines = [f"{MARKER} (role gpu_install.nvidia.nvidia_persistenced); rewritten on every run."]
    if commands is not None:
        lines += [
            f"# {unit} starts nvidia-persistenced with",
            f"# {FLAG}, which lets the driver tear the GPUs down whenever no client holds",
            "# them: the same command without that flag.",
            "[Service]",
            "ExecStart=",
        ]
        lines += [f"ExecStart={command}" for command in commands]
    if add_install:
        if commands is not None:
            lines.append("")
        lines += [
            f"# {unit} has no [Install] section (a static unit):",
            "# this one lets systemctl enable start it at boot.",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Plan and apply
# ---------------------------------------------------------------------------
def plan(root: str = "/", binary: Optional[str] = None, search_paths: Sequence[str] = BINARY_PATHS) -> Dict[str, Any]:
    """What the unit files must be; reads only.

    Returns ``binary``, ``unit`` (the unit systemd loads once the files are as planned), ``unit_source``
    (``package``, ``gpu-install`` or None), ``unit_existed``, ``masked``, ``no_persistence_mode`` (the unit,
    without gpu-install's drop-in, passes the flag), ``install_section_added``, ``dropin`` (its path when
    wanted, else None), ``exec_start`` (the effective commands once planned), ``files`` ({host path: new text,
    or None to remove}, only those that differ), ``before`` ({host path: current text or None}) and
    ``refusal`` (None, or {code, reason}: nothing may be written).
    """
    found_binary = binary if binary else find_binary(root, search_paths)
    unit, masked, ours = find_unit(root)
    result: Dict[str, Any] = {
        "binary": found_binary,
        "unit": None,
        "unit_source": None,
        "unit_existed": False,
        "masked": masked,
        "no_persistence_mode": False,
        "install_section_added": False,
        "dropin": None,
        "exec_start": [],
        "files": {},
        "before": {},
        "refusal": None,
    }
    if masked:
        result["unit"] = unit
        result["refusal"] = errors.error_record(
            errors.UNSUPPORTED,
            f"nvidia-persistenced.service is masked ({unit} is empty or links to /dev/null): unmask it "
            "(systemctl unmask nvidia-persistenced), or set nvidia_persistenced_enabled: false to leave it alone.",
        )
        return result

    wanted: Dict[str, Optional[str]] = {}
    if unit is not None:
        base_path, base_text = unit, _read(_at(root, unit))
        result.update(unit=unit, unit_source="package", unit_existed=True)
        if ours:
            wanted[WRITTEN_UNIT] = None  # a unit something else installed replaces ours
    elif found_binary is not None:
        base_path, base_text = WRITTEN_UNIT, unit_text(found_binary)
        wanted[WRITTEN_UNIT] = base_text
        result.update(unit=WRITTEN_UNIT, unit_source="gpu-install", unit_existed=ours)
    else:
        return result  # no unit and no binary: nothing to write

    others = [p for p in find_dropins(root) if p != DROPIN]
    texts = {p: _read(_at(root, p)) for p in others}
    commands, install = effective([(base_path, base_text)] + [(p, texts[p]) for p in others])
    flagged = any(has_flag(c.value) for c in commands)
    result["no_persistence_mode"] = flagged
    result["install_section_added"] = not install
    if flagged or not install:
        text = dropin_text(base_path, [strip_flag(c.value) for c in commands] if flagged else None, not install)
        wanted[DROPIN] = text
        result["dropin"] = DROPIN
    else:
        wanted[DROPIN] = None

    order = sorted(others + ([DROPIN] if wanted[DROPIN] is not None else []), key=os.path.basename)
    final_texts = dict(texts, **{DROPIN: wanted[DROPIN] or ""})
    final, _install = effective([(base_path, base_text)] + [(p, final_texts[p]) for p in order])
    result["exec_start"] = [c.value for c in final]
    late = [c for c in final if has_flag(c.value)]
    if late:
        result["refusal"] = errors.error_record(
            errors.UNSUPPORTED,
            f"{late[0].path} line {late[0].line} starts nvidia-persistenced with {FLAG} and is applied after "
            f"gpu-install's drop-in {DROPIN}, so persistence would stay off: remove that ExecStart= (or the flag), "
            "then run again.",
        )
        return result

    for path, new in wanted.items():
        current = _read_bytes(_at(root, path))
        before = None if current is None else current.decode("utf-8", errors="replace")
        if before != new:
            result["files"][path] = new
            result["before"][path] = before
    return result


def apply(planned: Dict[str, Any], root: str = "/") -> None:
    """Write (atomically, 0644) or remove the files ``plan()`` listed; a drop-in directory left empty goes too."""
    for path, text in sorted(planned["files"].items()):
        full = _at(root, path)
        try:
            if text is None:
                try:
                    os.unlink(full)
                except FileNotFoundError:
                    pass
                if path == DROPIN:
                    try:
                        os.rmdir(os.path.dirname(full))
                    except OSError:
                        pass  # not empty: other drop-ins live there
            else:
                os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
                fileio.write_atomic(full, text.encode("utf-8"), 0o644, os.geteuid(), os.getegid())
        except OSError as exc:
            raise errors.Failure(
                errors.HOST_ERROR, f"Could not write {path}: {exc.strerror or exc}; it is unchanged."
            ) from exc
