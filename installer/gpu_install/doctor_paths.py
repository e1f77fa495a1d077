"""The start paths of `gpu-install doctor`: for each way users start a GPU container, whether this host's mode
serves it, and if not, one sentence saying why and what to use instead (README, "Ways to start a GPU container").

The same conventions as ``doctor_checks`` (pure functions over recorded inputs, one record each). A path the mode
promises fails when it cannot work; a path it does not promise is an ``info`` line, so that a healthy host stays
healthy. Facts behind the sentences, measured on the GPU machine (Docker 28.5.2, NVIDIA's
toolkit 1.20.0; docs/gpu-proof/2026-12-07-h100):

* ``--gpus`` and Compose's ``deploy.resources.reservations.devices`` are Docker's device requests: Docker serves
  them only when it found NVIDIA's ``nvidia-container-runtime-hook`` on its PATH when it started (else exit 125,
  "could not select device driver"); releases after 28.5 also through CDI where ``nvidia-cdi-hook`` is installed
  (moby/moby#50228).
* BuildKit, ``docker build``'s builder since Docker 23, ignores ``default-runtime`` (moby/buildkit#1800,
  NVIDIA/nvidia-container-toolkit#351); BuildKit 0.20+ gives a RUN step CDI devices only through the labs frontend.
* NVIDIA's runtime in its default jit-cdi mode: container start 2.03x a container without the GPU (295 ms against
  145 ms, median of 15); gpu-install's CDI spec 1.05x (docs/performance.md).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from .doctor_checks import Check, Inputs, check, docker_version

HOOKS = ("nvidia-container-runtime-hook", "nvidia-cdi-hook")
# Where the toolkit's packages put its binaries, beside PATH (dockerd's PATH is not this process's).
HOOK_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin", "/bin", "/sbin")
CDI_NAMES = "--device nvidia.com/gpu=all (or =0, =GPU-<UUID>)"


def gather_hooks() -> dict[str, str | None]:
    """NVIDIA's hooks that make Docker serve --gpus: {name: path or None}."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *HOOK_DIRS])
    return {name: shutil.which(name, path=search) for name in HOOKS}


# The toolkit's own CDI spec in runtime mode (its nvidia-cdi-refresh units write it; roles/nvidia_container vars).
TOOLKIT_SPEC = "/var/run/cdi/nvidia.yaml"
# The GPU's device nodes a container opens (the driver's nvidia<N>, nvidiactl, nvidia-uvm, nvidia-uvm-tools,
# nvidia-modeset); /dev/nvidia-caps holds MIG capabilities, used only with MIG.
DEVICE_GLOB = "nvidia*"


def gather_engines(facts: dict[str, Any], settings: dict[str, Any], root: str = "/") -> dict[str, Any]:
    """What containerd's and Podman's checks read, for the engines this host has (doctor_checks.engines_of)."""
    from .doctor_checks import engines_of

    engines = engines_of(facts, settings)
    out: dict[str, Any] = {}
    if "containerd" in engines:
        out["containerd"] = gather_containerd(facts)
    if "podman" in engines:
        out["podman"] = gather_podman(settings, root)
    return out


def gather_containerd(facts: dict[str, Any], containerd: str = "containerd") -> dict[str, Any]:
    """``containerd --config PATH config dump`` (the merged configuration containerd would run with; read-only), and
    whether the nvidia runtime's BinaryName exists: {binary, dump, error, runtime_binary_exists}."""
    from .collection import module_utils

    cu = module_utils("containerd")
    binary = shutil.which(containerd, path=os.pathsep.join([os.environ.get("PATH", ""), *HOOK_DIRS]))
    out: dict[str, Any] = {"binary": binary, "dump": None, "error": None, "runtime_binary_exists": None}
    if binary is None:
        return out
    config = str((facts.get("containerd") or {}).get("config_path") or cu.DEFAULT_PATH)
    dump, error = cu.config_dump(binary, config)
    out.update(dump=dump, error=error or None)
    if isinstance(dump, dict):
        version = dump.get("version", 1)
        try:
            sch = cu.schema(version if isinstance(version, int) else 1)
        except cu.ContainerdError:
            return out
        name = cu.Options().runtime_name
        path = cu.get_path(dump, ("plugins", sch.plugin, *sch.runtimes, name, "options", "BinaryName"))
        if isinstance(path, str) and path:
            out["runtime_binary_exists"] = os.path.exists(path)
    return out


def rootless_user() -> dict[str, Any] | None:
    """The user a rootless Podman runs as: this process's user when not root, else sudo's caller; None as root."""
    import grp
    import pwd

    name = None
    if os.geteuid() != 0:
        name = pwd.getpwuid(os.geteuid()).pw_name
    elif os.environ.get("SUDO_USER") and os.environ["SUDO_USER"] != "root":
        name = os.environ["SUDO_USER"]
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = sorted(set(os.getgrouplist(name, entry.pw_gid)))
    groups = []
    for gid in gids:
        try:
            groups.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            groups.append(str(gid))
    return {"name": name, "uid": entry.pw_uid, "gids": gids, "groups": groups}


def gather_podman(settings: dict[str, Any], root: str = "/", user: dict[str, Any] | None = None) -> dict[str, Any]:
    """What rootless Podman needs, read under ``root`` (a host tree in tests): the device nodes' modes and groups,
    the CDI spec of this mode and its directories' modes: {user, devices, paths, spec}."""
    import glob
    import grp
    import stat

    from .collection import module_utils

    mode = settings.get("nvidia_container_mode") or "runtime"
    spec_path = str(module_utils("cdi").DEFAULT_PATH) if mode == "cdi" else TOOLKIT_SPEC

    def under(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    devices = []
    for found in sorted(glob.glob(under("/dev/" + DEVICE_GLOB))):
        try:
            st = os.stat(found)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        shown = "/" + os.path.relpath(found, root) if root != "/" else found
        devices.append({"path": shown, "mode": st.st_mode & 0o7777, "gid": st.st_gid, "group": group})
    paths = []
    for path, is_dir in ((os.path.dirname(spec_path), True), (spec_path, False)):
        try:
            st = os.stat(under(path))
            paths.append({"path": path, "dir": is_dir, "exists": True, "mode": st.st_mode & 0o7777})
        except OSError:
            paths.append({"path": path, "dir": is_dir, "exists": False, "mode": None})
    return {
        "user": user if user is not None or root != "/" else rootless_user(),
        "devices": devices,
        "paths": paths,
        "spec": {"path": spec_path, "exists": paths[-1]["exists"]},
    }


def _context(inputs: Inputs) -> tuple[str, dict[str, Any] | None, str]:
    settings = inputs.get("settings") or {}
    info = (inputs.get("docker") or {}).get("info")
    mode = str(settings.get("nvidia_container_mode") or "runtime")
    shown = str(info.get("ServerVersion") or "unknown") if isinstance(info, dict) else "unknown"
    return mode, info if isinstance(info, dict) else None, shown


def check_gpus_option(inputs: Inputs) -> Check | None:
    """``--gpus`` and Compose's device reservations (the same Docker API)."""
    mode, info, shown = _context(inputs)
    if info is None:
        return None  # the docker check says why
    hooks = inputs.get("hooks") or {}
    version = docker_version(info)
    if mode == "cdi":
        if hooks.get("nvidia-cdi-hook") and version is not None and version > (28, 5):
            return check(
                "gpus_option",
                "info",
                f"Docker {shown} serves --gpus and Compose's device reservations through CDI, since NVIDIA's "
                "nvidia-cdi-hook is installed (moby/moby#50228).",
                f"gpu-install's CDI mode promises {CDI_NAMES}; prefer it.",
            )
        if hooks.get("nvidia-container-runtime-hook"):
            return check(
                "gpus_option",
                "info",
                f"Docker {shown} hands --gpus and Compose's device reservations to NVIDIA's "
                "nvidia-container-runtime-hook, which CDI mode does not install or check.",
                f"Use {CDI_NAMES}, and Compose's devices: list with the same CDI names, or set "
                "nvidia_container_mode: runtime.",
            )
        return check(
            "gpus_option",
            "info",
            f"In CDI mode Docker {shown} refuses --gpus and Compose's deploy.resources.reservations.devices "
            "(exit 125), which need NVIDIA's nvidia-container-runtime-hook.",
            f"Use {CDI_NAMES}, and Compose's devices: list with the same CDI names, or set "
            "nvidia_container_mode: runtime.",
        )
    if info.get("DefaultRuntime") != "nvidia":
        return None  # the docker check fails already
    if not hooks.get("nvidia-container-runtime-hook"):
        return check(
            "gpus_option",
            "fail",
            f"Docker {shown} refuses --gpus and Compose's device reservations (could not select device driver): "
            "NVIDIA's nvidia-container-runtime-hook is not installed.",
            "Run gpu-install apply (it installs the NVIDIA Container Toolkit), then restart Docker, which looks for "
            "the hook when it starts.",
        )
    return check(
        "gpus_option",
        "pass",
        f"Docker {shown} serves --gpus and Compose's device reservations through the nvidia runtime.",
    )


def check_build(inputs: Inputs) -> Check | None:
    """``docker build``: the classic builder runs RUN steps through the default runtime; BuildKit does not."""
    mode, info, shown = _context(inputs)
    if info is None:
        return None
    version = docker_version(info)
    labs = (
        "with BuildKit 0.20+, the labs frontend (# syntax=docker/dockerfile:1-labs) and "
        "RUN --device=nvidia.com/gpu=all, which read CDI specs"
    )
    if mode == "cdi":
        return check(
            "docker_build",
            "info",
            "In CDI mode no docker build RUN step gets the GPU by default: the classic builder has no CDI devices, "
            "and BuildKit ignores Docker's runtimes (moby/buildkit#1800).",
            f"Build {labs}, or set nvidia_container_mode: runtime and build with the classic builder "
            "(DOCKER_BUILDKIT=0 docker build).",
        )
    if info.get("DefaultRuntime") != "nvidia":
        return None
    if version is not None and version < (23, 0):
        found = (
            f"docker build on Docker {shown} uses the classic builder, whose RUN steps get the GPU through the "
            "nvidia runtime; BuildKit (DOCKER_BUILDKIT=1, docker buildx build) ignores default-runtime, so its RUN "
            "steps get none (moby/buildkit#1800)."
        )
    else:
        found = (
            f"docker build on Docker {shown} uses BuildKit, which ignores default-runtime, so its RUN steps get no "
            "GPU (moby/buildkit#1800, NVIDIA/nvidia-container-toolkit#351); the classic builder's do."
        )
    return check(
        "docker_build",
        "info",
        found,
        "For a RUN step that needs the GPU, build with the classic builder (DOCKER_BUILDKIT=0 docker build), "
        f"or {labs}.",
    )


def check_start_cost(inputs: Inputs) -> Check | None:
    """Runtime mode's container start cost (NVIDIA's jit-cdi mode), a hint toward CDI mode."""
    mode, info, _shown = _context(inputs)
    if mode != "runtime" or info is None or info.get("DefaultRuntime") != "nvidia":
        return None
    return check(
        "start_cost",
        "info",
        "NVIDIA's runtime, in its default jit-cdi mode, generates a CDI spec at each GPU container's start: "
        "measured on an H100, start to exit took 2.03x as long as a container without the GPU.",
        "Where container start time matters, nvidia_container_mode: cdi starts GPU containers in about 1.05x "
        "(docs/performance.md).",
    )


def check_runtime_without_gpu(inputs: Inputs) -> Check | None:
    """Runtime mode on a host with no NVIDIA GPU or no loaded driver: NVIDIA's runtime refuses GPU requests."""
    mode, info, _shown = _context(inputs)
    facts = inputs.get("facts") or {}
    if mode != "runtime" or info is None or "nvidia" not in (info.get("Runtimes") or {}):
        return None
    if facts.get("gpus") and (facts.get("driver") or {}).get("loaded"):
        return None
    return check(
        "runtime_no_gpu",
        "warn",
        "This host has no NVIDIA GPU or no loaded NVIDIA driver, so containers that ask NVIDIA's runtime for GPUs "
        "(NVIDIA_VISIBLE_DEVICES, --gpus, Compose's device reservations) fail to start with the runtime's own "
        "error, while containers that ask for none run.",
        "Load the driver (see the driver check), or run GPU containers on a host with an NVIDIA GPU; an image "
        "built without a GPU (gpu_install_image_build) gets its GPU where it starts.",
    )


def steps(inputs: Inputs) -> list[Callable[[], Check | None]]:
    """The start-path checks, in the order the README's table reads."""
    return [
        lambda: check_runtime_without_gpu(inputs),
        lambda: check_gpus_option(inputs),
        lambda: check_build(inputs),
        lambda: check_start_cost(inputs),
    ]
