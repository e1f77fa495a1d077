#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: error
short_description: Fail a task with a classified gpu-install error
description:
  - Fails with C(gpu_install_error) set to O(code) and O(reason), the record the gpu-install CLI and the
    fleet report read to give the run its exit code and its one-sentence reason.
  - Use it where a role refuses to go on; it never changes the host.
version_added: "0.1.0"
author:
  - gpu-install maintainers
options:
  code:
    description:
      - The gpu-install exit code class (3 unsupported, 4 invalid input, 5 package source, 6 busy,
        7 engine rolled back, 8 verification failed, 9 reboot required, 10 host error).
    type: int
    required: true
  reason:
    description:
      - One sentence naming what was found and how to fix it.
    type: str
    required: true
  defer_in_check_mode:
    description:
      - In check mode, do not fail; return the record as C(gpu_install_blocker) so that a plan goes on,
        shows every change, and ends with this error's exit code.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Refuse a host without an NVIDIA GPU
  gpu_install.nvidia.error:
    code: 3
    reason: No NVIDIA GPU was found on the PCI bus.
  when: ansible_facts.gpu_install.gpus | length == 0
"""

RETURN = r"""
gpu_install_error:
  description: The classified error.
  returned: when the task fails
  type: dict
  contains:
    code:
      description: The exit code class.
      type: int
    reason:
      description: The one-sentence reason.
      type: str
gpu_install_blocker:
  description: The same record, returned instead of failing in check mode with O(defer_in_check_mode).
  returned: in check mode with O(defer_in_check_mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "code": {"type": "int", "required": True},
            "reason": {"type": "str", "required": True},
            "defer_in_check_mode": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    record = errors.error_record(module.params["code"], " ".join(module.params["reason"].split()))
    if module.check_mode and module.params["defer_in_check_mode"]:
        module.warn(record["reason"])
        module.exit_json(changed=False, msg=record["reason"], gpu_install_blocker=record)
    module.fail_json(msg=record["reason"], gpu_install_error=record)


if __name__ == "__main__":
    main()
