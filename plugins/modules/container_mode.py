#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.container_mode: the NVIDIA CDI specs of a host, and whose they are."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: container_mode
short_description: Find the NVIDIA CDI specs of a host, say whose each is, and record the container mode
version_added: 0.2.0
description:
  - A host keeps one CDI spec of kind C(nvidia.com/gpu) (Docker refuses devices defined twice). Runtime mode
    keeps the NVIDIA Container Toolkit's C(/var/run/cdi/nvidia.yaml), written by the toolkit's
    C(nvidia-cdi-refresh) units; cdi mode keeps gpu-install's C(/etc/cdi/gpu-install-nvidia.json).
  - With O(state=inspect) (read only) it lists the specs naming C(nvidia.com/gpu) in O(spec_dirs), the ones
    O(mode) takes back from the other mode, and the foreign ones (neither mode's, nor written by gpu-install).
    Runtime mode's specs are known from the record in O(state_dir) (C(container.json)) or, on hosts applied
    before that record existed, from the boot unit C(gpu-install-cdi-refresh.service) that earlier releases
    installed to regenerate C(/etc/cdi/nvidia.yaml).
  - With O(state=record) it writes that record for O(mode) (atomically; unchanged when it says the same).
author:
  - gpu-install maintainers
options:
  mode:
    description: The container mode being applied.
    type: str
    choices: [runtime, cdi]
    required: true
  state:
    description: V(inspect) reads; V(record) writes the record of O(mode).
    type: str
    choices: [inspect, record]
    default: inspect
  own_spec:
    description: gpu-install's own spec (cdi mode).
    type: path
    default: /etc/cdi/gpu-install-nvidia.json
  toolkit_spec:
    description: The toolkit's spec as its nvidia-cdi-refresh.service writes it (runtime mode).
    type: path
    default: /var/run/cdi/nvidia.yaml
  spec_dirs:
    description: The directories Docker reads CDI specs from.
    type: list
    elements: path
    default: [/etc/cdi, /var/run/cdi]
  state_dir:
    description: Where gpu-install keeps its records.
    type: path
    default: /var/lib/gpu-install
  unit_path:
    description: gpu-install's boot unit, whose content tells a host applied in runtime mode by earlier releases.
    type: path
    default: /etc/systemd/system/gpu-install-cdi-refresh.service
attributes:
  check_mode:
    support: full
    description: Reads as usual; O(state=record) says whether it would write and writes nothing.
  diff_mode:
    support: full
    description: O(state=record) returns the record before and after.
"""

EXAMPLES = r"""
- name: Find the NVIDIA CDI specs and whose they are
  gpu_install.nvidia.container_mode:
    mode: cdi
  register: specs

- name: Record that cdi mode keeps gpu-install's spec
  gpu_install.nvidia.container_mode:
    mode: cdi
    state: record
"""

RETURN = r"""
specs:
  description: Every spec in O(spec_dirs) that names C(nvidia.com/gpu).
  returned: always
  type: list
  elements: str
keep:
  description: The spec O(mode) keeps.
  returned: always
  type: list
  elements: str
take_back:
  description: The specs O(mode) removes, written by gpu-install or by the toolkit gpu-install's runtime mode ran
    (present or not).
  returned: always
  type: list
  elements: str
foreign:
  description: The specs found that are neither O(mode)'s nor gpu-install's to take back.
  returned: always
  type: list
  elements: str
  sample: [/etc/cdi/vendor.yaml]
previous_mode:
  description: The mode gpu-install applied last (its record; runtime where only the legacy unit tells), or null.
  returned: always
  type: str
legacy_unit:
  description: The boot unit of earlier releases' runtime mode is installed.
  returned: always
  type: bool
own_unit:
  description: C(/etc/systemd/system/gpu-install-cdi-refresh.service) exists and was written by gpu-install.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import container_mode, errors, fileio


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "choices": list(container_mode.MODES), "required": True},
            "state": {"type": "str", "choices": ["inspect", "record"], "default": "inspect"},
            "own_spec": {"type": "path", "default": container_mode.OWN_SPEC},
            "toolkit_spec": {"type": "path", "default": container_mode.TOOLKIT_SPEC},
            "spec_dirs": {"type": "list", "elements": "path", "default": list(container_mode.SPEC_DIRS)},
            "state_dir": {"type": "path", "default": "/var/lib/gpu-install"},
            "unit_path": {"type": "path", "default": container_mode.UNIT_PATH},
        },
        supports_check_mode=True,
    )
    p = module.params
    record_path = os.path.join(p["state_dir"], container_mode.RECORD_NAME)
    before = container_mode.read_text(record_path)
    result = container_mode.inspect(
        p["mode"],
        before,
        container_mode.read_text(p["unit_path"]),
        container_mode.nvidia_specs(tuple(p["spec_dirs"])),
        own_spec=p["own_spec"],
        toolkit_spec=p["toolkit_spec"],
    )
    changed = False
    if p["state"] == "record":
        after = container_mode.render_record(p["mode"], result["keep"])
        changed = after != before
        if changed:
            result["diff"] = {
                "before": before or "",
                "after": after,
                "before_header": record_path,
                "after_header": record_path,
            }
        if changed and not module.check_mode:
            try:
                os.makedirs(p["state_dir"], mode=0o755, exist_ok=True)
                fileio.write_atomic(record_path, after.encode(), mode=0o644)
            except OSError as exc:
                record = errors.error_record(
                    errors.HOST_ERROR, f"Cannot write {record_path} ({exc.strerror}): is {p['state_dir']} writable?"
                )
                module.fail_json(msg=record["reason"], gpu_install_error=record)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
