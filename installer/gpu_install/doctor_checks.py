"""The checks of `gpu-install doctor`: NVIDIA's nvidia-docker FAQ as pure functions, each with its fix.

Every check takes recorded inputs and returns one record::

    {"id": str, "status": "pass"|"fail"|"warn"|"info"|"skip",
     "message": one sentence (what was found), "fix": one sentence (empty on pass)}

plus ``details`` (a list of lines) where one sentence cannot hold it (topology, CPU affinity).
Nothing here reads the host, runs a command or talks to Docker: commands/doctor.py gathers the
inputs (facts, NVML view, kernels, the NVIDIA module's signature, ``docker info``, the CDI spec,
the image's environment, the settings) and ``run_checks`` turns them into checks, so each check
is tested with inputs recorded on real hosts.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable, Sequence

from .collection import module_utils

STATUSES = ("pass", "fail", "warn", "info", "skip")

Check = dict[str, Any]
Inputs = dict[str, Any]


def check(cid: str, status: str, message: str, fix: str = "", details: Sequence[str] | None = None) -> Check:
    if status not in STATUSES:
        raise ValueError(f"unknown check status {status!r}")
    out: Check = {"id": cid, "status": status, "message": message, "fix": "" if status == "pass" else fix}
    if details:
        out["details"] = list(details)
    return out


def healthy(checks: Iterable[Check]) -> bool:
    """True when no check failed (warn, info and skip do not fail)."""
    return not any(c["status"] == "fail" for c in checks)


def exit_code(checks: Iterable[Check], facts: dict[str, Any]) -> int:
    """3 on a platform gpu-install refuses (the refusal's own code), else 8 when a check failed, else 0."""
    refusal = module_utils("gpu_detect").refusal(facts)
    if refusal:
        return int(refusal[0])
    return 0 if healthy(checks) else int(module_utils("errors").VERIFY_FAILED)


def _gpus(view: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not view or not view.get("available"):
        return []
    return [g for g in view.get("gpus") or [] if isinstance(g, dict)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------------------
# Platform, GPU, driver, nouveau
# ---------------------------------------------------------------------------
def check_platform(facts: dict[str, Any]) -> Check:
    osf = facts.get("os") or {}
    for problem in facts.get("problems") or []:
        if isinstance(problem, dict) and problem.get("refuses"):
            return check(
                "platform",
                "fail",
                str(problem.get("message") or problem.get("code")),
                "Use a supported host: Ubuntu 20.04/22.04/24.04, Debian 11-13, RHEL 8-10 and rebuilds, or "
                "Amazon Linux 2023, on x86_64 or aarch64 (README, Supported platforms).",
            )
    name = osf.get("name") or osf.get("id") or "this system"
    return check("platform", "pass", f"{name} on {osf.get('arch') or 'an unknown architecture'} is supported.")


def check_gpu(facts: dict[str, Any]) -> Check:
    gpus = [g for g in facts.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        return check(
            "gpu",
            "fail",
            "No NVIDIA GPU was found on the PCI bus or in /proc/driver/nvidia/gpus.",
            "Run GPU containers on a host with an NVIDIA GPU: on a cloud, a GPU instance type; "
            "in a virtual machine, pass the GPU through to it.",
        )
    names = sorted({str(g.get("name") or f"device {g.get('device_id')}") for g in gpus})
    return check("gpu", "pass", f"Found {_plural(len(gpus), 'NVIDIA GPU')}: {', '.join(names)}.")


def check_driver(facts: dict[str, Any]) -> Check:
    driver = facts.get("driver") or {}
    if driver.get("loaded"):
        version = f" {driver['version']}" if driver.get("version") else ""
        flavour = f" ({driver['flavour']} kernel module)" if driver.get("flavour") else ""
        return check("driver", "pass", f"The NVIDIA driver{version}{flavour} is loaded.")
    package = driver.get("package") or {}
    if not facts.get("gpus"):
        return check(
            "driver",
            "fail",
            "The NVIDIA driver is not loaded, and there is no NVIDIA GPU for it to drive.",
            "On a host with an NVIDIA GPU, run gpu-install apply to install and load the driver.",
        )
    if facts.get("nouveau_loaded"):
        return check(
            "driver",
            "fail",
            "The NVIDIA driver is not loaded: nouveau holds the GPU.",
            "Run gpu-install apply (it blacklists nouveau and rebuilds the initramfs), then reboot.",
        )
    if package.get("name"):
        return check(
            "driver",
            "fail",
            f"The NVIDIA driver package {package['name']} {package.get('version') or ''} is installed "
            "but its kernel module is not loaded.",
            "Run gpu-install apply (it builds the module for the running kernel and loads it), or reboot "
            "if it was installed for a kernel that is not running yet.",
        )
    return check(
        "driver",
        "fail",
        "The NVIDIA driver is not installed or not loaded.",
        "Run gpu-install apply to install the driver (nvidia_driver_source picks the package manager or the runfile).",
    )


def check_nouveau(facts: dict[str, Any]) -> Check:
    if facts.get("nouveau_loaded"):
        return check(
            "nouveau",
            "fail",
            "The nouveau driver is loaded and keeps the NVIDIA driver from the GPU.",
            "Run gpu-install apply (it blacklists nouveau and nova_core and rebuilds the initramfs), then reboot.",
        )
    if facts.get("nouveau_loaded") is None:
        return check("nouveau", "skip", "Whether nouveau is loaded could not be read.", "Check `lsmod | grep nouveau`.")
    return check("nouveau", "pass", "The nouveau driver is not loaded.")


# ---------------------------------------------------------------------------
# NVML and persistence
# ---------------------------------------------------------------------------
def check_nvml(facts: dict[str, Any], view: dict[str, Any]) -> Check:
    if view.get("available"):
        gpus = _gpus(view)
        cuda = view.get("cuda_driver_version")
        return check(
            "nvml",
            "pass",
            f"NVML works: driver {view.get('driver_version')}, {_plural(len(gpus), 'GPU')}"
            + (f", CUDA {cuda} supported." if cuda else "."),
        )
    kind = view.get("error_kind")
    error = str(view.get("error") or "NVML could not be initialised")
    driver = facts.get("driver") or {}
    if kind == "lib_rm_version_mismatch":
        package = driver.get("package") or {}
        found = f"the loaded kernel module is {driver.get('version') or 'older'}"
        if package.get("version"):
            found += f" and the installed {package.get('name')} package is {package['version']}"
        return check(
            "nvml",
            "fail",
            f'NVML reports "Driver/library version mismatch": {found}, so an upgrade replaced the '
            "libraries under the running module.",
            "Reboot (or unload and reload the nvidia modules) so the module matches its libraries; "
            "nvidia_driver_branch holds the branch so that unattended upgrades cannot split them again.",
        )
    if not driver.get("loaded") and kind in (None, "driver_not_loaded", "library_not_found"):
        return check(
            "nvml",
            "skip",
            "NVML needs the NVIDIA driver, which is not loaded.",
            "Load the driver first (see the driver check).",
        )
    if kind == "library_not_found":
        return check(
            "nvml",
            "fail",
            "The driver is loaded but NVML's library libnvidia-ml.so.1 was not found.",
            "Install the driver's user-space libraries (gpu-install apply), or run ldconfig if they are "
            "installed outside the linker's cache.",
        )
    if kind == "no_permission":
        return check(
            "nvml",
            "fail",
            f"{error}: this user may not open the NVIDIA device nodes.",
            "Run gpu-install doctor as root, or fix the permissions of /dev/nvidia*.",
        )
    if kind == "pynvml_missing":
        return check("nvml", "skip", f"{error}.", "Reinstall gpu-install with its dependencies (nvidia-ml-py).")
    return check(
        "nvml",
        "fail",
        f"{error}.",
        "Look for NVRM lines in `dmesg`; a reboot clears a lost GPU or a driver left half-initialised.",
    )


def check_persistence(facts: dict[str, Any], view: dict[str, Any], settings: dict[str, Any]) -> Check:
    gpus = _gpus(view)
    if not gpus:
        return check(
            "persistence",
            "skip",
            "Persistence mode cannot be read without NVML and a GPU.",
            "Fix the gpu, driver and nvml checks first.",
        )
    off = [str(g.get("index")) for g in gpus if g.get("persistence_mode") is False]
    unknown = [str(g.get("index")) for g in gpus if g.get("persistence_mode") is None]
    if not off and not unknown:
        return check("persistence", "pass", f"Persistence mode is on for {'every' if len(gpus) > 1 else 'the'} GPU.")
    if not off:
        return check(
            "persistence",
            "warn",
            f"NVML could not report persistence mode for GPU {', '.join(unknown)}.",
            "Check `nvidia-smi -q | grep -i persistence`; nvidia-persistenced keeps it on (gpu-install apply).",
        )
    daemon = facts.get("persistenced") or {}
    if settings.get("nvidia_persistenced_enabled") is False:
        fix = "Set nvidia_persistenced_enabled: true and run gpu-install apply to enable nvidia-persistenced."
    elif daemon.get("running"):
        fix = (
            "nvidia-persistenced runs but leaves persistence off (a unit with --no-persistence-mode): "
            "run gpu-install apply, which starts it with persistence on."
        )
    else:
        fix = "Enable and start nvidia-persistenced: run gpu-install apply (nvidia_persistenced_enabled: true)."
    return check(
        "persistence",
        "fail",
        f"Persistence mode is off on GPU {', '.join(off)}, so every container start initialises the GPU "
        "again and starts slowly.",
        fix,
    )


# ---------------------------------------------------------------------------
# Secure Boot
# ---------------------------------------------------------------------------
def check_secure_boot(facts: dict[str, Any], module: dict[str, Any]) -> Check:
    """``module``: {taint (/sys/module/nvidia/taint), filename, signer (modinfo), error} of the NVIDIA module."""
    state = facts.get("secure_boot")
    if state is None:
        return check(
            "secure_boot",
            "skip",
            "Secure Boot's state could not be read (no EFI variables).",
            "Read it with `mokutil --sb-state`; under Secure Boot the NVIDIA module must be signed.",
        )
    if not state:
        return check("secure_boot", "pass", "Secure Boot is off, so the NVIDIA module needs no signature.")
    mok = str(module_utils("driver").MOK_STEPS)
    loaded = (facts.get("driver") or {}).get("loaded")
    if loaded:
        taint = str(module.get("taint") or "")
        if "E" in taint:
            return check(
                "secure_boot",
                "warn",
                "Secure Boot is on and the NVIDIA module was loaded without a valid signature "
                "(taint E): this kernel does not enforce module signatures.",
                f"Sign the module so that it still loads where signatures are enforced: {mok}.",
            )
        return check("secure_boot", "pass", "Secure Boot is on and the loaded NVIDIA module is signed.")
    if not module.get("filename"):
        return check(
            "secure_boot",
            "skip",
            "Secure Boot is on and there is no NVIDIA module for the running kernel to check.",
            "Install the driver first (see the driver check): under Secure Boot it needs signed modules "
            "or an enrolled DKMS key.",
        )
    if not module.get("signer"):
        return check(
            "secure_boot",
            "fail",
            f"Secure Boot is on and the NVIDIA module {module['filename']} is unsigned, so the kernel "
            "refuses to load it.",
            f"Sign it with DKMS: {mok}.",
        )
    return check(
        "secure_boot",
        "warn",
        f'Secure Boot is on and the NVIDIA module is signed by "{module["signer"]}" but not loaded; if '
        '`modprobe nvidia` says "Key was rejected by service", that key is not enrolled.',
        "Enroll the signing key (`mokutil --import` its public key, reboot, confirm in the MOK manager).",
    )


# ---------------------------------------------------------------------------
# Docker: the NVIDIA runtime or CDI
# ---------------------------------------------------------------------------
def docker_version(info: dict[str, Any] | None) -> tuple[int, int] | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", str((info or {}).get("ServerVersion") or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _docker_down(facts: dict[str, Any], docker: dict[str, Any]) -> Check:
    found = facts.get("docker") or {}
    sock = docker.get("socket") or "/var/run/docker.sock"
    if not found.get("flavour") and docker.get("error") == "absent":
        return check(
            "docker",
            "fail",
            "Docker is not installed.",
            "Run gpu-install apply: it installs the distribution's Docker (docker_package chooses another).",
        )
    if docker.get("error") == "denied":
        return check(
            "docker",
            "fail",
            f"This user may not use Docker's socket {sock}.",
            "Run gpu-install doctor as root (or as a member of the docker group).",
        )
    what = f"{found['flavour']} {found.get('version') or ''}".strip() if found.get("flavour") else "Docker"
    return check(
        "docker",
        "fail",
        f"{what} is not answering on {sock}.",
        "Start it: `systemctl start docker` where systemd runs, else start dockerd; `journalctl -u docker` says "
        "why it stopped.",
    )


def check_docker(facts: dict[str, Any], docker: dict[str, Any], settings: dict[str, Any], cdi: dict[str, Any]) -> Check:
    """``docker``: {info (GET /info) or None, error: absent|denied|no_answer, socket}; ``cdi``: the spec's state."""
    info = docker.get("info")
    if not isinstance(info, dict):
        return _docker_down(facts, docker)
    mode = settings.get("nvidia_container_mode") or "runtime"
    version = docker_version(info)
    shown = info.get("ServerVersion") or "unknown"
    if mode == "cdi":
        return _check_cdi(info, version, shown, cdi)
    runtimes = info.get("Runtimes") or {}
    default = info.get("DefaultRuntime")
    if "nvidia" not in runtimes:
        return check(
            "docker",
            "fail",
            f"Docker {shown} has no nvidia runtime (runtimes: {', '.join(sorted(runtimes)) or 'none'}).",
            "Run gpu-install apply: it installs the NVIDIA container toolkit and merges runtimes.nvidia and "
            "default-runtime into daemon.json.",
        )
    if default != "nvidia":
        return check(
            "docker",
            "fail",
            f"Docker {shown} has the nvidia runtime but its default runtime is {default}, so docker build and "
            "Compose do not get the GPU.",
            "Run gpu-install apply: it sets default-runtime to nvidia in daemon.json and reloads dockerd.",
        )
    return check("docker", "pass", f"Docker {shown} runs containers with the nvidia runtime by default.")


def _check_cdi(info: dict[str, Any], version: tuple[int, int] | None, shown: str, cdi: dict[str, Any]) -> Check:
    if version is not None and version < (25, 0):
        return check(
            "docker",
            "fail",
            f"nvidia_container_mode is cdi but Docker {shown} cannot read CDI specs (Docker 25 or newer can).",
            "Upgrade Docker to 25 or newer (docker_package: docker-ce) or set nvidia_container_mode: runtime, "
            "then run gpu-install apply.",
        )
    dirs = [str(d) for d in info.get("CDISpecDirs") or []]
    if not dirs:
        where = " (features.cdi is not true in daemon.json)" if version is not None and version < (28, 0) else ""
        return check(
            "docker",
            "fail",
            f"Docker {shown} has CDI turned off{where}.",
            "Run gpu-install apply: it sets features.cdi in daemon.json on Docker 25-27 and restarts dockerd.",
        )
    path = str(cdi.get("path") or "")
    spec_dir = path.rsplit("/", 1)[0] if "/" in path else path
    if spec_dir and spec_dir.rstrip("/") not in [d.rstrip("/") for d in dirs]:
        return check(
            "docker",
            "fail",
            f"Docker {shown} reads CDI specs from {', '.join(dirs)}, not from {spec_dir}.",
            f"Add {spec_dir} to cdi-spec-dirs in daemon.json, or keep Docker's default directories.",
        )
    spec = spec_check("docker", cdi)
    if spec is not None:
        return spec
    return check("docker", "pass", f"Docker {shown} reads CDI, and the spec {path} is valid and current.")


def spec_check(cid: str, cdi: dict[str, Any]) -> Check | None:
    """The CDI spec's failure (missing, unreadable, invalid, naming paths that are gone) as check ``cid``, or None
    when it is valid and current. ``cdi``: the spec's state (commands/doctor.py gather_cdi)."""
    path = str(cdi.get("path") or "")
    if not cdi.get("exists"):
        return check(
            cid,
            "fail",
            f"The CDI spec {path} does not exist, so `--device nvidia.com/gpu=all` finds no GPU.",
            "Run gpu-install apply: it writes the spec from what the driver exposes.",
        )
    if cdi.get("error"):
        return check(cid, "fail", f"The CDI spec {path} {cdi['error']}.", "Run gpu-install apply to rewrite it.")
    problems = list(cdi.get("problems") or [])
    if problems:
        return check(
            cid,
            "fail",
            f"The CDI spec {path} is invalid: {'; '.join(problems[:3])}.",
            "Run gpu-install apply to rewrite it.",
        )
    stale = list(cdi.get("stale") or [])
    if stale:
        return check(
            cid,
            "fail",
            f"The CDI spec {path} names {_plural(len(stale), 'path')} that no longer exist ({', '.join(stale[:3])}), "
            "so every GPU container fails to start; the driver changed since it was written.",
            "Run gpu-install apply: it regenerates the spec for the driver now installed.",
        )
    return None


# ---------------------------------------------------------------------------
# The image's NVIDIA_REQUIRE_* against the driver (`unsatisfied condition: cuda >= X.Y`)
# ---------------------------------------------------------------------------
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
PROPERTIES = ("cuda", "driver", "arch", "brand")
_VERSION_CHARS = re.compile(r"^[0-9.]*$")
_NUMBER = re.compile(r"\d+")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as the toolkit reads the variable

# Driver branch -> the CUDA version its driver supports (what NVML and nvidia-smi report), from NVIDIA's
# CUDA release notes ("CUDA Toolkit and Corresponding Driver Versions"); used only to name an upgrade.
BRANCH_CUDA: tuple[tuple[str, str], ...] = (
    ("450", "11.0"),
    ("455", "11.1"),
    ("460", "11.2"),
    ("465", "11.3"),
    ("470", "11.4"),
    ("495", "11.5"),
    ("510", "11.6"),
    ("515", "11.7"),
    ("520", "11.8"),
    ("525", "12.0"),
    ("530", "12.1"),
    ("535", "12.2"),
    ("545", "12.3"),
    ("550", "12.4"),
    ("555", "12.5"),
    ("560", "12.6"),
    ("565", "12.7"),
    ("570", "12.8"),
    ("575", "12.9"),
    ("580", "13.0"),
)


class RequirementError(ValueError):
    """An NVIDIA_REQUIRE_* expression the toolkit would refuse ("invalid expression")."""


def compare_version(left: str, op: str, right: str) -> bool:
    """libnvidia-container's dsl_compare_version: dotted numbers, missing trailing parts read as 0."""
    if not _VERSION_CHARS.match(left) or not _VERSION_CHARS.match(right):
        raise RequirementError(f"{left!r} or {right!r} is not a dotted version")
    i = j = 0
    while i < len(left) and j < len(right):
        m1, m2 = _NUMBER.match(left, i), _NUMBER.match(right, j)
        if m1 is None or m2 is None:
            raise RequirementError(f"{left!r} or {right!r} is not a dotted version")
        n1, n2 = int(m1.group()), int(m2.group())
        if n1 != n2:
            if op == "=":
                return False
            if op == "!=":
                return True
            return n1 < n2 if op in ("<", "<=") else n1 > n2
        i, j = m1.end(), m2.end()
        while i < len(left) and left[i] == ".":
            i += 1
        while j < len(right) and right[j] == ".":
            j += 1
    rest1, rest2 = left[i:].lstrip(".0"), right[j:].lstrip(".0")
    if op == "!=":
        return bool(rest1 or rest2)
    if op in ("=", "<=", ">="):
        if not rest1 and not rest2:
            return True
        if op == "=":
            return False
    if op in ("<", "<="):
        return not rest1 and bool(rest2)
    return bool(rest1) and not rest2


Factor = tuple[str, str, str]


def parse_requirement(text: str) -> list[list[Factor]]:
    """An NVIDIA_REQUIRE_* value as alternatives (space-separated, OR'd) of factors (comma-separated, AND'd).

    ``cuda>=12.6 brand=tesla,driver>=470,driver<471`` is ``cuda>=12.6`` OR (brand tesla AND driver 470.x):
    the toolkit's own grammar (libnvidia-container's dsl.c). Raises RequirementError where it would.
    """
    terms: list[list[Factor]] = []
    for term in text.split(" "):
        factors: list[Factor] = []
        for factor in term.split(","):
            if not factor:
                continue
            match = re.match(r"^([^<>=!]+)([<>=!]+)(.*)$", factor)
            if not match or match.group(2) not in OPERATORS or not match.group(3):
                raise RequirementError(f"{factor!r} is not NAME OP VALUE")
            name = match.group(1).lower()
            if name not in PROPERTIES:
                raise RequirementError(f"{factor!r} names no known property (cuda, driver, arch, brand)")
            if name == "brand" and match.group(2) not in ("=", "!="):
                raise RequirementError(f"{factor!r}: a brand compares with = or != only")
            factors.append((name, match.group(2), match.group(3)))
        if factors:
            terms.append(factors)
    return terms


def _factor_holds(factor: Factor, props: dict[str, Any], device: dict[str, Any] | None) -> bool:
    name, op, value = factor
    if name in ("cuda", "driver"):
        have = props.get(name)
        return True if not have else compare_version(str(have), op, value)
    if device is None:
        return True  # no visible device: the toolkit assumes the arch and brand are fine
    have = device.get("compute_capability" if name == "arch" else "brand")
    if not have:
        return True
    if name == "arch":
        return compare_version(str(have), op, value)
    same = str(have).lower() == value.lower()
    return same if op == "=" else not same


def evaluate(text: str, props: dict[str, Any], device: dict[str, Any] | None = None) -> Factor | None:
    """None when ``text`` holds for the driver ``props`` ({cuda, driver}) and ``device`` ({compute_capability,
    brand}); else the first alternative's first failing factor (what the toolkit reports)."""
    return match(text, props, device)[1]


def match(
    text: str, props: dict[str, Any], device: dict[str, Any] | None = None
) -> tuple[list[Factor] | None, Factor | None]:
    """(the first alternative that holds, None) or (None, the first alternative's first failing factor)."""
    first_failure: Factor | None = None
    for factors in parse_requirement(text):
        failing = next((f for f in factors if not _factor_holds(f, props, device)), None)
        if failing is None:
            return factors, None
        if first_failure is None:
            first_failure = failing
    return None, first_failure


def spell(factors: Sequence[Factor]) -> str:
    """Factors as the image writes them: ``brand=unknown,driver>=580,driver<581``."""
    return ",".join(f"{name}{op}{value}" for name, op, value in factors)


def image_requirements(env: Sequence[str]) -> dict[str, Any]:
    """What the toolkit checks for an image's environment: {requirements, disabled, legacy}.

    Every NVIDIA_REQUIRE_* (but NVIDIA_REQUIRE_JETPACK) is required (AND); an image with CUDA_VERSION and no
    NVIDIA_REQUIRE_CUDA (a legacy image) requires ``cuda>=MAJOR.MINOR``; NVIDIA_DISABLE_REQUIRE turns it off.
    """
    values: dict[str, str] = {}
    for item in env:
        name, sep, value = str(item).partition("=")
        if sep:
            values[name] = value
    disabled = values.get("NVIDIA_DISABLE_REQUIRE", "") in _TRUE
    names = sorted(n for n in values if n.startswith("NVIDIA_REQUIRE_") and n != "NVIDIA_REQUIRE_JETPACK")
    names.sort(key=lambda n: n != "NVIDIA_REQUIRE_CUDA")
    requirements = [values[n] for n in names if values[n].strip()]
    legacy = None
    if "NVIDIA_REQUIRE_CUDA" not in values and values.get("CUDA_VERSION"):
        match = re.match(r"^(\d+)(?:\.(\d+))?", values["CUDA_VERSION"])
        if match:
            legacy = f"cuda>={match.group(1)}.{match.group(2) or 0}"
            requirements.append(legacy)
    return {"requirements": requirements, "disabled": disabled, "legacy": legacy}


def branch_for_cuda(version: str) -> str | None:
    """The oldest driver branch whose driver supports CUDA ``version`` (None: newer than the table knows)."""
    for branch, cuda in BRANCH_CUDA:
        if compare_version(cuda, ">=", version):
            return branch
    return None


def check_image(image: dict[str, Any], view: dict[str, Any]) -> Check:
    """``image``: {name, found, env, error} from `docker image inspect` (the socket's /images/NAME/json)."""
    name = str(image.get("name"))
    if image.get("error"):
        return check(
            "image",
            "fail",
            f"The image {name} could not be inspected: {image['error']}.",
            "Start Docker (see the docker check), then run doctor --image again.",
        )
    if not image.get("found"):
        return check("image", "fail", f"The image {name} is not on this host.", f"Pull it: docker pull {name}.")
    wanted = image_requirements(image.get("env") or [])
    if wanted["disabled"]:
        return check(
            "image",
            "info",
            f"{name} sets NVIDIA_DISABLE_REQUIRE, so the toolkit checks no CUDA requirement for it.",
            "Make sure the driver's CUDA version suits the image yourself (nvidia-smi shows it).",
        )
    if not wanted["requirements"]:
        return check("image", "pass", f"{name} states no CUDA requirement (no NVIDIA_REQUIRE_CUDA or CUDA_VERSION).")
    parsed: list[tuple[str, list[list[Factor]]]] = []
    for text in wanted["requirements"]:
        try:
            parsed.append((text, parse_requirement(text)))
        except RequirementError as exc:
            return check(
                "image",
                "fail",
                f"{name}'s requirement {text!r} is not an expression the toolkit accepts ({exc}).",
                "Fix the image's NVIDIA_REQUIRE_* variables, or run it with -e NVIDIA_DISABLE_REQUIRE=true.",
            )
    head = next((spell(terms[0]) for _text, terms in parsed if terms), "nothing")
    if not view.get("available"):
        return check(
            "image",
            "skip",
            f"{name} requires {head}, and NVML cannot say what the driver supports.",
            "Fix the nvml check first, then run doctor --image again.",
        )
    props = {"cuda": view.get("cuda_driver_version"), "driver": view.get("driver_version")}
    devices: list[dict[str, Any] | None] = list(_gpus(view)) or [None]
    through: list[str] = []
    for text, terms in parsed:
        for device in devices:
            held, failing = match(text, props, device)
            if failing is not None:
                return _unsatisfied(name, failing, props, device)
            if held is not None and held != terms[0] and spell(held) not in through:
                through.append(spell(held))
    found = f"the driver {props['driver']} (CUDA {props['cuda']})"
    if through:
        return check(
            "image",
            "pass",
            f"{name} requires {head}, which {found} does not meet, but its alternative {', '.join(through)} "
            "holds (CUDA forward compatibility), so the toolkit accepts it.",
        )
    return check("image", "pass", f"{name} requires {head}, and {found} meets it.")


def check_image_libcuda(image: dict[str, Any], facts: dict[str, Any], view: dict[str, Any]) -> Check | None:
    """An image's own libcuda.so.1 that its loader takes before the CDI spec's (CDI mode, doctor --image).

    ``image["libcuda"]``: {path, version, via ("ld.so.cache" or "LD_LIBRARY_PATH"), lib_dirs, error}, read by
    commands/doctor.py from the image without running it; absent (runtime mode, image not found): no check.
    """
    found = image.get("libcuda")
    if not isinstance(found, dict):
        return None
    name = str(image.get("name"))
    if found.get("error"):
        return check(
            "image_libcuda",
            "skip",
            f"{name}'s linker cache could not be read: {found['error']}.",
            "Start Docker (see the docker check), then run doctor --image again.",
        )
    lib_dirs = [str(d) for d in found.get("lib_dirs") or []] or ["/usr/lib/x86_64-linux-gnu"]
    path = found.get("path")
    if not path:
        return check(
            "image_libcuda",
            "pass",
            f"{name} has no libcuda.so.1 of its own ahead of {lib_dirs[0]}, so it loads the host's driver "
            "that the CDI spec mounts there.",
        )
    where = "its LD_LIBRARY_PATH" if found.get("via") == "LD_LIBRARY_PATH" else "its linker cache (/etc/ld.so.cache)"
    env = image_env(image.get("env") or [], "LD_LIBRARY_PATH")
    kept = [d for d in (env or "").split(":") if d and d.rstrip("/") != os.path.dirname(str(path))]
    fix = (
        "Rebuild the image without that directory in /etc/ld.so.conf.d (then run ldconfig) or LD_LIBRARY_PATH, "
        f"or run it with -e LD_LIBRARY_PATH={':'.join([lib_dirs[0]] + kept)}, which the loader searches before "
        "its cache."
    )
    version = found.get("version")
    host = view.get("driver_version") or (facts.get("driver") or {}).get("version")
    cdi = module_utils("cdi")
    if not version or not host:
        return check(
            "image_libcuda",
            "warn",
            f"{name} gives its loader its own libcuda.so.1 ({path}) through {where}, ahead of the host's driver "
            f"{host or '(version unknown)'} that the CDI spec mounts, and its version could not be compared.",
            fix,
        )
    order = cdi.version_order(str(version), str(host))
    if order < 0:
        return check(
            "image_libcuda",
            "fail",
            f"{name} gives its loader its own libcuda {version} ({path}, a CUDA compat library) through {where}, "
            f"ahead of the host's newer driver {host} that the CDI spec mounts, so CUDA cannot start in it.",
            fix,
        )
    if order > 0:
        return check(
            "image_libcuda",
            "info",
            f"{name} loads its own libcuda {version} ({path}) through {where}, newer than the host's driver "
            f"{host}: CUDA forward compatibility, which NVIDIA supports on data-center GPUs only (elsewhere CUDA "
            "fails with error 804).",
            f"On other GPUs: {fix[0].lower()}{fix[1:]}",
        )
    return check(
        "image_libcuda",
        "pass",
        f"{name} loads its own libcuda {version} ({path}) through {where}, the same version as the host's driver.",
    )


def image_env(env: Sequence[str], key: str) -> str | None:
    """The value of ``key`` in an image's Config.Env (NAME=VALUE strings), or None."""
    for item in env:
        name, sep, value = str(item).partition("=")
        if sep and name == key:
            return value
    return None


def _unsatisfied(name: str, failing: Factor, props: dict[str, Any], device: dict[str, Any] | None) -> Check:
    prop, op, value = failing
    condition = f"unsatisfied condition: {prop} {op} {value}"
    if prop == "cuda":
        branch = branch_for_cuda(value) if op in (">", ">=") else None
        upgrade = (
            f'Upgrade the driver to branch {branch} or newer (nvidia_driver_branch: "{branch}", or empty for '
            "the newest, then gpu-install apply)"
            if branch
            else f"Upgrade the driver to a branch that supports CUDA {value} (nvidia_driver_branch, then "
            "gpu-install apply)"
        )
        return check(
            "image",
            "fail",
            f"{condition}: {name} needs CUDA {value} and the driver {props.get('driver')} supports CUDA "
            f"{props.get('cuda')}.",
            f"{upgrade}, or use an image tag built for CUDA {props.get('cuda')} or older.",
        )
    where = f" on GPU {device.get('index')}" if device else ""
    have = {
        "driver": props.get("driver"),
        "arch": (device or {}).get("compute_capability"),
        "brand": (device or {}).get("brand"),
    }.get(prop)
    return check(
        "image",
        "fail",
        f"{condition}: {name} needs {prop} {op} {value}{where} and this host has {have}.",
        "Use an image built for this GPU and driver, or a GPU and driver the image supports.",
    )


# ---------------------------------------------------------------------------
# Kernel updates, PID namespaces, topology and CPU affinity
# ---------------------------------------------------------------------------
def check_kernel_update(kernels: Sequence[dict[str, Any]], running: str | None) -> Check:
    guard = module_utils("driver").kernel_guard(list(kernels), running)
    if guard:
        return check(
            "kernel_update",
            "warn",
            str(guard),
            "Build the NVIDIA module for that kernel before rebooting into it: gpu-install apply (with its headers).",
        )
    if not any(k.get("nvidia_module") for k in kernels):
        return check(
            "kernel_update",
            "skip",
            "No installed kernel has an NVIDIA module yet, so there is nothing to guard.",
            "Nothing to do until the driver's module is built (see the driver check).",
        )
    return check("kernel_update", "pass", "The newest installed kernel has the NVIDIA module.")


def check_container_processes() -> Check:
    return check(
        "container_processes",
        "info",
        "nvidia-smi inside a container lists no processes because NVML cannot see across PID namespaces.",
        "Watch GPU processes with nvidia-smi on the host, or run the container with --pid=host.",
    )


LEVELS: dict[str, str] = {
    "BOARD": "on one board",
    "PIX": "through at most one PCIe bridge",
    "PXB": "through several PCIe bridges",
    "PHB": "through a PCIe host bridge",
    "NODE": "across PCIe host bridges within one NUMA node",
    "SYS": "across NUMA nodes (the SMP interconnect)",
}


def nvlinks_between(a: dict[str, Any], b: dict[str, Any]) -> int:
    """NVLinks joining two GPUs: direct links to the other's bus id, or both attached to NVSwitches."""
    from .nvml import bus_id

    la, lb = a.get("nvlink") or {}, b.get("nvlink") or {}
    target = bus_id(b.get("pci_bus_id") or "")
    direct = sum(1 for r in la.get("remotes") or [] if r and bus_id(r) == target)
    if direct:
        return direct
    if la.get("switch") and lb.get("switch"):
        return min(int(la.get("active") or 0), int(lb.get("active") or 0))
    return 0


def check_topology(view: dict[str, Any]) -> Check | None:
    gpus = {g.get("index"): g for g in _gpus(view)}
    if len(gpus) < 2:
        return None
    lines = []
    for pair in view.get("topology") or []:
        i, j = pair.get("gpus") or [None, None]
        if i not in gpus or j not in gpus:
            continue
        links = nvlinks_between(gpus[i], gpus[j])
        level = pair.get("level")
        path = f"NV{links} (NVLink)" if links else f"{level} ({LEVELS.get(str(level), 'unknown path')})"
        lines.append(f"GPU{i} <-> GPU{j}: {path}")
    far = sum(1 for line in lines if "SYS" in line or "NODE" in line)
    summary = f"{_plural(len(gpus), 'GPU')}, {_plural(len(lines), 'pair')}"
    return check(
        "topology",
        "info",
        f"GPU topology ({summary}, {far} crossing host bridges or NUMA nodes), as `nvidia-smi topo -m` shows it.",
        "Give a multi-GPU container GPUs joined by NVLink or one PCIe switch (NVIDIA_VISIBLE_DEVICES or "
        "--gpus '\"device=0,1\"').",
        lines,
    )


def check_cpu_affinity(view: dict[str, Any]) -> Check | None:
    gpus = _gpus(view)
    if len(gpus) < 2:
        return None
    lines = []
    for gpu in gpus:
        cpus, nodes = gpu.get("cpu_affinity"), gpu.get("numa_affinity")
        if not cpus:
            lines.append(f"GPU{gpu.get('index')}: CPU affinity unknown")
            continue
        mems = f" --cpuset-mems={nodes}" if nodes else ""
        where = f" (NUMA node {nodes})" if nodes else ""
        lines.append(
            f"GPU{gpu.get('index')}: CPUs {cpus}{where}: docker run --cpuset-cpus={cpus}{mems} "
            f"-e NVIDIA_VISIBLE_DEVICES={gpu.get('index')}"
        )
    groups = {g.get("cpu_affinity") for g in gpus if g.get("cpu_affinity")}
    return check(
        "cpu_affinity",
        "info",
        f"The GPUs are nearest to {_plural(len(groups), 'CPU set') if groups else 'unknown CPUs'}; "
        "a container pinned to its GPU's CPUs avoids traffic across NUMA nodes.",
        "Pin each container's CPUs to its GPU's with --cpuset-cpus (and --cpuset-mems), as listed.",
        lines,
    )


# ---------------------------------------------------------------------------
# containerd (Kubernetes nodes) and Podman
# ---------------------------------------------------------------------------
ENGINES_SETTING = "gpu_install_container_engines"
RUNTIME_NAME = "nvidia"  # the containerd runtime gpu-install adds (containerd_config's runtime_name default)
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")  # where containerd, Podman and NVIDIA's runtime read CDI specs by default


def engines_of(facts: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The engines gpu-install configures here: the setting resolved against the facts (module_utils engines), or
    the facts' own list (auto) where the setting is refused (the settings check of apply says why)."""
    setting = settings.get(ENGINES_SETTING, "auto")
    try:
        return list(module_utils("engines").resolve(setting, facts))
    except Exception:  # an EngineError: a refused setting is apply's to report, doctor checks what auto takes
        return [str(e) for e in facts.get("engines") or []]


def check_engine_docker_skip(engines: Sequence[str]) -> Check:
    """Docker's check on a host whose engines leave Docker out (a containerd-only Kubernetes node, Podman)."""
    return check(
        "docker",
        "skip",
        f"Docker is not among this host's container engines ({', '.join(engines)}), so its configuration is not "
        "checked.",
        f"Add docker to {ENGINES_SETTING} to have gpu-install install and configure it.",
    )


def _cri_section(dump: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the CRI plugin's section of a ``containerd config dump``, its key schema) by the dump's version."""
    containerd = module_utils("containerd")
    version = dump.get("version", 1)
    sch = containerd.schema(version if isinstance(version, int) and not isinstance(version, bool) else 1)
    section = containerd.get_path(dump, ("plugins", sch.plugin))
    return (section if isinstance(section, dict) else {}), sch


def check_containerd_cri(facts: dict[str, Any]) -> Check:
    found = facts.get("containerd") or {}
    shown = f"containerd {found.get('version') or ''}".strip()
    path = found.get("config_path") or "/etc/containerd/config.toml"
    if found.get("config_error"):
        return check(
            "containerd_cri",
            "fail",
            f"{shown}'s configuration {path} cannot be used: {found['config_error']}.",
            f"Fix {path} (containerd's docs/cri/config.md), restart containerd, then run gpu-install apply.",
        )
    if not found.get("cri_enabled"):
        # A kubelet pointed at it cannot run pods at all; without one, the configuration waits for the plugin
        # (the containerd role configures it all the same, saying so).
        return check(
            "containerd_cri",
            "fail" if found.get("kubelet") else "warn",
            f"{shown}'s CRI plugin is disabled (disabled_plugins in {path}), so no kubelet can run pods on it "
            "and its nvidia runtime serves no Kubernetes pod.",
            f"Remove the CRI plugin from disabled_plugins in {path} (Docker's containerd.io package ships it "
            "disabled), restart containerd, then run gpu-install apply.",
        )
    users = " and a kubelet on this host uses it" if found.get("kubelet") else ""
    return check("containerd_cri", "pass", f"{shown}'s CRI plugin is on{users}.")


def _dump_failed(cid: str, containerd: dict[str, Any], facts: dict[str, Any]) -> Check | None:
    path = (facts.get("containerd") or {}).get("config_path") or "/etc/containerd/config.toml"
    if not containerd.get("binary"):
        return check(
            cid,
            "skip",
            "containerd's binary was not found, so its merged configuration cannot be read.",
            "Run gpu-install doctor as root on the node, where containerd config dump can run.",
        )
    if not isinstance(containerd.get("dump"), dict):
        return check(
            cid,
            "fail",
            f"`containerd --config {path} config dump` failed: {containerd.get('error') or 'no output'}.",
            f"Fix {path} or the files it imports (containerd refuses to start with it as it is), then run "
            "gpu-install apply.",
        )
    return None


def check_containerd_runtime(facts: dict[str, Any], settings: dict[str, Any], containerd: dict[str, Any]) -> Check:
    """Runtime mode: the nvidia runtime in the merged configuration, its binary present, the default if asked."""
    failed = _dump_failed("containerd_runtime", containerd, facts)
    if failed is not None:
        return failed
    section, sch = _cri_section(containerd["dump"])
    cu = module_utils("containerd")
    runtimes = cu.get_path(section, sch.runtimes) or {}
    entry = runtimes.get(RUNTIME_NAME) if isinstance(runtimes, dict) else None
    if not isinstance(entry, dict):
        return check(
            "containerd_runtime",
            "fail",
            f"containerd's CRI plugin ({sch.plugin}) has no {RUNTIME_NAME} runtime in its merged configuration "
            f"(containerd config dump; runtimes: {', '.join(sorted(runtimes)) or 'none'}).",
            "Run gpu-install apply: it adds the nvidia runtime in /etc/containerd/conf.d/99-gpu-install.toml and "
            "imports that directory from config.toml.",
        )
    binary = cu.get_path(entry, ("options", "BinaryName"))
    if not binary or containerd.get("runtime_binary_exists") is False:
        what = f"names {binary}, which does not exist" if binary else "names no BinaryName"
        return check(
            "containerd_runtime",
            "fail",
            f"containerd's {RUNTIME_NAME} runtime {what}, so pods of the nvidia RuntimeClass fail to start.",
            "Run gpu-install apply: it installs the NVIDIA Container Toolkit and points the runtime at "
            "nvidia-container-runtime (containerd_runtime_path).",
        )
    default = cu.get_path(section, sch.default_runtime_name) or "runc"
    if settings.get("containerd_default_runtime") and default != RUNTIME_NAME:
        return check(
            "containerd_runtime",
            "fail",
            f"containerd_default_runtime is true but containerd's default runtime is {default}, so pods without "
            "the nvidia RuntimeClass do not get NVIDIA's runtime.",
            "Run gpu-install apply: it sets default_runtime_name to nvidia and restarts containerd.",
        )
    how = "as its default runtime" if default == RUNTIME_NAME else f"beside its default {default}"
    return check("containerd_runtime", "pass", f"containerd has the {RUNTIME_NAME} runtime ({binary}) {how}.")


def check_containerd_cdi(
    facts: dict[str, Any], settings: dict[str, Any], containerd: dict[str, Any], cdi: dict[str, Any]
) -> Check:
    """CDI in containerd's CRI plugin (enable_cdi, its spec directories) and, in cdi mode, the spec current."""
    mode = settings.get("nvidia_container_mode") or "runtime"
    found = facts.get("containerd") or {}
    version = tuple(int(n) for n in re.findall(r"\d+", str(found.get("version") or ""))[:2])
    if version and version < (1, 7):
        return check(
            "containerd_cdi",
            "fail" if mode == "cdi" else "info",
            f"containerd {found.get('version')} reads no CDI specs (its CRI plugin has CDI from 1.7).",
            "Upgrade containerd to 1.7 or newer, or keep nvidia_container_mode: runtime.",
        )
    failed = _dump_failed("containerd_cdi", containerd, facts)
    if failed is not None:
        return failed
    section, sch = _cri_section(containerd["dump"])
    cu = module_utils("containerd")
    if cu.get_path(section, sch.enable_cdi) is not True:
        return check(
            "containerd_cdi",
            "fail",
            f"containerd's CRI plugin ({sch.plugin}) has enable_cdi off, so CDI devices (the device plugin's "
            "cdi-cri and cdi-annotations strategies) are not injected.",
            "Run gpu-install apply: it sets enable_cdi = true in /etc/containerd/conf.d/99-gpu-install.toml.",
        )
    dirs = [str(d).rstrip("/") for d in cu.get_path(section, sch.cdi_spec_dirs) or []]
    if mode == "cdi":
        path = str(cdi.get("path") or "")
        spec_dir = os.path.dirname(path)
        if spec_dir and spec_dir not in dirs:
            return check(
                "containerd_cdi",
                "fail",
                f"containerd reads CDI specs from {', '.join(dirs) or 'no directory'}, not from {spec_dir}, where "
                "gpu-install's spec is.",
                f"Add {spec_dir} to cdi_spec_dirs of the CRI plugin, or keep containerd's default directories.",
            )
        spec = spec_check("containerd_cdi", cdi)
        if spec is not None:
            return spec
        return check("containerd_cdi", "pass", f"containerd reads CDI, and the spec {path} is valid and current.")
    return check("containerd_cdi", "pass", f"containerd's CRI plugin reads CDI specs from {', '.join(dirs)}.")


def check_containerd_kubernetes(facts: dict[str, Any], settings: dict[str, Any]) -> Check | None:
    """A kubelet's pods get NVIDIA's runtime by default, or through the nvidia RuntimeClass."""
    if not (facts.get("containerd") or {}).get("kubelet"):
        return None
    if (settings.get("nvidia_container_mode") or "runtime") == "cdi":
        return check(
            "kubernetes",
            "info",
            "In cdi mode the kubelet's pods run under containerd's own runtime and get GPUs as CDI devices, which "
            "the NVIDIA device plugin asks for (its cdi-cri or cdi-annotations strategy); no RuntimeClass is needed.",
            "Deploy the NVIDIA device plugin with deviceListStrategy cdi-cri (docs/kubernetes.md).",
        )
    if settings.get("containerd_default_runtime"):
        return check(
            "kubernetes",
            "info",
            "The kubelet on this node runs every pod under NVIDIA's runtime (containerd_default_runtime: true).",
            "GPUs still go to pods through the NVIDIA device plugin's nvidia.com/gpu resource (docs/kubernetes.md).",
        )
    return check(
        "kubernetes",
        "info",
        "The kubelet on this node runs pods under containerd's default runtime; pods get NVIDIA's runtime through "
        "a RuntimeClass whose handler is nvidia.",
        "Create it once per cluster: gpu-install k8s runtimeclass | kubectl apply -f -, then set "
        "runtimeClassName: nvidia in GPU pods (docs/kubernetes.md).",
    )


def check_podman(facts: dict[str, Any]) -> Check:
    found = facts.get("podman") or {}
    version = found.get("version")
    if not found.get("cdi"):
        return check(
            "podman",
            "fail",
            f"Podman {version or '(version unknown)'} reads no CDI specs (Podman 4.1 and newer do), so its "
            "containers cannot ask for nvidia.com/gpu devices.",
            f"Upgrade Podman to 4.1 or newer, or leave podman out of {ENGINES_SETTING}.",
        )
    gpus = " and --gpus (Podman 5 maps it to nvidia.com/gpu)" if int(str(version).split(".")[0] or 0) >= 5 else ""
    return check("podman", "pass", f"Podman {version} reads CDI specs: --device nvidia.com/gpu=all{gpus}.")


def check_podman_spec(settings: dict[str, Any], podman: dict[str, Any], cdi: dict[str, Any]) -> Check:
    """The spec Podman reads: gpu-install's in cdi mode (valid and current), the toolkit's in runtime mode."""
    mode = settings.get("nvidia_container_mode") or "runtime"
    if mode == "cdi":
        spec = spec_check("podman_spec", cdi)
        return spec or check("podman_spec", "pass", f"Podman's CDI spec {cdi.get('path')} is valid and current.")
    spec = podman.get("spec") or {}
    if not spec.get("exists"):
        return check(
            "podman_spec",
            "fail",
            f"The toolkit's CDI spec {spec.get('path')} does not exist, so Podman finds no nvidia.com/gpu device.",
            "Run gpu-install apply: it enables the toolkit's nvidia-cdi-refresh units, which write the spec.",
        )
    return check("podman_spec", "pass", f"The toolkit's CDI spec {spec.get('path')} is there for Podman.")


def _octal(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def check_podman_rootless(podman: dict[str, Any]) -> Check:
    """Rootless Podman opens the GPU's device nodes and reads the CDI spec as the user: others (or the user's
    groups) need rw on /dev/nvidia*, and r (x on directories) on the spec and its directories."""
    user = podman.get("user")
    gids = set(user.get("gids") or []) if isinstance(user, dict) else set()
    shut: list[str] = []
    for node in podman.get("devices") or []:
        mode = int(node.get("mode") or 0)
        if mode & 0o006 == 0o006 or (node.get("gid") in gids and mode & 0o060 == 0o060):
            continue
        shut.append(f"{node['path']} ({_octal(mode)}, group {node.get('group') or node.get('gid')})")
    unreadable: list[str] = []
    for item in podman.get("paths") or []:
        if not item.get("exists"):
            continue
        need = 0o005 if item.get("dir") else 0o004
        if int(item.get("mode") or 0) & need != need:
            unreadable.append(f"{item['path']} ({_octal(int(item.get('mode') or 0))})")
    who = f"the user {user['name']}" if isinstance(user, dict) else "a rootless user"
    if shut:
        status = "fail" if isinstance(user, dict) else "warn"
        return check(
            "podman_rootless",
            status,
            f"Rootless Podman run by {who} cannot open {', '.join(shut[:3])}: they are not readable and writable by "
            "others or by the user's groups.",
            "Load the nvidia module with its default NVreg_DeviceFileMode=0666 (remove a stricter modprobe option), "
            "or add the user to the device nodes' group, then log in again.",
        )
    if unreadable:
        return check(
            "podman_rootless",
            "fail" if isinstance(user, dict) else "warn",
            f"Rootless Podman run by {who} cannot read the CDI spec: {', '.join(unreadable[:3])} "
            "are not readable by others.",
            "Make the spec readable by others (chmod 0644) and its directories searchable (chmod 0755); "
            "gpu-install apply writes them so.",
        )
    if not podman.get("devices"):
        return check(
            "podman_rootless",
            "skip",
            "No /dev/nvidia* device node exists yet, so rootless access cannot be checked.",
            "Load the driver first (see the driver check).",
        )
    return check(
        "podman_rootless",
        "pass",
        f"Rootless Podman run by {who} can open the GPU's device nodes and read the CDI spec.",
    )


def engine_steps(inputs: Inputs) -> list[Callable[[], Check | None]]:
    """containerd's and Podman's checks, where the host's engines include them."""
    facts = inputs.get("facts") or {}
    settings = inputs.get("settings") or {}
    engines = engines_of(facts, settings)
    found = inputs.get("engines") or {}
    containerd = found.get("containerd") or {}
    podman = found.get("podman") or {}
    cdi = inputs.get("cdi") or {}
    mode = settings.get("nvidia_container_mode") or "runtime"
    steps: list[Callable[[], Check | None]] = []
    if "containerd" in engines:
        steps.append(lambda: check_containerd_cri(facts))
        if mode == "runtime":
            steps.append(lambda: check_containerd_runtime(facts, settings, containerd))
        steps.append(lambda: check_containerd_cdi(facts, settings, containerd, cdi))
        steps.append(lambda: check_containerd_kubernetes(facts, settings))
    if "podman" in engines:
        steps.append(lambda: check_podman(facts))
        steps.append(lambda: check_podman_spec(settings, podman, cdi))
        steps.append(lambda: check_podman_rootless(podman))
    return steps


# ---------------------------------------------------------------------------
# All of them
# ---------------------------------------------------------------------------
def _docker_or_skip(facts: dict[str, Any], inputs: Inputs, settings: dict[str, Any]) -> Check:
    engines = engines_of(facts, settings)
    if engines and "docker" not in engines:
        return check_engine_docker_skip(engines)
    return check_docker(facts, inputs.get("docker") or {}, settings, inputs.get("cdi") or {})


def run_checks(inputs: Inputs) -> list[Check]:
    """Every check, in order, from recorded inputs::

    {"facts", "nvml", "kernels", "module", "docker", "settings", "cdi", "image" (None without --image),
     "engines" ({"containerd": doctor_paths.gather_containerd, "podman": doctor_paths.gather_podman})}
    """
    from . import doctor_paths

    facts = inputs.get("facts") or {}
    view = inputs.get("nvml") or {"available": False}
    settings = inputs.get("settings") or {}
    steps: list[Callable[[], Check | None]] = [
        lambda: check_platform(facts),
        lambda: check_gpu(facts),
        lambda: check_driver(facts),
        lambda: check_nouveau(facts),
        lambda: check_nvml(facts, view),
        lambda: check_persistence(facts, view, settings),
        lambda: check_secure_boot(facts, inputs.get("module") or {}),
        lambda: _docker_or_skip(facts, inputs, settings),
        *doctor_paths.steps(inputs),
        *engine_steps(inputs),
        lambda: check_image(inputs["image"], view) if inputs.get("image") else None,
        lambda: check_image_libcuda(inputs["image"], facts, view) if inputs.get("image") else None,
        lambda: check_kernel_update(inputs.get("kernels") or [], (facts.get("kernel") or {}).get("release")),
        lambda: check_topology(view),
        lambda: check_cpu_affinity(view),
        check_container_processes,
    ]
    return [c for c in (step() for step in steps) if c is not None]
