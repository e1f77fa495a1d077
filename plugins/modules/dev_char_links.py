#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.dev_char_links: the /dev/char links of the NVIDIA device nodes."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dev_char_links
short_description: Create the /dev/char links of the NVIDIA device nodes
version_added: 0.1.0
description:
  - Creates C(/dev/char/MAJOR:MINOR) links for every NVIDIA character device (C(/dev/nvidia0),
    C(nvidiactl), C(nvidia-uvm), C(nvidia-uvm-tools), C(nvidia-modeset), C(nvidia-nvswitch*),
    C(/dev/nvidia-caps/*)) that has none.
  - These are NVIDIA's documented fix for containers that lose their GPUs with
    "Failed to initialize NVML - Unknown Error" after C(systemctl daemon-reload) on cgroup v2 with
    systemd's cgroup driver (the nodes are not made by udev, so their links are missing and systemd
    drops them from the container's device rules).
  - Links are made atomically; a link that already resolves to the node is left alone. Nothing else changes.
author:
  - gpu-install maintainers
options:
  dev:
    description: The device directory.
    type: path
    default: /dev
attributes:
  check_mode:
    support: full
    description: Lists the links it would make.
  diff_mode:
    support: none
    description: No diff; the links are returned.
"""

EXAMPLES = r"""
- name: Create the /dev/char links of the NVIDIA device nodes
  gpu_install.nvidia.dev_char_links:
"""

RETURN = r"""
links:
  description: The links made (or, in check mode, that would be made), as C(link -> target).
  returned: always
  type: list
  elements: str
  sample: ["/dev/char/195:0 -> ../nvidia0"]
nodes:
  description: Every NVIDIA character device found.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import devchar, errors


def main() -> None:
    module = AnsibleModule(argument_spec={"dev": {"type": "path", "default": "/dev"}}, supports_check_mode=True)
    dev = module.params["dev"]
    try:
        made = devchar.ensure(dev, check=module.check_mode)
    except OSError as exc:
        record = errors.error_record(
            errors.HOST_ERROR,
            f"Cannot create the /dev/char links of the NVIDIA device nodes ({exc}): is {dev} writable?",
        )
        module.fail_json(msg=record["reason"], gpu_install_error=record)
    module.exit_json(
        changed=bool(made),
        links=[f"{link} -> {target}" for link, target in made],
        nodes=[path for path, _major, _minor in devchar.nodes(dev)],
    )


if __name__ == "__main__":
    main()
