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


def plan_checks(gpus: Sequence[Dict[str, Any]], mode: str = "cdi") -> List[Dict[str, Any]]:
    """The checks for NVML's GPUs, per path of ``mode`` (``PATHS``): every GPU together, then each GPU alone.

    On the mode's first path each GPU is selected by index and by UUID; on ``--gpus`` (runtime mode) by UUID
    (``device=<uuid>``). A container given one GPU must see exactly that one and none of the others (the
    isolation NVIDIA_VISIBLE_DEVICES, --gpus and the CDI device names promise). Each check is ``{"name",
    "path", "selector", "expected"}``; names are unique (``all``, ``index 0``, ``UUID GPU-...`` on the first
    path, ``--gpus all``, ``--gpus device=GPU-...`` on the second). With no GPU known (check mode before the
    driver is in): ``all`` and ``index 0`` (and ``--gpus all``) with ``expected`` null.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    first, *others = PATHS[mode]
    uuids = [g.get("uuid") for g in gpus]
    known = bool(gpus) and all(uuids)
    every = sorted(str(u) for u in uuids) if known else None
    checks = [{"name": "all", "path": first, "selector": "all", "expected": every}]
    if not known:
        checks.append({"name": "index 0", "path": first, "selector": "0", "expected": None})
    else:
        for position, gpu in enumerate(gpus):
            index = gpu.get("index", position)
            one = [gpu["uuid"]]
            checks.append({"name": f"index {index}", "path": first, "selector": str(index), "expected": one})
            checks.append({"name": f"UUID {gpu['uuid']}", "path": first, "selector": str(gpu["uuid"]), "expected": one})
    for path in others:  # --gpus: all, then each GPU by UUID
        checks.append({"name": f"{path} all", "path": path, "selector": "all", "expected": every})
        for gpu in gpus if known else []:
            selector = f"device={gpu['uuid']}"
            checks.append({"name": f"{path} {selector}", "path": path, "selector": selector, "expected": [gpu["uuid"]]})
    return checks


def how(path: str, selector: str) -> str:
    """How a check's container asks for its GPUs, as a user writes it: ``--gpus device=GPU-...``."""
    if path == PATH_ENV:
        return f"{PATH_ENV}={selector}"
    if path == PATH_GPUS:
        return f"{PATH_GPUS} {selector}"
    return f"{PATH_CDI} {CDI_KIND}={selector}"


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


def _fix(mode: str, state: Dict[str, Any], output: str = "", path: Optional[str] = None) -> str:
    """What to do when a container did not see the GPUs it should have, by mode and path, what dockerd and the
    container said."""
    if "unsatisfied condition: cuda" in output:
        return (
            "the image requires a newer CUDA than this driver supports (its NVIDIA_REQUIRE_CUDA): set gpu_verify_image "
            "to an image without that requirement (debian:bookworm-slim, the default), or upgrade the driver"
        )
    if "version mismatch" in output.lower():
        return MISMATCH_FIX
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


def find_docker(docker: str) -> Optional[str]:
    """The Docker CLI's path: ``docker`` itself when it is a path, else looked up on PATH and EXTRA_BIN_DIRS."""
    if os.sep in docker:
        return docker if os.path.isfile(docker) and os.access(docker, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_BIN_DIRS])
    return shutil.which(docker, path=search)


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
def _result(mode: str, image: str, docker: str) -> Dict[str, Any]:
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
    }


def _fail(result: Dict[str, Any], reason: str) -> Dict[str, Any]:
    result["verified"] = False
    result["error"] = VerifyError(reason).record()
    return result


def _run_check(
    check: Dict[str, Any], argv: List[str], docker: str, name: str, timeout: float, runner: Runner
) -> Dict[str, Any]:
    rc, out = runner(argv, timeout)
    if rc is None:  # the CLI was killed; the container may still run: take it away
        runner([docker, "rm", "--force", name], 30)
    seen = parse_smi(out) if rc == 0 else []
    ok, differs = compare(check["expected"] or [], seen) if rc == 0 else (False, "")
    return {
        "name": check["name"],
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


def _check_reason(check: Dict[str, Any], mode: str, timeout: float, state: Dict[str, Any]) -> str:
    asked = how(check["path"], check["selector"])
    which = f"'{check['name']}'" + (f" ({asked})" if asked != check["name"] else "")
    if check["rc"] is None:
        return (
            f"The container for {which} did not finish within {timeout:g} seconds: check that "
            "nvidia-smi answers on the host (a hung GPU or driver shows in dmesg), or raise gpu_verify_timeout."
        )
    fix = _fix(mode, state, check["output"], check["path"])
    if check["rc"] != 0:
        line = _last_line(check["output"]) or "no output"
        if check["rc"] == 127 or "executable file not found" in line:
            line += " (nvidia-smi was not put into the container)"
        return f"The container for {which} failed with exit code {check['rc']} ({line}): {fix}."
    seen = ", ".join(check["seen"]) or "no GPU"
    return (
        f"The container for {which} saw {seen} where NVML on the host gives "
        f"{', '.join(check['expected'] or [])} ({check['differs']}): {fix}."
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
) -> Dict[str, Any]:
    """Prove that containers started through ``mode`` see NVML's GPUs; the result dict, never raises."""
    result = _result(mode, image, docker)
    if mode not in MODES:
        return _fail(result, f"nvidia_container_mode is {mode!r}: verify knows {' and '.join(MODES)}.")

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

    # The Docker CLI, the daemon, the image.
    path = find_docker(docker)
    if path is None:
        if check_mode:
            result["checks"] = _planned(plan_checks(gpus, mode), docker, mode, image, None)
            result["verified"] = None
            return result
        return _fail(
            result,
            f"The Docker CLI {docker!r} was not found: install Docker (gpu-install apply does), "
            "or name the docker binary (option docker), then verify again.",
        )
    state = docker_state(path, min(timeout, 60), runner)
    result["docker"] = {"path": path, **{k: v for k, v in state.items() if k != "error"}}
    if not state["running"]:
        if not check_mode:
            return _fail(
                result,
                f"Docker is not running or does not answer ({path} info: {state['error']}): start it "
                "(systemctl start docker) and verify again.",
            )
    env = image_env(path, image, timeout, runner) if state["running"] else None
    if state["running"] and env is None:
        absent = (
            f"The image {image} is not on this host and pulling it is off (gpu_verify_pull: false): "
            "load it (docker load -i FILE) or allow the pull, then verify again."
        )
        if not pull:
            if not check_mode:
                return _fail(result, absent)
            result["blocker"] = VerifyError(absent).record()  # the real run would fail: a plan says so
        elif check_mode:
            result["changed"] = True  # the real run would pull it
        else:
            rc, out = runner([path, "pull", image], timeout)
            if rc != 0:
                why = "timed out" if rc is None else _last_line(out) or f"exit code {rc}"
                return _fail(
                    result,
                    f"Pulling the image {image} failed ({why}): make the registry reachable from dockerd, or load the "
                    "image (docker load -i FILE) or name one that is here (gpu_verify_image), then verify again.",
                )
            result["pulled"] = True
            result["changed"] = True
            env = image_env(path, image, timeout, runner)

    checks = plan_checks(gpus, mode)
    search_path = smi_search_path(env, host_nvidia_smi())
    if check_mode:
        result["checks"] = _planned(checks, path, mode, image, search_path)
        result["verified"] = None
        return result

    # Inside: one throwaway container per check.
    done: List[Dict[str, Any]] = []
    for check in checks:
        name = f"gpu-install-verify-{uuid.uuid4().hex[:12]}"
        argv = container_argv(path, mode, image, check["selector"], name, via=check["path"], search_path=search_path)
        done.append(_run_check(check, argv, path, name, timeout, runner))
        if done[-1]["rc"] is None:
            break  # a hung container would hang the next ones too
    result["checks"] = done
    failed = [c for c in done if not c["ok"]]
    if failed:
        reason = _check_reason(failed[0], mode, timeout, state)
        if len(done) < len(checks):
            reason = reason[:-1] + f" (the remaining {len(checks) - len(done)} check(s) were not run)."
        return _fail(result, reason)
    result["verified"] = True
    return result


def _planned(
    checks: Sequence[Dict[str, Any]], docker: str, mode: str, image: str, search_path: Optional[str]
) -> List[Dict[str, Any]]:
    return [
        {
            "name": c["name"],
            "path": c["path"],
            "selector": c["selector"],
            "argv": container_argv(docker, mode, image, c["selector"], via=c["path"], search_path=search_path),
            "expected": c["expected"],
            "seen": None,
            "ok": None,
            "rc": None,
            "differs": "",
            "output": "",
        }
        for c in checks
    ]
