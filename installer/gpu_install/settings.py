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
    import yaml

    specs: dict[str, dict[str, Any]] = {}
    for spec_file in sorted((collection_dir() / "roles").glob("*/meta/argument_specs.yml")):
        data = yaml.safe_load(spec_file.read_text()) or {}
        options = ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}
        specs[spec_file.parent.parent.name] = options
    return specs


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
    try:
        data = yaml.safe_load(text)
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
            f"unknown setting {', '.join(repr(u) for u in unknown)} in {source}: "
            f"the settings are {', '.join(sorted(spec))}.",
        )
    # Only what the user wrote is validated and passed on; the roles' defaults stay theirs.
    subset = {k: v for k, v in spec.items() if k in data}
    result = ArgumentSpecValidator(_without_defaults(subset)).validate(dict(data))
    if result.error_messages:
        raise GpuInstallError(codes.INVALID_INPUT, f"invalid settings in {source}: {'; '.join(result.error_messages)}.")
    return {k: result.validated_parameters[k] for k in data}


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
        return Path("/var/log/gpu-install")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpu-install"
