# Copyright: gpu-install contributors
# Apache License 2.0
"""The roles' own meta/argument_specs.yml, read once for every reader on the controller.

The schema of the settings: the gpu-install CLI validates a settings file against it, and the converged
action names the settings that make up the fast path's key from it. Controller-side only (it needs PyYAML,
which Ansible brings); no module imports it.
"""

from __future__ import annotations

import os
from typing import Any, Dict


def role_options(roles_dir: str) -> Dict[str, Dict[str, Any]]:
    """Every role's ``main`` options, by role name (the roles without an argument_specs.yml left out)."""
    import yaml

    # libyaml's safe loader where PyYAML has it: the pure-Python one costs a few ms per file at every start.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    specs: Dict[str, Dict[str, Any]] = {}
    for role in sorted(os.listdir(roles_dir)):
        path = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=loader) or {}  # noqa: S506 - a safe loader
        specs[role] = ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}
    return specs
