"""The settings file: one YAML mapping whose keys are the roles' variables.

The schema is the roles' own meta/argument_specs.yml: nothing here lists
settings a second time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .collection import collection_dir
from .errors import GpuInstallError, codes

DEFAULT_PATH = Path("/etc/gpu-install/config.yml")


def role_specs() -> dict[str, dict[str, Any]]:
    """Every role's `main` options, by role name, read from meta/argument_specs.yml."""
    from .collection import module_utils

    return module_utils("argspecs").role_options(str(collection_dir() / "roles"))


def schema() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for options in role_specs().values():
        merged.update(options)
    return merged


def load(path: str | None) -> tuple[dict[str, Any], str | None]:
    """Read and validate the settings; returns (settings, the file used or None)."""
    import yaml

    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise GpuInstallError(
                codes.INVALID_INPUT, f"settings file {file} does not exist: check the path given to -c."
            ) from None
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        raise GpuInstallError(
            codes.INVALID_INPUT, f"settings file {file} cannot be read ({exc}): fix it and run again."
        ) from None
    if len(text) > MAX_FILE:
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"settings file {file} is {len(text)} characters long: a settings file holds at most {MAX_FILE}.",
        )
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise GpuInstallError(
            codes.INVALID_INPUT, f"settings file {file} is nested too deeply to be settings: fix it and run again."
        ) from None
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        # PyYAML's own constructors raise these for a tagged scalar they cannot read ("!!float ").
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"settings file {file} has a value YAML cannot read ({type(exc).__name__}): fix it and run again.",
        ) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise GpuInstallError(
            codes.INVALID_INPUT, f"settings file {file} is not valid YAML{where} ({problem}): fix it and run again."
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"settings file {file} must be a mapping of setting names to values, not a {type(data).__name__}.",
        )
    return validate(data, str(file)), str(file)


def validate(data: dict[str, Any], source: str) -> dict[str, Any]:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = schema()
    unknown = sorted(str(k) for k in data if k not in spec)
    if unknown:
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"unknown setting {', '.join(_short(u) for u in unknown)} in {source}: "
            f"the settings are {', '.join(sorted(spec))}.",
        )
    # Strings no setting may hold are refused first, so that no message below echoes them.
    hostile = [f"{name}{where} {why}" for name, value in data.items() for where, why in _strings(value, "")]
    if hostile:
        raise GpuInstallError(codes.INVALID_INPUT, f"invalid settings in {source}: {'; '.join(hostile)}.")
    # Only what the user wrote is validated and passed on; the roles' defaults stay theirs.
    subset = {k: v for k, v in spec.items() if k in data}
    result = ArgumentSpecValidator(_without_defaults(subset)).validate(dict(data))
    if result.error_messages:
        messages = [m if len(m) <= 300 else m[:297] + "..." for m in result.error_messages]
        raise GpuInstallError(codes.INVALID_INPUT, f"invalid settings in {source}: {'; '.join(messages)}.")
    values = {k: result.validated_parameters[k] for k in data}
    problems = [msg for name, value in values.items() for msg in _check(name, value)]
    if problems:
        raise GpuInstallError(codes.INVALID_INPUT, f"invalid settings in {source}: {'; '.join(problems)}.")
    return values


# Beyond the argument specs (types and choices): what each string setting may hold. The one table of these
# rules; docs/security.md explains them. Every string, nested ones included, is also refused when it holds
# NUL or another control character, is longer than MAX_STRING, or holds a Jinja delimiter: settings are data
# handed to Ansible as extra vars, which Ansible would otherwise evaluate as templates (a lookup('pipe') runs
# a command).
MAX_STRING = 4096
MAX_DEPTH = 16
MAX_NODES = 10000
# Seconds settings (timeouts): a day at most, never negative.
MAX_SECONDS = 86400
MAX_FILE = 1 << 20
# The largest number any setting may hold anywhere (a signed 64-bit integer).
MAX_INT = (1 << 63) - 1
_JINJA = ("{{", "}}", "{%", "%}", "{#", "#}")
_VERSION = r"[0-9][A-Za-z0-9.+~:_^-]{0,127}"
# A name on PATH or an absolute path without "." or ".." parts (an engine runs it; it is never given to a shell).
_COMMAND = (
    r"(?!.*(?:^|/)\.\.?(?:/|$))(?:[A-Za-z0-9_.+][A-Za-z0-9_.+-]{0,254}|(?:/[A-Za-z0-9_.+-]{1,255}){1,32})",
    "a command name on PATH or an absolute path without . or .. parts",
)
PATTERNS: dict[str, tuple[str, str]] = {
    "nvidia_driver_branch": (r"(?:[0-9]{3,4})?", 'a driver branch\'s major number, e.g. "550" (or empty)'),
    "nvidia_driver_runfile_sha256": (r"(?:[0-9A-Fa-f]{64})?", "64 hexadecimal digits (or empty)"),
    "nvidia_container_toolkit_version": (
        f"(?:{_VERSION})?",
        "a package version as the package manager spells it, e.g. 1.17.8-1 (or empty)",
    ),
    # dockerd runs it; containerd's runc shim runs it as BinaryName.
    "docker_runtime_path": _COMMAND,
    "containerd_runtime_path": _COMMAND,
    # containerd's config.toml: an absolute path without ".." (the module reads and edits it).
    "containerd_config_path": (
        r"(?!.*(?:^|/)\.\.?(?:/|$))(?:/[A-Za-z0-9_.+-]{1,255}){1,32}",
        "an absolute path without . or .. parts, e.g. /etc/containerd/config.toml",
    ),
    # A Docker image reference (registry/name:tag@digest); never an option (no leading "-").
    "gpu_verify_image": (r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}", "an image reference, e.g. debian:bookworm-slim"),
    # An inventory host name (a name, an IPv4 or IPv6 address), or empty.
    "gpu_install_drain_delegate_to": (
        r"(?:[A-Za-z0-9_][A-Za-z0-9_.:-]{0,253})?",
        "an inventory host name (letters, digits, '.', '_', ':', '-'), or empty",
    ),
}
# The site playbook's batch sizes (a play keyword): a host count or a percentage, or a list of them.
_SERIAL = (r"(?:[0-9]{1,7}|[0-9]{1,3}(?:\.[0-9]{1,3})?%)", 'a host count or a percentage such as "25%"')
_SERIAL_ITEMS = 100
_URLS = {"nvidia_driver_runfile_url": ("http", "https", "file")}


def _check(name: str, value: Any) -> list[str]:
    import re

    if name == "gpu_install_container_engines":
        return _engines_check(value)
    if name == "gpu_install_serial":
        items = value if isinstance(value, list) else [value]
        good = 0 < len(items) <= _SERIAL_ITEMS and all(
            isinstance(i, (int, str)) and not isinstance(i, bool) and re.fullmatch(_SERIAL[0], str(i)) for i in items
        )
        if not good:
            what = f"{_SERIAL[1]}, or a list of at most {_SERIAL_ITEMS} of them"
            return [f"{name} must be {what}, not {_short(str(value))}"]
        return []
    if name == "gpu_install_max_fail_percentage" and isinstance(value, int) and not 0 <= value <= 100:
        return [f"{name} must be a percentage between 0 and 100, not {value}"]
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_SECONDS:
            return [f"{name} must be between 0 and {MAX_SECONDS} (seconds), not {_short(str(value))}"]
        return []
    if not isinstance(value, str):
        if name == "gpu_install_repositories":
            return _module_check(lambda repos: repos.check_overrides(value))
        return []
    problems: list[str] = []
    if name in PATTERNS:
        pattern, what = PATTERNS[name]
        if not re.fullmatch(pattern, value):
            problems.append(f"{name} must be {what}, not {_short(value)}")
    elif name in _URLS and value:
        problems += _module_check(lambda repos: repos.check_url(value, name, _URLS[name]))
    elif name == "gpu_install_proxy":
        problems += _module_check(lambda repos: repos.check_proxy(value, name))
    return problems


def _engines_check(value: Any) -> list[str]:
    """The engines setting as module_utils/engines.py reads it (auto, or a list of known engines)."""
    from .collection import module_utils

    engines = module_utils("engines")
    try:
        engines.check(value)
    except engines.EngineError as exc:
        return [str(exc.reason).rstrip(".")]
    return []


def _module_check(check: Any) -> list[str]:
    from .collection import module_utils

    repos = module_utils("repos")
    try:
        check(repos)
    except repos.RepoError as exc:
        return [str(exc.reason).rstrip(".")]
    return []


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    """(where, why) for every string or number in ``value`` (nested) that no setting may hold.

    The walk is bounded (YAML aliases can make a small file a huge or cyclic structure): a value with more
    than MAX_NODES parts or deeper than MAX_DEPTH is refused whole.
    """
    out: list[tuple[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    seen = 0
    while stack:
        item, at, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_DEPTH:
            return [(where, f"is nested deeper than {MAX_DEPTH} levels or has more than {MAX_NODES} parts")]
        if isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                stack.append((sub, f"{at}.{key}", depth + 1))
                if isinstance(key, str):
                    stack.append((key, f"{at} (a key)", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{at}[{i}]", depth + 1) for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            why = _string_problem(item)
            if why:
                out.append((at, why))
        elif isinstance(item, int) and not isinstance(item, bool) and not -MAX_INT <= item <= MAX_INT:
            # Ansible's int check converts through a C long and crashes beyond it, nested values included.
            out.append((at, f"is a number beyond {MAX_INT}; no setting holds one"))
    return out


def _string_problem(value: str) -> str:
    if len(value) > MAX_STRING:
        return f"is {len(value)} characters long; a setting holds at most {MAX_STRING}"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"must not contain control characters (NUL, newline, tab): {_short(value)}"
    if any(d in value for d in _JINJA):
        return "must not contain a Jinja delimiter ({{, {%, {#): settings are data, not templates"
    return ""


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _without_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, opt in spec.items():
        out[name] = {k: v for k, v in opt.items() if k not in ("default", "description")}
    return out


def state_dir() -> Path:
    """Where runs keep their logs and artifacts: /var/log/gpu-install as root, else the user's state dir.

    GPU_INSTALL_LOG_DIR overrides both.
    """
    override = os.environ.get("GPU_INSTALL_LOG_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return _private(Path("/var/log/gpu-install"))
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return _private(Path(base) / "gpu-install")


def _private(path: Path) -> Path:
    """``path``, made 0700 where it is ours: the runs' logs and extra vars hold the settings (a proxy password).

    A directory that cannot be made (read-only filesystem) is left to the run, which says so (exit 10).
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
        if st.st_uid == os.geteuid() and not os.path.islink(path) and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError:
        pass
    return path
