#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.cdi_spec: write the CDI spec through which Docker 25+ injects NVIDIA GPUs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cdi_spec
short_description: Write the CDI spec through which Docker 25+ injects NVIDIA GPUs
version_added: 0.1.0
description:
  - Generates a Container Device Interface (CDI) spec of kind C(nvidia.com/gpu) for the host's NVIDIA GPUs
    and writes it, so that C(docker run --device nvidia.com/gpu=all) (or C(=0), or C(=GPU-<uuid>)) works with
    no NVIDIA Container Toolkit. Docker 25 to 27 need C(features.cdi=true) in daemon.json
    (M(gpu_install.nvidia.docker_daemon_json) with O(gpu_install.nvidia.docker_daemon_json#module:cdi=true)).
  - GPUs (index in PCI bus order, UUID, device minor) come from C(/proc/driver/nvidia/gpus/*/information), or
    from the driver's C(nvidia-smi -q). Every GPU is a device by index and by UUID; C(all) is every GPU.
  - What containers get follows O(capabilities), the NVIDIA Container Toolkit's NVIDIA_DRIVER_CAPABILITIES
    names - V(utility) (NVML, C(nvidia-smi), the persistenced and fabric manager sockets), V(compute) (CUDA,
    OpenCL, C(nvidia-uvm), MPS), V(video) (NVDEC, NVENC, optical flow, VDPAU; brings compute), V(graphics)
    (the GLX, EGL, GLES and Vulkan driver, the glvnd, Vulkan and EGL platform config files, each GPU's
    C(/dev/dri) nodes) and V(display) (graphics plus C(/dev/nvidia-modeset)).
  - Driver libraries are found by their stable SONAME (C(libcuda.so.1), C(libnvidia-ml.so.1), ...) in the
    linker cache (C(/etc/ld.so.cache)), then in O(search_paths), so a driver upgrade keeps the spec valid;
    those whose SONAME is the driver version (C(libnvidia-gpucomp), C(libnvidia-glcore), ...) are looked up
    by that version. C(/dev/nvidiactl), the GSP firmware and, with O(caps), the MIG capability nodes are given
    whatever the capabilities; the rest is added when present and listed in RV(missing) when not.
  - The spec is JSON, sorted, the same bytes for the same host; it is checked against the CDI format
    before it is written. Writes atomically (temp file beside the target, fsync, rename), mode 0644, and
    changes nothing when the bytes are the same.
  - Fails with C(gpu_install_error) code 3 when there is no GPU, no loaded driver, no C(libnvidia-ml.so.1)
    (utility) or C(libcuda.so.1) (compute), or a capability it does not support (V(compat32), V(ngx)); code 4
    for an unknown capability; code 10 when the file cannot be written.
author:
  - gpu-install maintainers
options:
  path:
    description:
      - The spec file. Docker reads C(*.json) and C(*.yaml) in C(/etc/cdi) and C(/var/run/cdi).
      - Its directory is created (0755) when missing.
    type: path
    default: /etc/cdi/gpu-install-nvidia.json
  state:
    description: Whether the spec is written (V(present)) or removed (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  search_paths:
    description:
      - Driver directories searched for libraries and binaries that the linker cache (or the system's bin
        directories) does not list, in order, for a driver installed outside them.
    type: list
    elements: path
    default: [/usr/local/nvidia/lib64, /usr/local/nvidia/lib, /usr/local/nvidia/bin]
  container_lib_dir:
    description:
      - One directory where the libraries (and their development names, such as C(libcuda.so)) appear inside
        containers, instead of the default two. By default each library is mounted both in the multiarch
        directory that Debian and Ubuntu images search (C(/usr/lib/x86_64-linux-gnu) on x86_64, as in NVIDIA's
        CUDA images) and in C(/usr/lib64), which images of the Red Hat family, UBI, Amazon Linux and SUSE
        search, so one spec serves them all. C(NVIDIA_CTK_LIBCUDA_DIR) and C(TRITON_LIBCUDA_PATH) name the
        first directory.
    type: str
  capabilities:
    description:
      - The driver capabilities every GPU container gets, by the toolkit's NVIDIA_DRIVER_CAPABILITIES names
        V(utility), V(compute), V(video), V(graphics) and V(display), or V(all) for all five. V(video) brings
        V(compute) and V(display) brings V(graphics) with it, as in the toolkit. Order does not matter.
      - V(compat32) and V(ngx) are refused (code 3); so is an unknown name (code 4).
      - The spec does not set NVIDIA_DRIVER_CAPABILITIES in containers; an image's own value is left alone.
    type: list
    elements: str
    default: [compute, utility]
  caps:
    description:
      - Also give every GPU container the C(/dev/nvidia-caps/*) nodes (MIG configuration and monitoring
        capabilities). Off by default; the NVIDIA Container Toolkit does not give them to whole GPUs either.
    type: bool
    default: false
  root:
    description:
      - Read the host below this directory (a captured tree, a mounted image). The spec still names host paths.
    type: path
attributes:
  check_mode:
    support: full
    description: Generates and compares; writes nothing.
  diff_mode:
    support: full
    description: The diff is the file's text before and after, headed with the path.
notes:
  - The generator lives in the module_utils C(cdi), which the gpu-install CLI imports too.
  - Regenerate after a driver upgrade (C(stale) lists paths of the written spec that no longer exist).
seealso:
  - name: Container Device Interface specification
    description: The spec format Docker reads.
    link: https://github.com/cncf-tags/container-device-interface/blob/main/SPEC.md
"""

EXAMPLES = r"""
- name: Write the CDI spec for the host's GPUs
  gpu_install.nvidia.cdi_spec:
  register: cdi

- name: Give containers OpenGL, EGL, Vulkan and the video codecs as well
  gpu_install.nvidia.cdi_spec:
    capabilities: [compute, utility, graphics, video]

- name: A driver installed in /opt/nvidia, outside the linker cache
  gpu_install.nvidia.cdi_spec:
    search_paths: [/opt/nvidia/lib64, /opt/nvidia/bin]

- name: Take the spec out (back to the runtime mode)
  gpu_install.nvidia.cdi_spec:
    state: absent
"""

RETURN = r"""
path:
  description: The spec file.
  returned: always
  type: str
  sample: /etc/cdi/gpu-install-nvidia.json
devices:
  description: The fully qualified device names the spec defines (empty with O(state=absent)).
  returned: always
  type: list
  elements: str
  sample: ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-59612015-34ef-44a0-8fe4-7daa00bab28a", "nvidia.com/gpu=all"]
gpus:
  description:
    - The GPUs found, each with C(index), C(uuid), C(minor), C(pci_address), C(name), C(device_node) and
      C(drm_nodes) (its C(/dev/dri) nodes, found with the graphics capability only).
  returned: always
  type: list
  elements: dict
capabilities:
  description: The capabilities the spec gives, with those they bring, in canonical order (empty with O(state=absent)).
  returned: always
  type: list
  elements: str
  sample: ["utility", "compute"]
driver_version:
  description: The loaded driver's version, or null.
  returned: always
  type: str
  sample: 580.159.04
libraries:
  description:
    - Name below each of the container's library directories (the SONAME; C(vdpau/...) and C(gbm/...) for
      the VDPAU driver and the GBM backend) -> host path, for each library put into the spec (development
      names such as C(libcuda.so), mounts of the same files, are not listed).
  returned: always
  type: dict
missing:
  description:
    - Optional parts of the asked-for capabilities that were not found (libraries, binaries, device nodes,
      config files, a GPU's C(/dev/dri) nodes).
  returned: always
  type: list
  elements: str
stale:
  description: Host paths named by the spec that was on disk before this task and no longer exist.
  returned: always
  type: list
  elements: str
diff:
  description: C(before), C(after), C(before_header) and C(after_header); empty when nothing changed.
  returned: always
  type: dict
gpu_install_error:
  description:
    - On failure, the exit code (3 no GPU, driver or library, or an unsupported capability; 4 an unknown
      capability; 10 write error) and the reason.
  returned: failure
  type: dict
  sample: {"code": 3, "reason": "No NVIDIA GPU was found in /proc/driver/nvidia/gpus (nor by nvidia-smi): ..."}
"""

import json
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import cdi


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", errors="replace")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": cdi.DEFAULT_PATH},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "search_paths": {"type": "list", "elements": "path", "default": list(cdi.DEFAULT_SEARCH_PATHS)},
            "container_lib_dir": {"type": "str"},
            "capabilities": {"type": "list", "elements": "str", "default": ["compute", "utility"]},
            "caps": {"type": "bool", "default": False},
            "root": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    result: Dict[str, Any] = {
        "changed": False,
        "path": path,
        "devices": [],
        "capabilities": [],
        "gpus": [],
        "driver_version": None,
        "libraries": {},
        "missing": [],
        "stale": [],
        "diff": {},
    }
    try:
        before = cdi.read_current(path)
        if before is not None:
            try:
                result["stale"] = cdi.stale_paths(json.loads(before.decode("utf-8")), p["root"])
            except ValueError:
                result["stale"] = []
        after: bytes | None = None
        if p["state"] == "present":
            spec, found = cdi.generate(
                root=p["root"],
                search_paths=p["search_paths"],
                caps=p["caps"],
                container_lib_dir=p["container_lib_dir"],
                capabilities=p["capabilities"],
            )
            after = cdi.dumps(spec)
            info = found.as_dict()
            result.update(
                devices=[f"{spec['kind']}={d['name']}" for d in spec["devices"]],
                capabilities=info["capabilities"],
                gpus=info["gpus"],
                driver_version=info["driver_version"],
                libraries=info["libraries"],
                missing=info["missing"],
            )
        changed = before != after
        result["changed"] = changed
        if changed and module._diff:
            result["diff"] = {
                "before": _text(before),
                "after": _text(after),
                "before_header": path,
                "after_header": path,
            }
        if changed and not module.check_mode:
            if after is None:
                cdi.remove(path)
            else:
                cdi.write(path, after)
    except cdi.CdiError as exc:
        module.fail_json(msg=exc.reason, gpu_install_error=exc.record(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
