#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.converged: is this host as the last successful full run left it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: converged
short_description: Tell whether a host is as the last successful full run left it
version_added: 0.1.0
description:
  - The site playbook's fast path. After a full run that succeeded and needs no reboot, O(state=write)
    records the host's observable state (boot, kernel, NVIDIA devices and modules, package databases,
    every file below the trees gpu-install writes, the managed units' states) with O(key) in a receipt.
    O(state=check) observes the host again and returns C(converged=true) when the receipt's key and every
    part of the observation are equal, so that the run can skip the roles; any difference (an edited
    daemon.json, a removed package, a stopped Docker, a reboot, other settings) makes it false, lists the
    parts in C(drift) and removes the receipt, so that the full run that follows writes a new one.
  - The receipt keeps the host's facts as the full run last detected them (O(facts)); a converged check
    returns them as C(ansible_facts.gpu_install), so that a converged run needs no other module.
  - Use the action of the same name (it computes O(key) on the controller from the collection's content and
    the settings); module_utils/converged.py says what is observed.
  - The receipt is gpu-install's own bookkeeping: writing or removing it is never reported as a change.
author:
  - gpu-install maintainers
options:
  state:
    description:
      - V(check) compares the host with the receipt; V(write) records the host as converged.
    type: str
    choices: [check, write]
    default: check
  key:
    description:
      - The digest of the collection's content and the settings the run used (the action computes it).
    type: str
    required: true
  facts:
    description:
      - With O(state=write), the host's facts (C(ansible_facts.gpu_install)) to keep in the receipt.
    type: dict
    default: {}
  enabled:
    description:
      - With V(false), O(state=check) reports C(converged=false) whatever the receipt says (a full run).
    type: bool
    default: true
  path:
    description:
      - The receipt file.
    type: path
    default: /var/lib/gpu-install/converged.json
attributes:
  check_mode:
    support: full
    description: O(state=check) runs the same in check mode but leaves the receipt in place.
  diff_mode:
    support: none
    description: The receipt is not part of the host's configuration.
"""

EXAMPLES = r"""
- name: Tell whether the host is converged
  gpu_install.nvidia.converged:
  register: converged

- name: Record the converged state after a full run
  gpu_install.nvidia.converged:
    state: write
    key: "{{ converged.key }}"
"""

RETURN = r"""
ansible_facts:
  description: C(gpu_install), the facts the receipt keeps, when the host is converged.
  returned: when O(state=check) finds the host converged
  type: dict
converged:
  description: Whether the host is as the receipt says (always false for O(state=write) and O(enabled=false)).
  returned: always
  type: bool
drift:
  description: What differs from the receipt, by part (C(files:docker), C(packages), C(units), ...).
  returned: when O(state=check)
  type: list
  elements: str
written:
  description: When the receipt compared with (or the one written) was written, UTC.
  returned: when a receipt was read or written
  type: str
key:
  description: The key the run used.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import converged


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["check", "write"], "default": "check"},
            "key": {"type": "str", "required": True, "no_log": False},
            "enabled": {"type": "bool", "default": True},
            "facts": {"type": "dict", "default": {}},
            "path": {"type": "path", "default": converged.RECEIPT_PATH},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = converged.run(p["state"], p["key"], p["enabled"], p["path"], module.check_mode, p["facts"])
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
