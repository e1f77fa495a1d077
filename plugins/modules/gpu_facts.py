#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.gpu_facts: what gpu-install needs to know about a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Detect what gpu-install needs to know about a host
version_added: 0.1.0
description:
  - Reads the distribution, CPU architecture, Docker flavour and version, NVIDIA GPUs and NVSwitches,
    the loaded NVIDIA driver, nouveau, Secure Boot, Tegra, WSL, the kernel and its headers, the
    NVIDIA Container Toolkit and nvidia-persistenced.
  - Reads files only (os-release, the dpkg status file, the rpm database, sysfs, /proc); on a host
    whose rpm database is not sqlite it runs C(rpm -qa). It never changes anything.
  - Every fact is returned under C(ansible_facts.gpu_install) and under C(gpu_install_facts).
  - The problems found are listed in C(problems); those with C(refuses=true) make gpu-install refuse
    the host (exit code 3). docs/detect.md lists every problem code.
author:
  - gpu-install maintainers
options:
  root:
    description:
      - Detect the tree below this directory (a mounted image, a captured tree) instead of the running
        host. Every file is read below it; nothing of the running host is consulted.
    type: path
    required: false
  fail_on_refusal:
    description:
      - Fail when a refusing problem was found, with C(gpu_install_error) carrying exit code 3 and the
        one-sentence reason. The facts are returned all the same.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  facts:
    support: full
    description: Sets C(ansible_facts.gpu_install).
notes:
  - The detection logic lives in the module_utils C(gpu_detect), which the gpu-install CLI imports too.
"""

EXAMPLES = r"""
- name: Detect the host
  gpu_install.nvidia.gpu_facts:

- name: Refuse unsupported hosts before any change
  gpu_install.nvidia.gpu_facts:
    fail_on_refusal: true

- name: Show the GPUs found
  ansible.builtin.debug:
    msg: "{{ ansible_facts.gpu_install.gpus | map(attribute='name') | list }}"

- name: Detect a mounted image
  gpu_install.nvidia.gpu_facts:
    root: /mnt/image
  register: image_facts
"""

RETURN = r"""
gpu_install_facts:
  description: The facts, as also set in C(ansible_facts.gpu_install).
  returned: always
  type: dict
  contains:
    schema:
      description: The version of this structure.
      type: int
      sample: 1
    supported:
      description: True when no refusing problem was found.
      type: bool
    problems:
      description: Problems found, each with C(code), C(message) (one sentence) and C(refuses).
      type: list
      elements: dict
      sample: [{"code": "no_gpu", "message": "No NVIDIA GPU was found ...", "refuses": false}]
    os:
      description: >-
        C(id), C(version_id), C(codename) (as the package repositories spell it), C(family)
        (debian, redhat or null), C(arch) (as uname -m spells it), C(supported), C(name) (PRETTY_NAME)
        and C(like) (the supported base it resolved to).
      type: dict
      sample: {"id": "linuxmint", "version_id": "21.3", "codename": "jammy", "family": "debian",
               "arch": "x86_64", "supported": true, "name": "Linux Mint 21.3",
               "like": {"id": "ubuntu", "version_id": "22.04"}}
    docker:
      description: >-
        C(flavour) (docker-ce, docker.io, docker, docker-engine, moby-engine, snap or null),
        C(version) (upstream), C(package) (name and full version), C(config_path), C(rootless),
        C(podman_shim) and C(engines) (every engine found, preferred first).
      type: dict
    gpus:
      description: >-
        NVIDIA GPUs: C(pci_address), C(vendor_id), C(device_id), C(class), C(name), C(uuid), C(minor),
        C(kernel_driver); C(name), C(uuid) and C(minor) come from the loaded driver, else null.
      type: list
      elements: dict
    nvswitches:
      description: PCI addresses of NVSwitches.
      type: list
      elements: str
    driver:
      description: C(loaded), C(version), C(flavour) (open, proprietary or null) and C(package).
      type: dict
    nouveau_loaded:
      description: Whether nouveau is loaded.
      type: bool
    secure_boot:
      description: Whether Secure Boot is enabled; null when it cannot be told.
      type: bool
    tegra:
      description: Whether this is a Tegra/Jetson system.
      type: bool
    wsl:
      description: Whether this is Windows Subsystem for Linux.
      type: bool
    kernel:
      description: C(release) and C(headers_installed).
      type: dict
    container_toolkit:
      description: C(installed), C(version) and C(package) of the NVIDIA Container Toolkit.
      type: dict
    persistenced:
      description: C(installed), C(version), C(enabled) and C(running) of nvidia-persistenced.
      type: dict
gpu_install_error:
  description: With O(fail_on_refusal=true) and a refusing problem, the exit code 3 and the reason.
  returned: failure
  type: dict
  sample: {"code": 3, "reason": "Fedora Linux 40 is not supported: ..."}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors
from ansible_collections.gpu_install.nvidia.plugins.module_utils.gpu_detect import detect, refusal


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": False, "default": None},
            "fail_on_refusal": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    facts = detect(module.params["root"])
    payload = {"ansible_facts": {"gpu_install": facts}, "gpu_install_facts": facts}
    refused = refusal(facts)
    if module.params["fail_on_refusal"] and refused is not None:
        code, reason = refused
        module.fail_json(msg=reason, gpu_install_error=errors.error_record(code, reason), **payload)
    module.exit_json(changed=False, **payload)


if __name__ == "__main__":
    main()
