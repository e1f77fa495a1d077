# Copyright: gpu-install contributors
# Apache License 2.0
"""Which CDI spec of kind ``nvidia.com/gpu`` each container mode keeps, and whose the others are (stdlib only).

A host has one spec defining ``nvidia.com/gpu`` devices (Docker refuses devices defined twice):

* runtime mode: the NVIDIA Container Toolkit's own ``/var/run/cdi/nvidia.yaml``, written by its
  ``nvidia-cdi-refresh`` units (deployments/systemd/nvidia-cdi-refresh.service in NVIDIA's toolkit source
  sets ``NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/var/run/cdi/nvidia.yaml``);
* cdi mode: gpu-install's ``/etc/cdi/gpu-install-nvidia.json``.

Switching modes takes back the other mode's spec; a spec neither mode is responsible for is someone else's
and is refused, never removed.  What runtime mode is responsible for is known from the record gpu-install
keeps in ``/var/lib/gpu-install/container.json`` (``{"schema": 1, "mode": "runtime"|"cdi", "cdi_specs":
[...]}``: the mode last applied and the specs it keeps), written before runtime mode installs the toolkit
and after cdi mode took runtime mode's spec back.  Hosts applied before that record existed are known by
the boot unit earlier releases installed in runtime mode: ``gpu-install-cdi-refresh.service``, written by
gpu-install, running ``nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

SCHEMA = 1
MODES = ("runtime", "cdi")
DEVICE_KIND = "nvidia.com/gpu"
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
RECORD_NAME = "container.json"
# The toolkit's spec, as its nvidia-cdi-refresh.service writes it.
TOOLKIT_SPEC = "/var/run/cdi/nvidia.yaml"
# gpu-install's own spec (cdi mode), the cdi_spec module's default path.
OWN_SPEC = "/etc/cdi/gpu-install-nvidia.json"
# What earlier releases wrote in runtime mode: the toolkit's spec in /etc/cdi, and the unit regenerating it.
LEGACY_SPEC = "/etc/cdi/nvidia.yaml"
UNIT_NAME = "gpu-install-cdi-refresh.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
UNIT_MARK = "# Written by gpu-install"
LEGACY_COMMAND = "cdi generate --output=" + LEGACY_SPEC


def nvidia_specs(dirs: tuple = SPEC_DIRS) -> List[str]:
    """The CDI specs in ``dirs`` that name ``nvidia.com/gpu`` (the files Docker reads), sorted."""
    found: List[str] = []
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if not name.endswith(SPEC_SUFFIXES) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as fh:
                    if DEVICE_KIND.encode() in fh.read():
                        found.append(path)
            except OSError:
                continue
    return sorted(found)


def parse_record(text: Optional[str]) -> Dict[str, Any]:
    """The record's content, or {} when it is missing or not a record of this schema (then nothing is ours)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("mode") not in MODES:
        return {}
    specs = data.get("cdi_specs")
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        return {}
    return data


def render_record(mode: str, specs: List[str]) -> str:
    """The record's text for ``mode`` keeping ``specs``."""
    return json.dumps({"schema": SCHEMA, "mode": mode, "cdi_specs": sorted(specs)}, indent=2) + "\n"


def unit_is_ours(text: Optional[str]) -> bool:
    """The boot unit at UNIT_PATH is gpu-install's: written by it (its first line says so)."""
    return bool(text) and str(text).lstrip().startswith(UNIT_MARK) and "\nExecStart=" in str(text)


def unit_is_legacy_runtime(text: Optional[str]) -> bool:
    """The unit is the one earlier releases installed in runtime mode (it regenerates LEGACY_SPEC)."""
    if not unit_is_ours(text):
        return False
    return any(
        line.startswith("ExecStart=") and line.rstrip().endswith(LEGACY_COMMAND) for line in str(text).splitlines()
    )


def runtime_specs(record: Dict[str, Any], legacy_unit: bool, toolkit_spec: str = TOOLKIT_SPEC) -> List[str]:
    """The specs gpu-install's runtime mode is responsible for on this host (empty where it was not applied).

    Runtime mode was applied when the record says so last, or, before the record existed, when the legacy
    unit is there; then the toolkit's spec is runtime mode's, and the legacy spec too on legacy hosts.
    """
    specs: List[str] = []
    if record.get("mode") == "runtime":
        specs += [s for s in record.get("cdi_specs", []) if s not in specs]
    if legacy_unit:
        specs += [s for s in (toolkit_spec, LEGACY_SPEC) if s not in specs]
    return sorted(specs)


def inspect(
    mode: str,
    record_text: Optional[str],
    unit_text: Optional[str],
    found: List[str],
    own_spec: str = OWN_SPEC,
    toolkit_spec: str = TOOLKIT_SPEC,
) -> Dict[str, Any]:
    """What ``mode`` finds on the host, and what it takes back or must refuse.

    * ``take_back``: specs this mode removes (the other mode's, by gpu-install's record or legacy unit);
    * ``foreign``: specs found that neither this mode keeps nor gpu-install wrote (cdi mode refuses them);
    * ``legacy_unit``: the runtime-mode boot unit of earlier releases is there (runtime mode removes it).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    record = parse_record(record_text)
    legacy = unit_is_legacy_runtime(unit_text)
    theirs = runtime_specs(record, legacy, toolkit_spec)
    if mode == "cdi":
        keep = [own_spec]
        take_back = theirs
    else:
        # Runtime mode keeps the toolkit's spec; it takes back gpu-install's cdi-mode spec and the legacy one.
        keep = [toolkit_spec]
        take_back = sorted({own_spec} | ({LEGACY_SPEC} if legacy else set()))
    foreign = [s for s in found if s not in keep and s not in take_back]
    return {
        "mode": mode,
        "previous_mode": record.get("mode") or ("runtime" if legacy else None),
        "specs": list(found),
        "keep": keep,
        "take_back": take_back,
        "foreign": foreign,
        "legacy_unit": legacy,
        "own_unit": unit_is_ours(unit_text),
    }


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None
