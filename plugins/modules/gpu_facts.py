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
  - Reads the distribution, CPU architecture, Docker flavour and version, containerd (package, version,
    config.toml version, CRI plugin, whether a kubelet uses it), Podman, the kubelet, NVIDIA GPUs and
    NVSwitches, the loaded NVIDIA driver, nouveau, Secure Boot, Tegra, WSL, the kernel and its headers, the
    NVIDIA Container Toolkit and nvidia-persistenced.
  - Resolves O(container_engines) into C(engines), the container engines the roles configure.
  - Reads files only (os-release, the dpkg status file, the rpm database, sysfs, /proc, containerd's
    config.toml, the kubelet's flags and config); on a host whose rpm database is not sqlite it runs
    C(rpm -qa), C(systemctl is-active containerd) where containerd is installed and systemd runs, and
    C(containerd --version) or C(podman --version) only for binaries no package owns. It never changes anything.
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
  container_engines:
    description:
      - V(auto), or a list of the engines to configure (V(docker), V(containerd), V(podman)); a single name
        counts as a list of one.
      - V(auto) takes Docker when present, containerd when a kubelet uses it or when its CRI plugin is on and
        no Docker is present, Podman when present, and Docker (installed as before) when that leaves nothing.
      - An unknown engine or an empty list fails with exit code 4; a listed containerd or Podman that is not
        installed fails with exit code 3 (gpu-install never installs them); a listed Docker is installed.
    type: raw
    default: auto
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

- name: Detect the host for a Kubernetes node's containerd and Podman
  gpu_install.nvidia.gpu_facts:
    container_engines: [containerd, podman]
    fail_on_refusal: true

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
    containerd:
      description: >-
        C(present), C(package) (containerd, containerd.io or null), C(version) (upstream), C(config_path),
        C(config_exists), C(config_version) (the file's C(version); 1 for a file without one; null without a
        file), C(config_error) (why the file is not valid TOML, else null), C(disabled_plugins),
        C(cri_enabled), C(kubelet) (a kubelet on this host uses this containerd), C(socket) and C(active)
        (the systemd unit is active; null without systemd).
      type: dict
      sample: {"present": true, "package": "containerd", "version": "1.7.24", "config_path":
               "/etc/containerd/config.toml", "config_exists": true, "config_version": 2, "config_error": null,
               "disabled_plugins": [], "cri_enabled": true, "kubelet": false,
               "socket": "/run/containerd/containerd.sock", "active": true}
    podman:
      description: C(present), C(version) and C(cdi) (Podman 4.1 or newer, which reads CDI specs).
      type: dict
      sample: {"present": true, "version": "5.4.2", "cdi": true}
    kubelet:
      description: >-
        C(present) (a kubelet binary or unit), C(endpoint) (its container runtime endpoint) and
        C(endpoint_source) (the file it was read from, or V(default)).
      type: dict
    engines:
      description: The container engines the roles configure, resolved from O(container_engines).
      type: list
      elements: str
      sample: ["docker", "containerd"]
gpu_install_error:
  description: >-
    With O(fail_on_refusal=true) and a refusing problem, the exit code 3 and the reason; for a refused
    O(container_engines), exit code 4 (invalid) or 3 (an engine the host lacks) and the reason.
  returned: failure
  type: dict
  sample: {"code": 3, "reason": "Fedora Linux 40 is not supported: ..."}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import engines, errors
from ansible_collections.gpu_install.nvidia.plugins.module_utils.gpu_detect import detect, refusal


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": False, "default": None},
            "fail_on_refusal": {"type": "bool", "default": False},
            "container_engines": {"type": "raw", "default": engines.AUTO},
        },
        supports_check_mode=True,
    )
    facts = detect(module.params["root"])
    payload = {"ansible_facts": {"gpu_install": facts}, "gpu_install_facts": facts}
    try:
        engines.apply(facts, module.params["container_engines"])
    except engines.EngineError as exc:
        module.fail_json(msg=exc.reason, gpu_install_error=errors.error_record(exc.code, exc.reason), **payload)
    refused = refusal(facts)
    if module.params["fail_on_refusal"] and refused is not None:
        code, reason = refused
        module.fail_json(msg=reason, gpu_install_error=errors.error_record(code, reason), **payload)
    module.exit_json(changed=False, **payload)


if __name__ == "__main__":
    main()
