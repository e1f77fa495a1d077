#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.gpu_verify: prove that a container sees the GPU."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_verify
short_description: Prove that a container sees the host's NVIDIA GPUs
version_added: 0.1.0
description:
  - Reads the GPUs through NVML on the host (the driver's C(libnvidia-ml.so.1), through ctypes; no nvidia-ml-py
    needed), then starts throwaway containers (C(docker run --rm --network none)) the way the host gives containers
    GPUs, and compares the GPU UUIDs that C(nvidia-smi) lists inside with NVML's outside.
  - The checks, on every path the mode promises (each check names its C(path)) - C(all) must see exactly NVML's
    GPUs; then each GPU alone, exactly that GPU (isolation as well as access).
  - With O(mode=runtime), the containers run under Docker's B(default) runtime (no C(--runtime)) with
    C(NVIDIA_VISIBLE_DEVICES=all|<index>|<uuid>) and C(NVIDIA_DRIVER_CAPABILITIES=utility), which proves that the
    C(nvidia) runtime is Docker's default, so that the classic C(docker build) and Compose get the GPU too; then
    with C(--gpus all) and C(--gpus device=<uuid>) (Docker's device requests, which Compose's
    C(deploy.resources.reservations.devices) use too). With O(mode=cdi), they get
    C(--device nvidia.com/gpu=all|<index>|<uuid>) from the CDI spec.
  - NVIDIA's runtime mounts C(nvidia-smi) at its path on the host, which may be off the image's C(PATH) (for
    example C(/usr/local/nvidia/bin)); the containers' C(PATH) is then the image's with that directory after it.
  - O(image) needs only glibc; C(nvidia-smi) and the driver libraries are put into the container by the runtime or
    the CDI spec. It is pulled only when it is not on the host and O(pull) is true.
  - Fails with C(gpu_install_error) code 8 and one sentence naming what differed and the fix - NVML unavailable or
    no GPU, the Docker CLI missing or the daemon not running, the image absent with O(pull=false) (or its pull
    failing), a container that fails or times out, or a container that sees other GPUs than NVML.
  - Never changes a GPU setting. The only change it can make is pulling O(image) (then C(changed) is true).
  - O(engines) runs the proof once per container engine, each check naming its C(engine) - C(docker) as above;
    C(containerd) through its CLI C(ctr) in the namespace C(gpu-install) (O(image) pulled there by its fully qualified
    name, C(docker.io/library/debian:bookworm-slim)), with NVIDIA's runtime as the runc binary of containerd's runc
    shim (C(ctr run --runtime io.containerd.runc.v2 --runc-binary <runtime_path>)) and C(NVIDIA_VISIBLE_DEVICES) in
    runtime mode, and C(--device nvidia.com/gpu=...) in cdi mode (C(ctr) 2.0 and newer; C(ctr) 1.7 has no CDI flag,
    so there NVIDIA's runtime is given the CDI names, C(NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all)); C(podman) with
    C(--device nvidia.com/gpu=...) in both modes (Podman 4.1 and newer) and, on Podman 5, C(--gpus all) and
    C(--gpus <uuid>), which Podman maps to the same CDI devices.
author:
  - gpu-install maintainers
options:
  mode:
    description: How containers get GPUs on this host (the role passes C(nvidia_container_mode)).
    type: str
    choices: [runtime, cdi]
    default: runtime
  image:
    description:
      - The image the containers run. Any glibc-based image works (C(nvidia-smi) is injected); on air-gapped
        hosts, C(docker load) one beforehand and set O(pull=false).
    type: str
    default: debian:bookworm-slim
  pull:
    description: Pull O(image) when it is not on the host; with V(false) an absent image fails the task (code 8).
    type: bool
    default: true
  docker:
    description:
      - The Docker CLI, a path or a name looked up on C(PATH) (and C(/usr/bin), C(/usr/local/bin), C(/snap/bin)).
    type: str
    default: docker
  timeout:
    description: Seconds each Docker command (the pull, each container) may take before the check fails.
    type: int
    default: 120
  engines:
    description:
      - The container engines to prove it on, in order (the role passes C(ansible_facts.gpu_install.engines)).
    type: list
    elements: str
    choices: [docker, containerd, podman]
    default: [docker]
  ctr:
    description: containerd's CLI, a path or a name looked up on C(PATH) (and the directories O(docker) is).
    type: str
    default: ctr
  containerd_address:
    description: containerd's socket, which C(ctr) dials.
    type: path
    default: /run/containerd/containerd.sock
  runtime_path:
    description:
      - NVIDIA's runtime, which C(ctr) runs as runc's binary; a name is looked up on C(PATH) and the usual bin
        directories.
    type: str
    default: nvidia-container-runtime
  podman:
    description: The Podman CLI, a path or a name looked up on C(PATH).
    type: str
    default: podman
  nvml_library:
    description:
      - The NVML library to load. Default C(libnvidia-ml.so.1) through the linker, then the driver directories
        C(/usr/local/nvidia/lib64), the multiarch and lib64 directories and WSL's C(/usr/lib/wsl/lib).
    type: path
attributes:
  check_mode:
    support: full
    description:
      - Reads NVML, looks for the Docker CLI, asks the daemon (C(docker info)) and the image store (C(docker image
        inspect)), and returns the commands it would run in C(checks) with C(ok) and C(seen) null and C(verified) null.
        It starts no container and pulls nothing, and it does not fail (a plan before the driver is installed is
        normal), except that an absent image with O(pull=false) is returned as C(gpu_install_blocker).
  diff_mode:
    support: partial
    description: Nothing on the host changes but the image store; a pull (made, or in check mode due) is shown as text.
notes:
  - The logic lives in the module_utils C(verify) and C(nvml), which the gpu-install CLI imports too.
  - docs/verify.md in gpu-install says what verify proves, per mode, and which image to use on air-gapped hosts.
  - Starting containers is the proof, so the module starts them in every real run; it is not idempotent in the sense
    of doing nothing the second time, but it leaves nothing behind (C(--rm); a container that times out is removed).
"""

EXAMPLES = r"""
- name: Prove that containers get the GPUs through Docker's default runtime
  gpu_install.nvidia.gpu_verify:
  register: verify

- name: Prove it on Docker, on the containerd a kubelet uses, and on Podman
  gpu_install.nvidia.gpu_verify:
    mode: cdi
    engines: [docker, containerd, podman]

- name: Prove it through CDI with a preloaded image on an air-gapped host
  gpu_install.nvidia.gpu_verify:
    mode: cdi
    image: registry.example/base/debian:bookworm-slim
    pull: false
"""

RETURN = r"""
verified:
  description: True when every check passed; null in check mode.
  returned: always
  type: bool
mode:
  description: O(mode).
  returned: always
  type: str
  sample: runtime
image:
  description: O(image).
  returned: always
  type: str
  sample: debian:bookworm-slim
pulled:
  description: Whether O(image) was pulled by this run.
  returned: always
  type: bool
nvml:
  description: >-
    What NVML gives on the host - C(available), C(error), C(library), C(driver_version), C(cuda_driver_version)
    (C(12.8)) and C(gpus), each with C(index), C(uuid), C(name), C(pci_bus_id), C(persistence_mode) and C(error).
  returned: always
  type: dict
  sample: {"available": true, "error": null, "driver_version": "580.159.04", "cuda_driver_version": "13.0",
           "gpus": [{"index": 0, "uuid": "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca", "name": "NVIDIA H100 80GB HBM3",
                     "pci_bus_id": "00000000:00:06.0", "persistence_mode": true, "error": null}]}
docker:
  description: C(path) of the Docker CLI, and C(running), C(server_version) and C(default_runtime) of the daemon.
  returned: always
  type: dict
checks:
  description: >-
    One per container, every engine's in turn - C(name) (C(all), C(index 0), C(UUID GPU-...), C(--gpus all),
    C(--gpus device=GPU-...); another engine's prefixed with it, C(containerd all)),
    C(engine), C(path) (how the container asks for GPUs - C(NVIDIA_VISIBLE_DEVICES), C(--gpus), C(--device), or
    C(NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu) for CDI names given to NVIDIA's runtime), C(selector),
    C(argv), C(expected) (NVML's UUIDs), C(seen) (nvidia-smi's inside), C(ok), C(rc), C(differs) (what differed)
    and C(output) (its tail).
  returned: always
  type: list
  elements: dict
engines:
  description: O(engines), in the order they were verified.
  returned: always
  type: list
  elements: str
  sample: [docker, containerd]
runs:
  description: >-
    One per engine - C(engine), C(verified) (null in check mode), C(state) (the engine's CLI and versions), C(checks)
    (as in RV(checks)), C(pulled), C(changed), C(error) (the engine's failure, or null) and C(blocker) (check mode).
  returned: always
  type: list
  elements: dict
containerd:
  description: >-
    containerd's state when it is among O(engines) - C(path) of ctr, C(address), C(namespace), C(running),
    C(client_version), C(server_version), C(runtime_binary) and C(image) (the reference run); else null.
  returned: always
  type: dict
podman:
  description: Podman's state when it is among O(engines) - C(path), C(version), C(cdi) and C(image); else null.
  returned: always
  type: dict
gpu_install_error:
  description: On failure, code 8 and the reason.
  returned: failure
  type: dict
  sample: {"code": 8, "reason": "The image debian:bookworm-slim is not on this host and pulling it is off ..."}
gpu_install_blocker:
  description: In check mode, the failure the real run would have (an absent image with O(pull=false)).
  returned: when a real run would fail
  type: dict
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, verify


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "default": "runtime", "choices": list(verify.MODES)},
            "image": {"type": "str", "default": "debian:bookworm-slim"},
            "pull": {"type": "bool", "default": True},
            "docker": {"type": "str", "default": "docker"},
            "timeout": {"type": "int", "default": verify.DEFAULT_TIMEOUT},
            "nvml_library": {"type": "path"},
            "engines": {"type": "list", "elements": "str", "default": ["docker"], "choices": list(verify.ENGINES)},
            "ctr": {"type": "str", "default": "ctr"},
            "containerd_address": {"type": "path", "default": verify.CONTAINERD_SOCKET},
            "runtime_path": {"type": "str", "default": verify.NVIDIA_RUNTIME},
            "podman": {"type": "str", "default": "podman"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] < 1:
        reason = f"gpu_verify_timeout is {p['timeout']}: it must be at least 1 second."
        module.fail_json(msg=reason, gpu_install_error=errors.error_record(errors.INVALID_INPUT, reason))
    result: Dict[str, Any] = verify.verify(
        mode=p["mode"],
        image=p["image"],
        pull=p["pull"],
        docker=p["docker"],
        timeout=p["timeout"],
        check_mode=module.check_mode,
        nvml_library=p["nvml_library"],
        engines=p["engines"] or ["docker"],
        ctr=p["ctr"],
        containerd_address=p["containerd_address"],
        runtime_path=p["runtime_path"],
        podman=p["podman"],
    )
    error = result.pop("error")
    blocker = result.pop("blocker")
    if error is not None:
        module.fail_json(msg=error["reason"], gpu_install_error=error, **result)
    if result["changed"] and module._diff:
        verb = "pulled" if result["pulled"] else "would pull"
        where = [r["engine"] for r in result["runs"] if r["changed"]]
        into = "" if where in ([], ["docker"]) else f" into {', '.join(where)}"
        result["diff"] = {"prepared": f"gpu_verify {verb} the image {p['image']}{into}, which was not on the host"}
    if blocker is not None:
        module.warn(blocker["reason"])
        result["gpu_install_blocker"] = blocker
    module.exit_json(**result)


if __name__ == "__main__":
    main()
