# Copyright: gpu-install contributors
# Apache License 2.0
"""The proof that a container sees the GPU (stdlib only).

NVML is read outside (module_utils ``nvml``); then throwaway containers are
started through every path the host's mode promises (``PATHS``), and
``nvidia-smi`` inside each lists the GPU UUIDs it sees:

* mode ``runtime``: Docker's *default* runtime (no ``--runtime``: the point is
  that ``nvidia`` is the default, so the classic ``docker build`` and Compose get
  the GPU too) with ``-e NVIDIA_VISIBLE_DEVICES=all|<index>|<uuid>`` and
  ``-e NVIDIA_DRIVER_CAPABILITIES=utility``; then ``--gpus all`` and
  ``--gpus device=<uuid>`` (Docker's device requests, which Compose's
  ``deploy.resources.reservations.devices`` use too);
* mode ``cdi``: ``--device nvidia.com/gpu=all|<index>|<uuid>`` (the CDI spec
  gpu-install writes names every GPU by index and by UUID, plus ``all``).

The checks, per path: ``all`` must see exactly NVML's GPUs, then each GPU alone
(by its index and by its UUID; ``--gpus`` by UUID), exactly that GPU and none of
the others. Each check names its ``path``.  ``verify(...)`` returns the result
(``verified``, ``mode``, ``image``, ``nvml``, ``docker``, ``checks``,
``pulled``, ``changed``, ``error``) and never raises; ``error`` is the
``gpu_install_error`` record (code 8) when the proof failed.

In check mode nothing is started and nothing is pulled: NVML, the Docker CLI,
the daemon and the image are looked at (read-only) and the checks list the
commands that would run, with ``ok`` and ``seen`` null and ``verified`` null;
nothing fails (a plan on a host whose driver is not installed yet is normal).

Engines (``engines``, the host's resolved ``ansible_facts.gpu_install.engines``; default Docker alone): the proof
runs once per engine, on the same NVML view, each engine's checks named after it (Docker's names stay as above):

* ``containerd``, through its own CLI ``ctr`` in a namespace of gpu-install's (``gpu-install``; the image is
  pulled there when absent, by its fully qualified name). Runtime mode: ``ctr run --runtime io.containerd.runc.v2
  --runc-binary <nvidia-container-runtime> --env NVIDIA_VISIBLE_DEVICES=all|<index>|<uuid>``: ``ctr`` does not
  read the CRI plugin's runtimes, so the NVIDIA runtime is named as the runc binary of containerd's runc shim,
  the runtime the CRI entry ``runtimes.nvidia`` configures. CDI mode: ``ctr`` 2.0 and newer inject CDI devices
  given to ``--device`` as qualified names (``--device nvidia.com/gpu=all``; containerd commit d3887b2e6 "Support
  CDI devices in ctr --device flag", cmd/ctr/commands/run/run_unix.go, first released in v2.0.0); ``ctr`` 1.7's
  ``--device`` takes device paths only, so there the container asks NVIDIA's runtime for the CDI names
  (``NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all``), which it resolves from the same spec (its ``auto`` mode turns
  to ``cdi`` when every requested device is a qualified CDI name: internal/info/auto.go and
  internal/config/image/cuda_image.go ``OnlyFullyQualifiedCDIDevices`` in NVIDIA's toolkit 1.20.0).
* ``podman``: ``podman run --rm --network none --device nvidia.com/gpu=all|<index>|<uuid>`` (CDI, Podman 4.1 and
  newer) in both modes (runtime mode keeps the toolkit's own spec current), then on Podman 5 ``--gpus all`` and
  ``--gpus <uuid>``, which Podman turns into ``nvidia.com/gpu=<value>`` CDI devices (containers/podman commit
  46cfc9858f "Make --gpus work with nvidia gpus", pkg/specgenutil/specgen.go, first released in v5.0.0).

The result's existing keys keep their meaning (``docker`` is Docker's state, ``checks`` every engine's checks in
order, each naming its ``engine``); ``engines`` lists the engines verified and ``runs`` each engine's run
(``engine``, ``verified``, ``state``, ``checks``, ``pulled``, ``error``). The first failing engine's reason is the
result's ``error``; every engine is tried even after one failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, nvml

MODES = ("runtime", "cdi")
CDI_KIND = "nvidia.com/gpu"
# How a container asks for GPUs: the paths each mode promises, the first one checked by index as well.
PATH_ENV = "NVIDIA_VISIBLE_DEVICES"  # -e NVIDIA_VISIBLE_DEVICES=..., through Docker's default runtime
PATH_GPUS = "--gpus"  # Docker's device requests (--gpus, Compose's deploy.resources.reservations.devices)
PATH_CDI = "--device"  # --device nvidia.com/gpu=..., Docker's CDI
PATHS = {"runtime": (PATH_ENV, PATH_GPUS), "cdi": (PATH_CDI,)}
# ctr 1.7 in cdi mode: the CDI names go to NVIDIA's runtime through its variable (ctr 1.7 has no CDI flag).
PATH_ENV_CDI = "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu"
ENGINES = ("docker", "containerd", "podman")
# containerd through ctr: a namespace of gpu-install's, containerd's default socket, the runc shim's runtime type.
CTR_NAMESPACE = "gpu-install"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
RUNC_SHIM = "io.containerd.runc.v2"
NVIDIA_RUNTIME = "nvidia-container-runtime"
CTR_CDI_MAJOR = 2  # ctr's --device takes qualified CDI names from containerd 2.0 (commit d3887b2e6)
PODMAN_CDI = (4, 1)  # Podman reads CDI specs from 4.1
PODMAN_GPUS_MAJOR = 5  # Podman maps --gpus to nvidia.com/gpu CDI devices from 5.0 (commit 46cfc9858f)
# Docker's reference normalisation (distribution/reference ParseNormalizedNamed): a name without a registry is
# Docker Hub's, and a single-component one is under library/. ctr and podman pull need the whole name.
DEFAULT_REGISTRY = "docker.io"
# NVIDIA's runtime mounts nvidia-smi at its path on the host (internal/discover in the toolkit's source), which
# may be off an image's PATH (/usr/local/nvidia/bin on the GPU machine): the container's PATH gets the host's
# directory of nvidia-smi after the image's own, so that the image's nvidia-smi is tried first.
SMI_HOST_DIRS = ("/usr/local/nvidia/bin", "/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/sbin")
DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # an image without PATH
SMI_ARGS = ("--query-gpu=uuid", "--format=csv,noheader")
DEFAULT_TIMEOUT = 120
OUTPUT_TAIL = 2000  # characters of a container's output kept in the result
# Where a bare Docker CLI name is looked for beyond PATH (a module's PATH may lack /snap/bin).
EXTRA_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/snap/bin")

_UUID = r"GPU-[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
_CSV_LINE = re.compile(rf"^\s*({_UUID})\s*,?\s*$")
_L_LINE = re.compile(rf"^GPU\s+\d+:.*\(UUID:\s*({_UUID})\s*\)")

Runner = Callable[[Sequence[str], float], Tuple[Optional[int], str]]


class VerifyError(errors.Failure):
    """Verification failed (exit class 8)."""

    def __init__(self, reason: str) -> None:
        super().__init__(errors.VERIFY_FAILED, reason)


# ---------------------------------------------------------------------------
# Pure parts: parsing, selection, argv, comparison
# ---------------------------------------------------------------------------
def parse_smi(text: str) -> List[str]:
    """GPU UUIDs in nvidia-smi's output, in order: ``--query-gpu=uuid --format=csv,noheader`` or ``-L``.

    MIG lines, banners, warnings and blank lines are ignored; a UUID listed twice is kept twice.
    """
    found: List[str] = []
    for line in text.splitlines():
        match = _CSV_LINE.match(line) or _L_LINE.match(line.strip())
        if match:
            found.append(match.group(1))
    return found


def engine_paths(engine: str, mode: str, version: Optional[str] = None) -> Tuple[str, ...]:
    """The paths through which ``engine`` gives containers GPUs in ``mode`` (``version``: ctr's or Podman's).

    Docker: ``PATHS``. containerd: the NVIDIA runtime as runc's binary with ``NVIDIA_VISIBLE_DEVICES`` (runtime
    mode); ctr's ``--device`` with CDI names from ctr 2.0, NVIDIA's runtime given the CDI names before (cdi mode).
    Podman: ``--device`` with CDI names in both modes, and ``--gpus`` from Podman 5.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if engine == "docker":
        return PATHS[mode]
    major = _major(version)
    if engine == "containerd":
        if mode == "runtime":
            return (PATH_ENV,)
        return (PATH_CDI,) if major is None or major >= CTR_CDI_MAJOR else (PATH_ENV_CDI,)
    if engine == "podman":
        return (PATH_CDI, PATH_GPUS) if major is None or major >= PODMAN_GPUS_MAJOR else (PATH_CDI,)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")


def plan_checks(
    gpus: Sequence[Dict[str, Any]], mode: str = "cdi", engine: str = "docker", version: Optional[str] = None
) -> List[Dict[str, Any]]:
    """The checks for NVML's GPUs, per path of ``mode`` (``engine_paths``): every GPU together, then each GPU alone.

    On the mode's first path each GPU is selected by index and by UUID; on ``--gpus`` by UUID (Docker's
    ``device=<uuid>``, Podman's ``<uuid>``). A container given one GPU must see exactly that one and none of the
    others (the isolation NVIDIA_VISIBLE_DEVICES, --gpus and the CDI device names promise). Each check is
    ``{"name", "path", "selector", "expected"}``; names are unique (Docker's: ``all``, ``index 0``,
    ``UUID GPU-...`` on the first path, ``--gpus all``, ``--gpus device=GPU-...`` on the second; another engine's
    are the same prefixed with the engine, ``containerd all``, ``podman --gpus GPU-...``). With no GPU known
    (check mode before the driver is in): ``all`` and ``index 0`` (and ``--gpus all``) with ``expected`` null.
    """
    first, *others = engine_paths(engine, mode, version)
    prefix = "" if engine == "docker" else f"{engine} "
    uuids = [g.get("uuid") for g in gpus]
    known = bool(gpus) and all(uuids)
    every = sorted(str(u) for u in uuids) if known else None

    def one(name: str, path: str, selector: str, expected: Optional[List[str]]) -> Dict[str, Any]:
        return {"name": prefix + name, "path": path, "selector": selector, "expected": expected}

    checks = [one("all", first, "all", every)]
    if not known:
        checks.append(one("index 0", first, "0", None))
    else:
        for position, gpu in enumerate(gpus):
            index = gpu.get("index", position)
            checks.append(one(f"index {index}", first, str(index), [gpu["uuid"]]))
            checks.append(one(f"UUID {gpu['uuid']}", first, str(gpu["uuid"]), [gpu["uuid"]]))
    for path in others:  # --gpus: all, then each GPU by UUID
        checks.append(one(f"{path} all", path, "all", every))
        for gpu in gpus if known else []:
            selector = f"device={gpu['uuid']}" if engine == "docker" else str(gpu["uuid"])
            checks.append(one(f"{path} {selector}", path, selector, [gpu["uuid"]]))
    return checks


def how(path: str, selector: str) -> str:
    """How a check's container asks for its GPUs, as a user writes it: ``--gpus device=GPU-...``."""
    if path == PATH_ENV:
        return f"{PATH_ENV}={selector}"
    if path == PATH_ENV_CDI:
        return f"{PATH_ENV_CDI}={selector}"
    if path == PATH_GPUS:
        return f"{PATH_GPUS} {selector}"
    return f"{PATH_CDI} {CDI_KIND}={selector}"


def full_reference(image: str) -> str:
    """``image`` as ctr and Podman pull it: with its registry (docker.io) and, on Docker Hub, library/ for a
    single-component name (``debian:bookworm-slim`` -> ``docker.io/library/debian:bookworm-slim``)."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return image
    if not sep:
        return f"{DEFAULT_REGISTRY}/library/{image}"
    return f"{DEFAULT_REGISTRY}/{image}"


def smi_search_path(image_env: Optional[Sequence[str]], host_smi: Optional[str]) -> Optional[str]:
    """The container's PATH that finds nvidia-smi where the image has it, then where NVIDIA's runtime mounts it.

    ``image_env``: the image's Config.Env (None: unknown, Docker's default PATH is assumed); ``host_smi``: the
    host's nvidia-smi. None when the image's PATH already holds that directory (nothing to add).
    """
    current = DOCKER_DEFAULT_PATH
    for item in image_env or []:
        if str(item).startswith("PATH="):
            current = str(item)[len("PATH=") :]
    if not host_smi:
        return None
    where = os.path.dirname(host_smi)
    if where in current.split(":"):
        return None
    return f"{current}:{where}" if current else where


def host_nvidia_smi() -> Optional[str]:
    """The host's nvidia-smi (PATH, then the driver directories NVIDIA's runtime also searches), or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *SMI_HOST_DIRS])
    return shutil.which("nvidia-smi", path=search)


def container_argv(
    docker: str,
    mode: str,
    image: str,
    selector: str,
    name: Optional[str] = None,
    command: str = "nvidia-smi",
    via: Optional[str] = None,
    search_path: Optional[str] = None,
) -> List[str]:
    """The ``docker run`` argv that runs nvidia-smi in a throwaway container given ``selector``'s GPUs.

    ``via``: the path, one of the mode's ``PATHS`` (default its first). ``search_path``: the container's PATH, where
    nvidia-smi may be mounted off the image's own (``smi_search_path``). ``--entrypoint`` bypasses an image's
    own entrypoint (NVIDIA's CUDA images print a banner through theirs).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    via = via or PATHS[mode][0]
    if via not in PATHS[mode]:
        raise ValueError(f"mode {mode} gives containers GPUs through {', '.join(PATHS[mode])}, not {via}")
    argv = [docker, "run", "--rm", "--network", "none"]
    if name:
        argv += ["--name", name]
    if via == PATH_ENV:
        argv += ["-e", f"NVIDIA_VISIBLE_DEVICES={selector}", "-e", "NVIDIA_DRIVER_CAPABILITIES=utility"]
    elif via == PATH_GPUS:
        argv += ["--gpus", selector]
    else:
        argv += ["--device", f"{CDI_KIND}={selector}"]
    if search_path:
        argv += ["-e", f"PATH={search_path}"]
    argv += ["--entrypoint", command, image, *SMI_ARGS]
    return argv


def ctr_argv(
    ctr: str,
    mode: str,
    ref: str,
    selector: str,
    container_id: str,
    via: Optional[str] = None,
    address: str = CONTAINERD_SOCKET,
    runtime_binary: Optional[str] = None,
    search_path: Optional[str] = None,
    command: str = "nvidia-smi",
) -> List[str]:
    """The ``ctr run`` argv that runs nvidia-smi in a throwaway containerd container given ``selector``'s GPUs.

    ``via``: one of ``engine_paths("containerd", mode, ...)`` (default the newest ctr's). ``runtime_binary``: NVIDIA's
    runtime, the runc binary of containerd's runc shim on the NVIDIA_VISIBLE_DEVICES paths. ctr starts containers in
    a network namespace of their own with loopback only (no CNI unless ``--cni``), and the arguments after the
    container id replace the image's entrypoint and command.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    via = via or engine_paths("containerd", mode)[0]
    argv = [ctr, "--address", address, "--namespace", CTR_NAMESPACE, "run", "--rm"]
    if via in (PATH_ENV, PATH_ENV_CDI):
        argv += ["--runtime", RUNC_SHIM, "--runc-binary", runtime_binary or NVIDIA_RUNTIME]
        value = selector if via == PATH_ENV else f"{CDI_KIND}={selector}"
        argv += ["--env", f"NVIDIA_VISIBLE_DEVICES={value}", "--env", "NVIDIA_DRIVER_CAPABILITIES=utility"]
    elif via == PATH_CDI:
        argv += ["--device", f"{CDI_KIND}={selector}"]
    else:
        raise ValueError(f"containerd gives containers GPUs through ctr's --device or NVIDIA's runtime, not {via}")
    if search_path:
        argv += ["--env", f"PATH={search_path}"]
    return argv + [ref, container_id, command, *SMI_ARGS]


def podman_argv(
    podman: str,
    image: str,
    selector: str,
    name: Optional[str] = None,
    via: str = PATH_CDI,
    search_path: Optional[str] = None,
    command: str = "nvidia-smi",
) -> List[str]:
    """The ``podman run`` argv: ``--device nvidia.com/gpu=<selector>`` (CDI), or ``--gpus <selector>`` (Podman 5)."""
    argv = [podman, "run", "--rm", "--network", "none"]
    if name:
        argv += ["--name", name]
    if via == PATH_CDI:
        argv += ["--device", f"{CDI_KIND}={selector}"]
    elif via == PATH_GPUS:
        argv += ["--gpus", selector]
    else:
        raise ValueError(f"Podman gives containers GPUs through --device or --gpus, not {via}")
    if search_path:
        argv += ["-e", f"PATH={search_path}"]
    return argv + ["--entrypoint", command, image, *SMI_ARGS]


def compare(expected: Sequence[str], seen: Sequence[str]) -> Tuple[bool, str]:
    """(ok, what differed): ``seen`` must be exactly ``expected``, order aside, each GPU once.

    What differed reads like "missing GPU-b; unexpected GPU-c; GPU-a twice".
    """
    if sorted(expected) == sorted(seen):
        return True, ""
    parts = []
    missing = [u for u in expected if u not in seen]
    extra = [u for u in seen if u not in expected]
    dupes = sorted({u for u in seen if list(seen).count(u) > 1})
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("unexpected " + ", ".join(dict.fromkeys(extra)))
    if dupes:
        parts.append(", ".join(dupes) + " twice")
    return False, "; ".join(parts)


def _tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _last_line(text: str) -> str:
    """The line that says what went wrong: Docker's error line if there is one, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors_said = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("Run '")]
    pick = errors_said[-1] if errors_said else lines[-1] if lines else ""
    return pick[:300]


def _major(version: Optional[str]) -> Optional[int]:
    match = re.match(r"^(\d+)\.", version or "")
    return int(match.group(1)) if match else None


MISMATCH_FIX = (
    "the loaded kernel module and the driver's libraries are of different versions (a driver upgrade without a "
    "reboot): reboot, or reload the nvidia kernel modules"
)


def _common_fix(output: str) -> Optional[str]:
    """The fixes that do not depend on the engine: the image's CUDA requirement, a driver split by an upgrade."""
    if "unsatisfied condition: cuda" in output:
        return (
            "the image requires a newer CUDA than this driver supports (its NVIDIA_REQUIRE_CUDA): set gpu_verify_image "
            "to an image without that requirement (debian:bookworm-slim, the default), or upgrade the driver"
        )
    if "version mismatch" in output.lower():
        return MISMATCH_FIX
    return None


def _fix_containerd(mode: str, state: Dict[str, Any], output: str = "", path: Optional[str] = None) -> str:
    """What to do when a containerd container did not see its GPUs."""
    common = _common_fix(output)
    if common:
        return common
    if path == PATH_ENV:
        return (
            f"NVIDIA's runtime {state.get('runtime_binary') or NVIDIA_RUNTIME} did not give the container its GPUs: "
            "run gpu-install apply (nvidia_container_mode: runtime), which installs the NVIDIA Container Toolkit and "
            "adds the nvidia runtime to containerd, and check that the toolkit matches the driver"
        )
    return (
        "the CDI device nvidia.com/gpu was not resolved from the spec: regenerate the CDI spec with gpu-install apply "
        "(nvidia_container_mode: cdi)"
    )


def _fix_podman(mode: str, state: Dict[str, Any], output: str = "", path: Optional[str] = None) -> str:
    """What to do when a Podman container did not see its GPUs."""
    common = _common_fix(output)
    if common:
        return common
    spec = "gpu-install's spec (nvidia_container_mode: cdi)" if mode == "cdi" else "the toolkit's spec (runtime mode)"
    return (
        f"Podman gives containers GPUs from the CDI spec in /etc/cdi or /var/run/cdi: rewrite {spec} with "
        "gpu-install apply, and check it with podman run --device nvidia.com/gpu=all"
    )


def _fix(mode: str, state: Dict[str, Any], output: str = "", path: Optional[str] = None) -> str:
    """What to do when a container did not see the GPUs it should have, by mode and path, what dockerd and the
    container said."""
    common = _common_fix(output)
    if common:
        return common
    if path == PATH_GPUS and "could not select device driver" in output:
        return (
            "Docker serves --gpus only when it found NVIDIA's nvidia-container-runtime-hook on its PATH when it "
            "started: install the NVIDIA Container Toolkit (gpu-install apply, nvidia_container_mode: runtime) and "
            "restart Docker"
        )
    if mode == "runtime":
        default_runtime = state.get("default_runtime")
        if default_runtime and default_runtime != "nvidia":
            return (
                f"Docker's default runtime is {default_runtime}, not nvidia: run gpu-install apply "
                "(nvidia_container_mode: runtime), which makes nvidia the default"
            )
        return (
            "check that Docker's default runtime is nvidia (docker info) and that the NVIDIA Container Toolkit "
            "matches the driver, then run gpu-install apply again"
        )
    major = _major(state.get("server_version"))
    if major is not None and major < 25:
        return (
            f"Docker {state.get('server_version')} does not read CDI specs: upgrade Docker to 25 or newer, or use "
            "nvidia_container_mode: runtime"
        )
    return (
        "regenerate the CDI spec with gpu-install apply (nvidia_container_mode: cdi), which also enables CDI in "
        "Docker 25 to 27"
    )


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
def run_command(argv: Sequence[str], timeout: float) -> Tuple[Optional[int], str]:
    """(exit code or None on timeout, stdout and stderr together)."""
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output or b""
        return None, out.decode("utf-8", errors="replace") if isinstance(out, bytes) else str(out)
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", errors="replace")


def find_cli(name: str, extra: Sequence[str] = EXTRA_BIN_DIRS) -> Optional[str]:
    """A command's path: ``name`` itself when it is a path, else looked up on PATH and ``extra``."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    return shutil.which(name, path=search)


def find_docker(docker: str) -> Optional[str]:
    """The Docker CLI's path: ``docker`` itself when it is a path, else looked up on PATH and EXTRA_BIN_DIRS."""
    return find_cli(docker)


def _section_version(text: str, section: str) -> Optional[str]:
    """``Version:`` of a ``Client:``/``Server:`` section of ``ctr version``'s output."""
    inside = False
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            inside = line.strip() == f"{section}:"
            continue
        key, _sep, value = line.strip().partition(":")
        if inside and key == "Version" and value.strip():
            return value.strip()
    return None


def containerd_state(ctr: str, address: str, timeout: float, runner: Runner = run_command) -> Dict[str, Any]:
    """{running, client_version (ctr's), server_version, error} from ``ctr version`` (read-only; ctr prints its own
    version before it dials containerd)."""
    rc, out = runner([ctr, "--address", address, "--connect-timeout", "10s", "version"], timeout)
    client, server = _section_version(out, "Client"), _section_version(out, "Server")
    if rc != 0 or not server:
        why = "timed out" if rc is None else _last_line(out) or f"exit code {rc}"
        return {"running": False, "client_version": client, "server_version": None, "error": why}
    return {"running": True, "client_version": client, "server_version": server, "error": None}


def ctr_images(ctr: str, address: str, timeout: float, runner: Runner = run_command) -> Optional[List[str]]:
    """The image names in gpu-install's containerd namespace (``ctr images ls -q``), or None when ctr failed."""
    rc, out = runner([ctr, "--address", address, "--namespace", CTR_NAMESPACE, "images", "ls", "-q"], timeout)
    return [ln.strip() for ln in out.splitlines() if ln.strip()] if rc == 0 else None


def podman_version(podman: str, timeout: float, runner: Runner = run_command) -> Tuple[Optional[str], str]:
    """(Podman's version from ``podman --version``, or None; what it said)."""
    rc, out = runner([podman, "--version"], timeout)
    match = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?\S*)", out)
    return (match.group(1) if rc == 0 and match else None), out


def _version_tuple(version: Optional[str]) -> Tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", re.split(r"[^0-9.]", version or "", maxsplit=1)[0])[:3])


def docker_state(docker: str, timeout: float, runner: Runner = run_command) -> Dict[str, Any]:
    """{running, server_version, default_runtime, error} from ``docker info`` (read-only)."""
    rc, out = runner([docker, "info", "--format", "{{.ServerVersion}}|{{.DefaultRuntime}}"], timeout)
    line = out.strip().splitlines()[-1].strip() if out.strip() else ""
    version, _sep, runtime = line.partition("|")
    if rc != 0 or not version or not _sep:
        why = "timed out" if rc is None else _last_line(out) or f"exit code {rc}"
        return {"running": False, "server_version": None, "default_runtime": None, "error": why}
    return {"running": True, "server_version": version, "default_runtime": runtime or None, "error": None}


def image_env(docker: str, image: str, timeout: float, runner: Runner = run_command) -> Optional[List[str]]:
    """The image's Config.Env (``docker image inspect``), or None when the image is not on the host."""
    rc, out = runner([docker, "image", "inspect", "--format", "{{json .Config.Env}}", image], timeout)
    if rc != 0:
        return None
    try:
        env = json.loads(out.strip().splitlines()[-1]) if out.strip() else []
    except ValueError:
        env = []
    return [str(e) for e in env] if isinstance(env, list) else []


def image_present(docker: str, image: str, timeout: float, runner: Runner = run_command) -> bool:
    return image_env(docker, image, timeout, runner) is not None


# ---------------------------------------------------------------------------
# The proof
# ---------------------------------------------------------------------------
def _result(mode: str, image: str, docker: str, engines: Sequence[str] = ("docker",)) -> Dict[str, Any]:
    return {
        "verified": False,
        "mode": mode,
        "image": image,
        "nvml": None,
        "docker": {"path": docker, "running": None, "server_version": None, "default_runtime": None},
        "checks": [],
        "pulled": False,
        "changed": False,
        "error": None,
        "blocker": None,
        "engines": list(engines),
        "runs": [],
        "containerd": None,
        "podman": None,
    }


def _fail(result: Dict[str, Any], reason: str) -> Dict[str, Any]:
    result["verified"] = False
    result["error"] = VerifyError(reason).record()
    return result


def _run(engine: str, state: Dict[str, Any]) -> Dict[str, Any]:
    """One engine's run: its verdict, its state (CLI, daemon, versions), its checks, its pull, its error."""
    return {
        "engine": engine,
        "verified": False,
        "state": state,
        "checks": [],
        "pulled": False,
        "changed": False,
        "error": None,
        "blocker": None,
    }


ArgvFor = Callable[[Dict[str, Any], Optional[str]], List[str]]
Fixer = Callable[[str, Dict[str, Any], str, Optional[str]], str]


def _run_check(
    check: Dict[str, Any], argv: List[str], cleanup: Sequence[List[str]], timeout: float, runner: Runner, engine: str
) -> Dict[str, Any]:
    rc, out = runner(argv, timeout)
    if rc is None:  # the CLI was killed; the container may still run: take it away
        for step in cleanup:
            runner(step, 30)
    seen = parse_smi(out) if rc == 0 else []
    ok, differs = compare(check["expected"] or [], seen) if rc == 0 else (False, "")
    return {
        "name": check["name"],
        "engine": engine,
        "path": check["path"],
        "selector": check["selector"],
        "argv": argv,
        "expected": check["expected"],
        "seen": seen,
        "ok": ok,
        "rc": rc,
        "differs": differs,
        "output": _tail(out),
    }


def _check_reason(check: Dict[str, Any], mode: str, timeout: float, state: Dict[str, Any], fix: Fixer = _fix) -> str:
    asked = how(check["path"], check["selector"])
    label = check["name"] if check.get("engine", "docker") == "docker" else check["name"].split(" ", 1)[1]
    engine = "" if check.get("engine", "docker") == "docker" else f"{check['engine']} "
    which = f"'{check['name']}'" + (f" ({asked})" if asked != label else "")
    if check["rc"] is None:
        return (
            f"The {engine}container for {which} did not finish within {timeout:g} seconds: check that "
            "nvidia-smi answers on the host (a hung GPU or driver shows in dmesg), or raise gpu_verify_timeout."
        )
    what = fix(mode, state, check["output"], check["path"])
    if check["rc"] != 0:
        line = _last_line(check["output"]) or "no output"
        if check["rc"] == 127 or "executable file not found" in line:
            line += " (nvidia-smi was not put into the container)"
        return f"The {engine}container for {which} failed with exit code {check['rc']} ({line}): {what}."
    seen = ", ".join(check["seen"]) or "no GPU"
    return (
        f"The {engine}container for {which} saw {seen} where NVML on the host gives "
        f"{', '.join(check['expected'] or [])} ({check['differs']}): {what}."
    )


def _planned(engine: str, checks: Sequence[Dict[str, Any]], argv_for: ArgvFor) -> List[Dict[str, Any]]:
    return [
        {
            "name": c["name"],
            "engine": engine,
            "path": c["path"],
            "selector": c["selector"],
            "argv": argv_for(c, None),
            "expected": c["expected"],
            "seen": None,
            "ok": None,
            "rc": None,
            "differs": "",
            "output": "",
        }
        for c in checks
    ]


def _execute(
    run: Dict[str, Any],
    checks: Sequence[Dict[str, Any]],
    argv_for: ArgvFor,
    cleanup_for: Callable[[str], List[List[str]]],
    mode: str,
    timeout: float,
    runner: Runner,
    fix: Fixer,
) -> Dict[str, Any]:
    """One throwaway container per check; the run fails with the first failing check's reason."""
    done: List[Dict[str, Any]] = []
    for check in checks:
        name = f"gpu-install-verify-{uuid.uuid4().hex[:12]}"
        done.append(_run_check(check, argv_for(check, name), cleanup_for(name), timeout, runner, run["engine"]))
        if done[-1]["rc"] is None:
            break  # a hung container would hang the next ones too
    run["checks"] = done
    failed = [c for c in done if not c["ok"]]
    if failed:
        reason = _check_reason(failed[0], mode, timeout, run["state"], fix)
        if len(done) < len(checks):
            reason = reason[:-1] + f" (the remaining {len(checks) - len(done)} check(s) were not run)."
        return _run_fail(run, reason)
    run["verified"] = True
    return run


def _run_fail(run: Dict[str, Any], reason: str) -> Dict[str, Any]:
    run["verified"] = False
    run["error"] = VerifyError(reason).record()
    return run


def _planned_run(run: Dict[str, Any], checks: Sequence[Dict[str, Any]], argv_for: ArgvFor) -> Dict[str, Any]:
    run["checks"] = _planned(run["engine"], checks, argv_for)
    run["verified"] = None
    return run


def _pull_absent(
    run: Dict[str, Any],
    absent: str,
    pull_argv: Sequence[str],
    failed: Callable[[str], str],
    pull: bool,
    check_mode: bool,
    timeout: float,
    runner: Runner,
) -> Optional[Dict[str, Any]]:
    """The image is not in the engine's store: refuse when pulling is off (``absent``; a plan records it as the
    blocker), plan the pull in check mode, else pull it with ``pull_argv`` (``failed(why)`` says a failed pull).
    Returns the failed run, or None to go on (``run["pulled"]`` says whether it pulled)."""
    if not pull:
        if not check_mode:
            return _run_fail(run, absent)
        run["blocker"] = VerifyError(absent).record()  # the real run would fail: a plan says so
    elif check_mode:
        run["changed"] = True  # the real run would pull it
    else:
        rc, out = runner(pull_argv, timeout)
        if rc != 0:
            return _run_fail(run, failed("timed out" if rc is None else _last_line(out) or f"exit code {rc}"))
        run["pulled"] = True
        run["changed"] = True
    return None


def _verify_docker(
    gpus: Sequence[Dict[str, Any]],
    mode: str,
    image: str,
    pull: bool,
    docker: str,
    timeout: float,
    check_mode: bool,
    runner: Runner,
) -> Dict[str, Any]:
    """Docker's run: its default runtime (runtime mode) or its CDI devices (cdi mode)."""
    run = _run("docker", {"path": docker, "running": None, "server_version": None, "default_runtime": None})
    path = find_docker(docker)
    if path is None:
        if check_mode:
            return _planned_run(
                run,
                plan_checks(gpus, mode),
                lambda c, _n: container_argv(docker, mode, image, c["selector"], via=c["path"]),
            )
        return _run_fail(
            run,
            f"The Docker CLI {docker!r} was not found: install Docker (gpu-install apply does), "
            "or name the docker binary (option docker), then verify again.",
        )
    state = docker_state(path, min(timeout, 60), runner)
    run["state"] = {"path": path, **{k: v for k, v in state.items() if k != "error"}}
    if not state["running"]:
        if not check_mode:
            return _run_fail(
                run,
                f"Docker is not running or does not answer ({path} info: {state['error']}): start it "
                "(systemctl start docker) and verify again.",
            )
    env = image_env(path, image, timeout, runner) if state["running"] else None
    if state["running"] and env is None:
        absent = (
            f"The image {image} is not on this host and pulling it is off (gpu_verify_pull: false): "
            "load it (docker load -i FILE) or allow the pull, then verify again."
        )
        failed = _pull_absent(
            run,
            absent,
            [path, "pull", image],
            lambda why: (
                f"Pulling the image {image} failed ({why}): make the registry reachable from dockerd, or load "
                "the image (docker load -i FILE) or name one that is here (gpu_verify_image), then verify again."
            ),
            pull,
            check_mode,
            timeout,
            runner,
        )
        if failed is not None:
            return failed
        if run["pulled"]:
            env = image_env(path, image, timeout, runner)

    checks = plan_checks(gpus, mode)
    search_path = smi_search_path(env, host_nvidia_smi())

    def argv_for(check: Dict[str, Any], name: Optional[str]) -> List[str]:
        return container_argv(path, mode, image, check["selector"], name, via=check["path"], search_path=search_path)

    if check_mode:
        return _planned_run(run, checks, argv_for)
    return _execute(run, checks, argv_for, lambda name: [[path, "rm", "--force", name]], mode, timeout, runner, _fix)


def _verify_containerd(
    gpus: Sequence[Dict[str, Any]],
    mode: str,
    image: str,
    pull: bool,
    ctr: str,
    address: str,
    runtime_path: str,
    timeout: float,
    check_mode: bool,
    runner: Runner,
) -> Dict[str, Any]:
    """containerd's run through ctr, in gpu-install's namespace."""
    ref = full_reference(image)
    state: Dict[str, Any] = {
        "path": ctr,
        "address": address,
        "namespace": CTR_NAMESPACE,
        "running": None,
        "client_version": None,
        "server_version": None,
        "runtime_binary": None,
        "image": ref,
    }
    run = _run("containerd", state)
    path = find_cli(ctr)
    binary = find_cli(runtime_path, (*SMI_HOST_DIRS, *EXTRA_BIN_DIRS))
    state["runtime_binary"] = binary
    search_path = smi_search_path(None, host_nvidia_smi())
    if path is None:
        if check_mode:
            checks = plan_checks(gpus, mode, "containerd")
            return _planned_run(
                run,
                checks,
                lambda c, _n: ctr_argv(ctr, mode, ref, c["selector"], "ID", c["path"], address, binary or runtime_path),
            )
        return _run_fail(
            run,
            f"containerd's CLI {ctr!r} was not found: install it with containerd (Debian's and Ubuntu's containerd "
            "package, Docker's containerd.io), or name it (gpu_verify_ctr), then verify again.",
        )
    found = containerd_state(path, address, min(timeout, 60), runner)
    state.update(path=path, **{k: v for k, v in found.items() if k != "error"})
    if not found["running"] and not check_mode:
        return _run_fail(
            run,
            f"containerd does not answer on {address} ({path} version: {found['error']}): start it "
            "(systemctl start containerd) and verify again.",
        )
    checks = plan_checks(gpus, mode, "containerd", found["client_version"])
    needs_runtime = any(c["path"] in (PATH_ENV, PATH_ENV_CDI) for c in checks)
    if needs_runtime and binary is None and not check_mode:
        why = (
            "ctr gives containers GPUs through it"
            if mode == "runtime"
            else f"ctr {found['client_version']} has no CDI devices (ctr 2.0 has), so the CDI names go through it"
        )
        return _run_fail(
            run,
            f"NVIDIA's runtime {runtime_path!r} was not found and {why}: install the NVIDIA Container Toolkit "
            "(gpu-install apply does), then verify again.",
        )
    if found["running"]:
        names = ctr_images(path, address, timeout, runner)
        present = names is not None and (ref in names or image in names)
        if present and image in (names or []) and ref not in (names or []):
            ref = image
        if not present:
            absent = (
                f"The image {ref} is not in containerd's namespace {CTR_NAMESPACE} and pulling it is off "
                f"(gpu_verify_pull: false): import it (ctr --namespace {CTR_NAMESPACE} images import FILE) or allow "
                "the pull, then verify again."
            )
            failed = _pull_absent(
                run,
                absent,
                [path, "--address", address, "--namespace", CTR_NAMESPACE, "images", "pull", ref],
                lambda why: (
                    f"Pulling the image {ref} into containerd failed ({why}): make the registry reachable "
                    f"from this host, or import the image (ctr --namespace {CTR_NAMESPACE} images import FILE) or name "
                    "one that is there (gpu_verify_image), then verify again."
                ),
                pull,
                check_mode,
                timeout,
                runner,
            )
            if failed is not None:
                return failed
    state["image"] = ref

    def argv_for(check: Dict[str, Any], name: Optional[str]) -> List[str]:
        return ctr_argv(
            path or ctr,
            mode,
            ref,
            check["selector"],
            name or "ID",
            check["path"],
            address,
            binary or runtime_path,
            search_path,
        )

    def cleanup_for(name: str) -> List[List[str]]:
        base = [path or ctr, "--address", address, "--namespace", CTR_NAMESPACE]
        return [
            base + ["tasks", "kill", "--signal", "SIGKILL", name],
            base + ["tasks", "delete", "--force", name],
            base + ["containers", "delete", name],
        ]

    if check_mode:
        return _planned_run(run, checks, argv_for)
    return _execute(run, checks, argv_for, cleanup_for, mode, timeout, runner, _fix_containerd)


def _verify_podman(
    gpus: Sequence[Dict[str, Any]],
    mode: str,
    image: str,
    pull: bool,
    podman: str,
    timeout: float,
    check_mode: bool,
    runner: Runner,
) -> Dict[str, Any]:
    """Podman's run: CDI devices (both modes), and --gpus on Podman 5."""
    state: Dict[str, Any] = {"path": podman, "version": None, "cdi": None, "image": image}
    run = _run("podman", state)
    path = find_cli(podman)
    if path is None:
        if check_mode:
            return _planned_run(
                run,
                plan_checks(gpus, mode, "podman"),
                lambda c, _n: podman_argv(podman, image, c["selector"], via=c["path"]),
            )
        return _run_fail(
            run,
            f"Podman ({podman!r}) was not found: install it, or leave podman out of gpu_install_container_engines, "
            "then verify again.",
        )
    version, said = podman_version(path, min(timeout, 60), runner)
    state.update(path=path, version=version, cdi=version is not None and _version_tuple(version) >= PODMAN_CDI)
    if version is None and not check_mode:
        return _run_fail(run, f"{path} --version did not answer ({_last_line(said) or 'no output'}): reinstall Podman.")
    if version is not None and not state["cdi"] and not check_mode:
        return _run_fail(
            run,
            f"Podman {version} reads no CDI specs (Podman 4.1 and newer do), so its containers cannot get NVIDIA GPUs: "
            "upgrade Podman to 4.1 or newer, then verify again.",
        )
    ref = image
    env = image_env(path, image, timeout, runner) if version else None
    if env is None and version and full_reference(image) != image:
        env = image_env(path, full_reference(image), timeout, runner)
        ref = full_reference(image) if env is not None else image
    if version and env is None:
        absent = (
            f"The image {image} is not in Podman's store and pulling it is off (gpu_verify_pull: false): load it "
            "(podman load -i FILE) or allow the pull, then verify again."
        )
        full = full_reference(image)
        failed = _pull_absent(
            run,
            absent,
            [path, "pull", full],
            lambda why: (
                f"Pulling the image {full} with Podman failed ({why}): make the registry reachable, or load "
                "the image (podman load -i FILE) or name one that is here (gpu_verify_image), then verify again."
            ),
            pull,
            check_mode,
            timeout,
            runner,
        )
        if failed is not None:
            return failed
        if run["pulled"]:
            ref = full
            env = image_env(path, ref, timeout, runner)
    state["image"] = ref
    checks = plan_checks(gpus, mode, "podman", version)
    search_path = smi_search_path(env, host_nvidia_smi())

    def argv_for(check: Dict[str, Any], name: Optional[str]) -> List[str]:
        return podman_argv(path or podman, ref, check["selector"], name, check["path"], search_path)

    if check_mode:
        return _planned_run(run, checks, argv_for)
    return _execute(
        run,
        checks,
        argv_for,
        lambda name: [[path or podman, "rm", "--force", name]],
        mode,
        timeout,
        runner,
        _fix_podman,
    )


def verify(
    mode: str = "runtime",
    image: str = "debian:bookworm-slim",
    pull: bool = True,
    docker: str = "docker",
    timeout: float = DEFAULT_TIMEOUT,
    check_mode: bool = False,
    nvml_library: Optional[str] = None,
    runner: Runner = run_command,
    engines: Sequence[str] = ("docker",),
    ctr: str = "ctr",
    containerd_address: str = CONTAINERD_SOCKET,
    runtime_path: str = NVIDIA_RUNTIME,
    podman: str = "podman",
) -> Dict[str, Any]:
    """Prove that containers started through ``mode`` on each of ``engines`` see NVML's GPUs; the result dict,
    never raises."""
    engines = list(dict.fromkeys(engines or ["docker"]))
    result = _result(mode, image, docker, engines)
    if mode not in MODES:
        return _fail(result, f"nvidia_container_mode is {mode!r}: verify knows {' and '.join(MODES)}.")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        return _fail(result, f"verify knows the engines {', '.join(ENGINES)}, not {', '.join(unknown)}.")

    # Outside: NVML is the truth the containers are compared with.
    outside = nvml.read(nvml_library)
    result["nvml"] = outside
    gpus = outside.get("gpus") or []
    if not check_mode:
        if not outside.get("available"):
            error = str(outside.get("error"))
            fix = (
                MISMATCH_FIX
                if "version mismatch" in error.lower()
                else "install and load the NVIDIA driver (gpu-install apply)"
            )
            return _fail(
                result,
                f"NVML cannot be read on the host, so containers have nothing to be compared with: {error}; {fix}, "
                "then verify again.",
            )
        if not gpus:
            return _fail(
                result,
                f"NVML (driver {outside.get('driver_version')}) lists no GPU on the host: check that the GPU is "
                "attached and not held by another driver (vfio-pci), then verify again.",
            )
        broken = [g for g in gpus if not g.get("uuid")]
        if broken:
            g = broken[0]
            return _fail(
                result,
                f"NVML cannot read GPU {g.get('index')} on the host ({g.get('error')}): check the GPU with "
                "nvidia-smi and dmesg (Xid errors), reset or replace it, then verify again.",
            )

    # Inside, per engine.
    for engine in engines:
        if engine == "docker":
            run = _verify_docker(gpus, mode, image, pull, docker, timeout, check_mode, runner)
            result["docker"] = run["state"]
        elif engine == "containerd":
            run = _verify_containerd(
                gpus, mode, image, pull, ctr, containerd_address, runtime_path, timeout, check_mode, runner
            )
            result["containerd"] = run["state"]
        else:
            run = _verify_podman(gpus, mode, image, pull, podman, timeout, check_mode, runner)
            result["podman"] = run["state"]
        result["runs"].append(run)
        result["checks"].extend(run["checks"])
        result["pulled"] = result["pulled"] or run["pulled"]
        result["changed"] = result["changed"] or run["changed"]
        if result["blocker"] is None and run["blocker"] is not None:
            result["blocker"] = run["blocker"]
    if check_mode:
        result["verified"] = None
        return result
    failed = [run for run in result["runs"] if run["error"] is not None]
    if failed:
        result["verified"] = False
        result["error"] = failed[0]["error"]
        return result
    result["verified"] = True
    return result
