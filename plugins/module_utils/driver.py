# Copyright: gpu-install contributors
# Apache License 2.0
"""The NVIDIA driver plan: which packages, which kernel modules, what holds the branch (stdlib only).

Everything the nvidia_driver role decides is computed here from the host's facts
(``gpu_detect.detect``) and the role's settings, as data tables rather than
branches: GPU architecture by PCI device id, package names per base
distribution / version / source / kernel-module flavour, the kernel headers
packages, the apt preferences or dnf module file that holds the branch, and the
nouveau blacklist. ``plan()`` never touches the host; the module
``nvidia_driver_plan`` passes in the few live probes it needs.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

UNSUPPORTED = 3  # errors.UNSUPPORTED (kept literal: this file is imported alone by unit tests too)

# -- GPU architecture by PCI device id --------------------------------------------------------------
# (first, last, architecture, policy). policy: "proprietary" (no open kernel modules: before Turing),
# "open_recommended" (Turing to Ada/Hopper: both work, NVIDIA recommends open since R560),
# "open_required" (Blackwell and newer: the proprietary modules do not support them).
ARCHITECTURES: Tuple[Tuple[int, int, str, str], ...] = (
    (0x0000, 0x1DFF, "Maxwell, Pascal or Volta", "proprietary"),
    (0x1E00, 0x1FFF, "Turing", "open_recommended"),
    (0x2000, 0x20FF, "Ampere", "open_recommended"),
    (0x2100, 0x21FF, "Turing", "open_recommended"),
    (0x2200, 0x22FF, "Ampere", "open_recommended"),
    (0x2300, 0x23FF, "Hopper", "open_recommended"),
    (0x2400, 0x25FF, "Ampere", "open_recommended"),
    (0x2600, 0x28FF, "Ada Lovelace", "open_recommended"),
    (0x2900, 0xFFFF, "Blackwell or newer", "open_required"),
)


def architecture(device_id: Any) -> Tuple[str, str]:
    """(architecture, policy) of an NVIDIA PCI device id ("0x2330", "2330" or an int)."""
    try:
        value = device_id if isinstance(device_id, int) else int(str(device_id), 16)
    except ValueError:
        return "unknown", "open_recommended"
    for first, last, name, policy in ARCHITECTURES:
        if first <= value <= last:
            return name, policy
    return "unknown", "open_recommended"


# -- packages ------------------------------------------------------------------------------------------
# The distribution's own driver, by base and major version. "open"/"proprietary" list the packages for
# that kernel-module flavour; a flavour the release does not package (or whose modules do not match its
# driver's version, as Debian 12's nvidia-open-kernel-dkms 535.261 beside nvidia-driver 535.309) is None.
# Ubuntu's names are templates: {branch} and {flavour} (the running kernel's flavour, e.g. generic, aws).
# Ubuntu's precompiled, Canonical-signed modules (linux-modules-nvidia-*) with the headless no-DKMS
# userspace, as Ubuntu Server's driver guide installs them.
DISTRO_PACKAGES: Dict[str, Dict[str, Dict[str, Optional[List[str]]]]] = {
    "debian": {
        "11": {"proprietary": ["nvidia-driver", "nvidia-kernel-dkms"], "open": None},
        "12": {"proprietary": ["nvidia-driver", "nvidia-kernel-dkms", "firmware-nvidia-gsp"], "open": None},
        "13": {
            "proprietary": ["nvidia-driver", "nvidia-kernel-dkms", "firmware-nvidia-gsp"],
            "open": ["nvidia-driver", "nvidia-open-kernel-dkms", "firmware-nvidia-gsp"],
        },
    },
    "ubuntu": {
        "*": {
            "proprietary": [
                "nvidia-headless-no-dkms-{branch}-server",
                "nvidia-utils-{branch}-server",
                "linux-modules-nvidia-{branch}-server-{flavour}",
            ],
            "open": [
                "nvidia-headless-no-dkms-{branch}-server-open",
                "nvidia-utils-{branch}-server",
                "linux-modules-nvidia-{branch}-server-open-{flavour}",
            ],
        },
    },
}
# The modules for the running kernel itself (Ubuntu: the flavour metapackage above follows new kernels).
DISTRO_RUNNING_MODULES = {
    "ubuntu": {
        "proprietary": "linux-modules-nvidia-{branch}-server-{release}",
        "open": "linux-modules-nvidia-{branch}-server-open-{release}",
    },
}
# The branch Ubuntu installs when nvidia_driver_branch is empty (its -server branch for datacenter GPUs).
UBUNTU_DEFAULT_BRANCH = {"20.04": "535", "22.04": "570", "24.04": "570"}
# Debian's driver branch per release (nvidia_driver_branch must name it, if set).
DEBIAN_BRANCH = {"11": "470", "12": "535", "13": "550"}

# NVIDIA's CUDA repository (nvidia_driver_source: auto). {branch}: nvidia_driver_branch.
CUDA_PACKAGES = {
    "apt": {"open": "nvidia-open", "proprietary": "cuda-drivers"},
    "dnf": {"open": "nvidia-open", "proprietary": "cuda-drivers"},
}
CUDA_BRANCH_PACKAGES = {
    "apt": {"open": "nvidia-open-{branch}", "proprietary": "cuda-drivers-{branch}"},
    "dnf": {"open": "nvidia-open", "proprietary": "cuda-drivers"},
}
# dnf holds a branch with NVIDIA's nvidia-driver module stream (EL 8, 9 and Amazon Linux 2023).
DNF_MODULE_STREAM = {"open": "{branch}-open", "proprietary": "{branch}-dkms"}
DNF_MODULE_RELEASES = {("rhel", "8"), ("rhel", "9"), ("amzn", "2023")}

# Fabric Manager for NVSwitch hosts, per source and manager ({branch}: the driver's branch).
FABRICMANAGER = {
    ("auto", "apt"): "nvidia-fabricmanager-{branch}",
    ("auto", "dnf"): "nvidia-fabricmanager-{branch}",
    ("distro", "ubuntu"): "nvidia-fabricmanager-{branch}",
    ("runfile", "apt"): "nvidia-fabricmanager-{branch}",
    ("runfile", "dnf"): "nvidia-fabricmanager-{branch}",
}

# Kernel headers: the running kernel's package and the flavour's metapackage (new kernels get headers).
HEADERS = {
    "debian": {"running": "linux-headers-{release}", "meta": "linux-headers-{flavour}"},
    "ubuntu": {"running": "linux-headers-{release}", "meta": "linux-headers-{flavour}"},
    "rhel": {"running": "kernel-devel-{release}", "meta": "kernel-devel"},
    "amzn": {"running": "kernel-devel-{release}", "meta": "kernel-devel"},
}
# The flavour when the running kernel's release names none (a custom kernel; an image build's container).
DEFAULT_FLAVOUR = {
    ("debian", "x86_64"): "amd64",
    ("debian", "aarch64"): "arm64",
    ("ubuntu", "x86_64"): "generic",
    ("ubuntu", "aarch64"): "generic",
}
DKMS_PACKAGE = {"apt": "dkms", "dnf": "dkms"}

# Debian 6.12.38+deb13-amd64, 6.1.0-28-cloud-amd64; Ubuntu 6.8.0-1015-aws, 5.15.0-91-generic.
_FLAVOUR_RE = re.compile(r"^\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+)-([a-z0-9][a-z0-9-]*)$")

HOLD_APT_PATH = "/etc/apt/preferences.d/gpu-install-nvidia-driver.pref"
HOLD_DNF_PATH = "/etc/dnf/modules.d/nvidia-driver.module"
HOLD_PATH = {"apt": HOLD_APT_PATH, "dnf": HOLD_DNF_PATH}
# NVIDIA's runfile installs its own uninstaller; gpu-install records the runfile it ran here.
RUNFILE_UNINSTALLER = "/usr/bin/nvidia-uninstall"
RUNFILE_STATE = "/var/lib/gpu-install/nvidia-driver-runfile.sha256"
RUNFILE_UNINSTALL = [RUNFILE_UNINSTALLER, "--silent"]
# Written when gpu_install_drain_command drained the node, removed when gpu_install_undrain_command brought it
# back: a node left drained (a failed run, a reboot gpu-install does not make) is undrained by the next run that
# finds the driver in place.
DRAIN_MARKER = "/var/lib/gpu-install/nvidia-driver-drained"
# Binary packages of the driver's source packages (Debian's nvidia-graphics-drivers, NVIDIA's CUDA repository,
# Ubuntu's -server builds): one branch for all of them keeps module and libraries in step.
HOLD_APT_PACKAGES = (
    "nvidia-* libnvidia-* libcuda1* libcuda1-* libnvcuvid1 libnvoptix1 libgl1-nvidia-* libegl-nvidia* "
    "libgles-nvidia* libglx-nvidia* xserver-xorg-video-nvidia* firmware-nvidia-gsp* cuda-drivers* "
    "linux-modules-nvidia-* linux-objects-nvidia-* linux-signatures-nvidia-*"
)

BLACKLIST_PATH = "/etc/modprobe.d/gpu-install-blacklist-nouveau.conf"
BLACKLIST_TEXT = (
    "# Written by gpu-install: the NVIDIA driver needs the GPUs; nouveau and nova_core must not take them.\n"
    "blacklist nouveau\n"
    "options nouveau modeset=0\n"
    "blacklist nova_core\n"
)
INITRAMFS = {"apt": ["update-initramfs", "-u"], "dnf": ["dracut", "-f"]}

MOK_STEPS = (
    "create and enroll a Machine Owner Key for DKMS (Debian and Ubuntu: `dkms generate_mok` or "
    "`update-secureboot-policy --new-key`, then `mokutil --import /var/lib/dkms/mok.pub`, reboot and confirm "
    "the enrolment in the MOK manager), then run gpu-install again"
)


def kernel_flavour(release: Optional[str]) -> Optional[str]:
    """The flavour a kernel release names (amd64, cloud-amd64, generic, aws), or None for a custom one."""
    match = _FLAVOUR_RE.match(release or "")
    return match.group(1) if match else None


def branch_of(version: Optional[str]) -> Optional[str]:
    """The branch (major version) of a driver or package version: 550.163.01-2 -> 550, 1:550.1 -> 550."""
    match = re.match(r"^(?:\d+:)?(\d+)\.", version or "")
    return match.group(1) if match else None


def apt_hold_text(branch: str) -> str:
    """The apt preferences file that keeps every NVIDIA driver package on one branch."""
    return (
        "# Written by gpu-install (nvidia_driver_branch): keep the NVIDIA driver's kernel module and its\n"
        f"# userspace libraries on branch {branch}, so that upgrades cannot split them\n"
        '# ("Failed to initialize NVML: Driver/library version mismatch").\n'
        f"Package: {HOLD_APT_PACKAGES}\n"
        f"Pin: version {branch}.*\n"
        "Pin-Priority: 1000\n"
    )


def dnf_hold_text(stream: str) -> str:
    """What ``dnf module enable nvidia-driver:STREAM`` writes: dnf then stays on that stream."""
    return f"[nvidia-driver]\nname=nvidia-driver\nstream={stream}\nprofiles=\nstate=enabled\n"


def choose_kernel_modules(
    setting: str, gpus: Sequence[Dict[str, Any]], open_offered: bool, source_default: str
) -> Tuple[Optional[str], Optional[str]]:
    """(open|proprietary, None) or (None, refusal reason).

    auto: open where a GPU requires it (Blackwell) or where every GPU supports it and the source offers it
    (NVIDIA's recommendation since R560); proprietary where a GPU predates Turing; with no GPU (an image
    build), the source's own default.
    """
    found = [(gpu, *architecture(gpu.get("device_id"))) for gpu in gpus]
    needs_open = [f"{g.get('name') or g.get('device_id')} ({arch})" for g, arch, p in found if p == "open_required"]
    no_open = [f"{g.get('name') or g.get('device_id')} ({arch})" for g, arch, p in found if p == "proprietary"]
    if needs_open and no_open:
        return None, (
            f"This host mixes GPUs that need the open kernel modules ({', '.join(needs_open)}) with GPUs that "
            f"the open modules do not support ({', '.join(no_open)}): no NVIDIA driver serves both; split them "
            "across hosts."
        )
    if setting == "open" and no_open:
        return None, (
            f"nvidia_driver_kernel_modules: open needs Turing or newer GPUs and this host has {', '.join(no_open)}: "
            "use nvidia_driver_kernel_modules: proprietary or auto."
        )
    if setting == "proprietary" and needs_open:
        return None, (
            f"nvidia_driver_kernel_modules: proprietary does not support {', '.join(needs_open)}, which NVIDIA "
            "supports with the open kernel modules only: use nvidia_driver_kernel_modules: open or auto."
        )
    if setting in ("open", "proprietary"):
        choice = setting
    elif needs_open:
        choice = "open"
    elif no_open:
        choice = "proprietary"
    elif found:
        choice = "open" if open_offered else "proprietary"
    else:
        choice = source_default
    if choice == "open" and not open_offered:
        why = f"GPUs {', '.join(needs_open)} need them" if needs_open else "nvidia_driver_kernel_modules asks for them"
        return None, (
            f"The open kernel modules are not packaged by this source here ({why}): use nvidia_driver_source: auto "
            "(NVIDIA's CUDA repository) or runfile."
        )
    return choice, None


def _refuse(reason: str) -> Dict[str, Any]:
    return {"code": UNSUPPORTED, "reason": " ".join(reason.split())}


def plan(facts: Dict[str, Any], settings: Dict[str, Any], mok_enrolled: bool = False) -> Dict[str, Any]:
    """Everything the role installs and writes, or the refusal (exit 3) that stops it before any change.

    settings: source, branch, kernel_modules, image_build. mok_enrolled: DKMS has a signing key that the
    firmware trusts (a live probe; Secure Boot hosts need it for DKMS-built modules).
    """
    osf = facts.get("os") or {}
    like = osf.get("like") or {}
    base = str(like.get("id") or osf.get("id") or "")
    version = str(like.get("version_id") or osf.get("version_id") or "")
    major = version.split(".", maxsplit=1)[0]
    arch = str(osf.get("arch") or "x86_64")
    manager = "dnf" if osf.get("family") == "redhat" else "apt"
    source = settings.get("source", "auto")
    branch = str(settings.get("branch") or "")
    image_build = bool(settings.get("image_build"))
    kernel = facts.get("kernel") or {}
    release = kernel.get("release") or ""
    flavour = kernel_flavour(release)
    gpus = facts.get("gpus") or []
    result: Dict[str, Any] = {
        "refusal": None,
        "manager": manager,
        "source": source,
        "kernel_modules": None,
        "branch": branch,
        "packages": [],
        "headers": [],
        "running_kernel_packages": [],
        "fabricmanager": [],
        "hold": None,
        "dkms": False,
        "signed_modules": False,
        "blacklist": {"path": BLACKLIST_PATH, "content": BLACKLIST_TEXT},
        "initramfs": INITRAMFS[manager],
        "hold_path": HOLD_PATH[manager],
        # What leaves first when the driver's source or branch changes (switch(), filled by the module).
        "installed": {"source": None, "branch": ""},
        "switch": False,
        "remove": [],
        "removed_versions": [],
        "uninstall_runfile": False,
        "runfile_uninstall": RUNFILE_UNINSTALL,
        "runfile_state": RUNFILE_STATE,
        "drain_marker": DRAIN_MARKER,
    }
    if source == "none":
        return result
    if branch and not re.fullmatch(r"\d{3,4}", branch):
        result["refusal"] = _refuse(
            f'nvidia_driver_branch: "{branch}" is not a driver branch: give its major number, e.g. "550".'
        )
        return result

    # The source's packages and what it offers.
    release_table: Optional[Dict[str, Optional[List[str]]]] = None
    if source == "distro":
        table = DISTRO_PACKAGES.get(base)
        if table is None:
            result["refusal"] = _refuse(
                f"nvidia_driver_source: distro - {osf.get('name') or base} packages no NVIDIA driver of its own: use "
                "nvidia_driver_source: auto (NVIDIA's CUDA repository) or runfile."
            )
            return result
        release_table = table.get(major) or table.get("*")
        if release_table is None:
            result["refusal"] = _refuse(
                f"nvidia_driver_source: distro is not available on {osf.get('name') or base}: "
                "use nvidia_driver_source: auto."
            )
            return result
        if base == "debian":
            own = DEBIAN_BRANCH.get(major, "")
            if branch and branch != own:
                result["refusal"] = _refuse(
                    f"nvidia_driver_branch: {branch} is not Debian {major}'s driver branch ({own}): leave it "
                    f'empty, set "{own}", or use nvidia_driver_source: auto for other branches.'
                )
                return result
            branch = branch or own
        elif base == "ubuntu":
            branch = branch or UBUNTU_DEFAULT_BRANCH.get(version, "570")
        open_offered = release_table.get("open") is not None
        source_default = "proprietary"
    elif source == "auto":
        open_offered, source_default = True, "open"
    else:  # runfile
        open_offered, source_default = True, "open"
    result["branch"] = branch

    modules, reason = choose_kernel_modules(settings.get("kernel_modules", "auto"), gpus, open_offered, source_default)
    if reason:
        result["refusal"] = _refuse(reason)
        return result
    assert modules is not None
    result["kernel_modules"] = modules

    fill = {"branch": branch, "flavour": flavour or DEFAULT_FLAVOUR.get((base, arch), ""), "release": release}
    if source == "distro" and release_table is not None:
        names = release_table[modules] or []
        result["packages"] = [n.format(**fill) for n in names]
        running = DISTRO_RUNNING_MODULES.get(base, {}).get(modules)
        if running and release and not image_build:
            result["packages"].append(running.format(**fill))
            result["running_kernel_packages"].append(running.format(**fill))
        result["signed_modules"] = base == "ubuntu"
        if base == "debian" and branch:
            result["packages"] = [
                f"{n}={branch}.*" if n.startswith(("nvidia-", "firmware-nvidia")) else n for n in result["packages"]
            ]
    elif source == "auto":
        table_for = CUDA_BRANCH_PACKAGES if branch else CUDA_PACKAGES
        result["packages"] = [table_for[manager][modules].format(**fill)]
    result["dkms"] = not result["signed_modules"]

    # Kernel headers (DKMS builds against them; the metapackage brings them for future kernels).
    heads = HEADERS.get(base)
    if heads:
        meta = heads["meta"].format(**fill)
        result["headers"] = [] if meta.endswith("-") else [meta]
        # Headers already in /lib/modules/RELEASE/build (packaged, or a custom kernel's own) are used as they are.
        if release and not image_build and not kernel.get("headers_installed"):
            running_headers = heads["running"].format(**fill)
            result["headers"].insert(0, running_headers)
            result["running_kernel_packages"].insert(0, running_headers)
    if result["dkms"]:
        result["packages"].append(DKMS_PACKAGE[manager])

    # Fabric Manager of the same branch on NVSwitch hosts.
    if facts.get("nvswitches"):
        template = FABRICMANAGER.get((source, manager)) or FABRICMANAGER.get((source, base))
        if template is None:
            result["refusal"] = _refuse(
                f"This host has NVSwitches, which need NVIDIA Fabric Manager of the driver's branch, and "
                f"{osf.get('name') or base} packages none: use nvidia_driver_source: auto (NVIDIA's CUDA repository)."
            )
            return result
        if not branch:
            result["refusal"] = _refuse(
                "This host has NVSwitches, whose Fabric Manager must match the driver's branch: set "
                'nvidia_driver_branch (e.g. "550").'
            )
            return result
        result["fabricmanager"] = [template.format(**fill)]

    # Secure Boot: only modules the firmware trusts may be installed, never a half-loaded driver.
    if facts.get("secure_boot") and not result["signed_modules"] and not mok_enrolled:
        result["refusal"] = _refuse(
            "Secure Boot is on and the NVIDIA kernel modules this source builds (DKMS or the runfile) are unsigned, "
            "so the kernel would refuse them: "
            + ("use nvidia_driver_source: distro for Canonical's signed modules, or " if base == "ubuntu" else "")
            + MOK_STEPS
            + "."
        )
        return result

    # Hold the branch (an empty branch is held at the one installed, by the role, after the install).
    if branch and source in ("auto", "distro"):
        result["hold"] = hold_for(manager, base, major, branch, modules)
        if result["hold"] is None and manager == "dnf":
            result["refusal"] = _refuse(
                f"nvidia_driver_branch cannot be held on {osf.get('name') or base} yet (NVIDIA's nvidia-driver module "
                "streams exist for RHEL 8, 9 and Amazon Linux 2023): leave nvidia_driver_branch empty."
            )
    return result


def hold_for(manager: str, base: str, major: str, branch: str, modules: str) -> Optional[Dict[str, str]]:
    """The file that holds the branch: apt preferences, or dnf's nvidia-driver module stream."""
    if manager == "apt":
        return {"path": HOLD_APT_PATH, "content": apt_hold_text(branch)}
    if (base, major) in DNF_MODULE_RELEASES:
        return {"path": HOLD_DNF_PATH, "content": dnf_hold_text(DNF_MODULE_STREAM[modules].format(branch=branch))}
    return None


def reboot_required(
    driver: Dict[str, Any], installed_version: Optional[str], fresh_install: bool, nouveau_loaded: bool = False
) -> bool:
    """The installed driver cannot run in the running kernel until a reboot.

    driver: the detected ``driver`` facts after the install and the attempt to load it. installed_version:
    the installed driver package's version (or the runfile's). nouveau still loaded holds the GPUs until the
    blacklisted boot.
    """
    if nouveau_loaded and (fresh_install or not driver.get("loaded")):
        return True
    loaded = driver.get("version")
    if driver.get("loaded") and loaded and installed_version:
        return not re.match(r"^(?:\d+:)?" + re.escape(loaded) + r"(?:[-~+.]|$)", installed_version)
    return bool(fresh_install and not driver.get("loaded"))


def runfile_version(url: str) -> Optional[str]:
    """The driver version in NVIDIA's runfile name (NVIDIA-Linux-x86_64-550.163.01.run)."""
    match = re.search(r"NVIDIA-Linux-[A-Za-z0-9_]+-(\d+\.\d+(?:\.\d+)?)(?:-[a-z]+)?\.run$", url)
    return match.group(1) if match else None


RUNFILE_OPTIONS = ("--silent", "--dkms", "--no-questions", "--ui=none", "--no-x-check", "--no-nouveau-check")
RUNFILE_MODULE_TYPE = {"open": "-m=kernel-open", "proprietary": "-m=kernel"}


def runfile_argv(path: str, modules: str) -> List[str]:
    """How NVIDIA's .run installs silently with DKMS and writes no X configuration."""
    return ["sh", path, *RUNFILE_OPTIONS, RUNFILE_MODULE_TYPE[modules]]


_DKMS_LINE = re.compile(r"^([^/,\s]+)[/,]\s*([^,]+),\s*([^,]+),\s*([^:]+):\s*(.+)$")


def dkms_missing(status: str, kernels: Sequence[str]) -> List[str]:
    """Kernels (with headers) for which no registered nvidia* DKMS module is built and installed.

    status: ``dkms status`` output (dkms 3 ``name/version, kernel, arch: state``; dkms 2 ``name, version, ...``).
    Nothing is missing when no nvidia* module is registered (precompiled modules, or none installed yet).
    """
    registered = False
    done = set()
    for line in status.splitlines():
        match = _DKMS_LINE.match(line.strip())
        if not match or not match.group(1).startswith("nvidia"):
            continue
        registered = True
        if match.group(5).strip().startswith("installed"):
            done.add(match.group(3).strip())
    if not registered:
        return []
    return [k for k in kernels if k not in done]


# ---------------------------------------------------------------------------
# Kernel update guard: is the module there for every installed kernel?
# ---------------------------------------------------------------------------
_MODULE_NAMES = re.compile(r"^nvidia(-current)?\.ko(\.(xz|zst|gz))?$")


def _release_key(release: str) -> Tuple[Any, ...]:
    """Sort key of a kernel release: numbers as numbers (ASCII digits only), words after numbers."""
    return tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+~]", release))


def kernels_status(modules_dir: str = "/lib/modules") -> List[Dict[str, Any]]:
    """Installed kernels, newest first: {release, headers, nvidia_module} (DKMS-built or precompiled)."""
    out: List[Dict[str, Any]] = []
    try:
        releases = [r for r in os.listdir(modules_dir) if os.path.isdir(os.path.join(modules_dir, r))]
    except OSError:
        return out
    for release in sorted(releases, key=_release_key, reverse=True):
        tree = os.path.join(modules_dir, release)
        found = False
        for _dirpath, _dirs, files in os.walk(tree):
            if any(_MODULE_NAMES.match(name) for name in files):
                found = True
                break
        out.append({"release": release, "headers": os.path.exists(os.path.join(tree, "build")), "nvidia_module": found})
    return out


def kernel_guard(kernels: Sequence[Dict[str, Any]], running: Optional[str]) -> Optional[str]:
    """A warning when the newest installed kernel has no NVIDIA module (a reboot would lose the GPU)."""
    if not kernels or not any(k["nvidia_module"] for k in kernels):
        return None
    newest = kernels[0]
    if newest["nvidia_module"]:
        return None
    fix = (
        "run gpu-install apply to build it (its headers are installed)"
        if newest["headers"]
        else "install its headers, then run gpu-install apply"
    )
    where = " (the running kernel)" if newest["release"] == running else ""
    return (
        f"The newest installed kernel {newest['release']}{where} has no NVIDIA module: {fix} before rebooting into it."
    )


# ---------------------------------------------------------------------------
# Switching the driver's source or branch on a host that has one installed
# ---------------------------------------------------------------------------
# Every package of an NVIDIA driver installation, any source (fnmatch globs): the branch hold's globs, plus
# RHEL's kernel module packages. The container toolkit (libnvidia-container1 1.17, nvidia-container-toolkit)
# and Debian's CUDA toolkit (nvidia-cuda-toolkit 12.0) match some of them, but carry no driver branch, so they
# are never taken for the driver (package_branch below).
DRIVER_PACKAGE_GLOBS: Tuple[str, ...] = tuple(HOLD_APT_PACKAGES.split()) + ("kmod-nvidia*", "dkms-nvidia*")
# Which source installed the driver, by the packages that only that source's install has, first match wins
# (full-match patterns per package manager). NVIDIA's CUDA repository is told by its metapackages: its other
# packages share their names with Debian's (nvidia-driver, libcuda1, ...).
INSTALLED_SOURCE: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "apt": (
        ("auto", r"cuda-drivers(-\d+)?|nvidia-open(-\d+)?"),
        ("distro", r"nvidia-driver|nvidia-(open-)?kernel-dkms|nvidia-headless-no-dkms-\d+-server(-open)?"),
    ),
    "dnf": (("auto", r"cuda-drivers(-\d+)?|nvidia-open|nvidia-driver|kmod-nvidia.*"),),
}
# A branch in a package's name (nvidia-open-550, linux-modules-nvidia-535-server-generic, libnvidia-gl-535).
_NAME_BRANCH = re.compile(r"-(\d{3,4})(?:-|$)")
# Driver branches are three or four digits from 300 on (the toolkit's 1.17 and CUDA's 12.0 are not).
_DRIVER_BRANCH = re.compile(r"[3-9]\d\d|[1-9]\d{3}")


def package_branch(name: str, version: Optional[str]) -> Optional[str]:
    """The driver branch a package belongs to (its name's, else its version's), or None for no driver package."""
    if not any(fnmatch.fnmatchcase(name, glob) for glob in DRIVER_PACKAGE_GLOBS):
        return None
    match = _NAME_BRANCH.search(name)
    branch = match.group(1) if match else branch_of(version)
    return branch if branch and _DRIVER_BRANCH.fullmatch(branch) else None


def installed_driver(
    manager: str, installed: Dict[str, str], runfile: bool, loaded_version: Optional[str] = None
) -> Dict[str, Any]:
    """{source, branch, packages}: the driver installed now (source None where none is).

    installed: package name -> version. runfile: NVIDIA's uninstaller or gpu-install's runfile record exists.
    packages: every installed package of a driver branch, name -> branch.
    """
    packages = {}
    for name, version in installed.items():
        branch = package_branch(name, version)
        if branch:
            packages[name] = branch
    for source, pattern in INSTALLED_SOURCE.get(manager, ()):
        for name in sorted(installed):
            if re.fullmatch(pattern, name) and name in packages:
                return {"source": source, "branch": packages[name], "packages": packages}
    if runfile:
        return {"source": "runfile", "branch": branch_of(loaded_version) or "", "packages": packages}
    return {"source": None, "branch": "", "packages": packages}


def switch(
    target: Dict[str, Any],
    installed: Dict[str, str],
    runfile_record: bool,
    uninstaller: bool,
    loaded_version: Optional[str] = None,
) -> Dict[str, Any]:
    """What leaves before the planned driver goes in: {installed, switch, remove, removed_versions, uninstall_runfile,
    refusal}.

    target: the plan (manager, source, branch). installed: installed packages, name -> version. runfile_record:
    gpu-install's record of a runfile it ran; uninstaller: NVIDIA's uninstaller exists. A switch is another
    source than the installed driver's, or another branch where one is set (an empty branch keeps what is
    installed). Switching leaves no package of the old branch behind (purged, configuration too: the new
    branch brings its own); a runfile's driver leaves through NVIDIA's own uninstaller, and a newer runfile
    replaces an older one by itself.
    """
    manager = target.get("manager", "apt")
    source, branch = target.get("source"), str(target.get("branch") or "")
    now = installed_driver(manager, installed, runfile_record or uninstaller, loaded_version)
    result: Dict[str, Any] = {
        "installed": {"source": now["source"], "branch": now["branch"]},
        "switch": False,
        "remove": [],
        "removed_versions": [],
        "uninstall_runfile": False,
        "refusal": None,
    }
    if source in (None, "none") or now["source"] is None:
        return result
    if now["source"] == source and (source == "runfile" or not branch or now["branch"] == branch):
        return result
    result["switch"] = True
    if now["source"] == "runfile":
        if not uninstaller:
            result["refusal"] = _refuse(
                f"The NVIDIA driver on this host was installed from a runfile and {RUNFILE_UNINSTALLER} is missing, so "
                f"it cannot be removed before nvidia_driver_source: {source} installs packages: remove the runfile's "
                "driver by hand (NVIDIA's installer: --uninstall), then run gpu-install again."
            )
            return result
        result["uninstall_runfile"] = True
        return result
    result["remove"] = sorted(name for name, old in now["packages"].items() if old == now["branch"])
    result["removed_versions"] = [f"{name} {installed.get(name, '')}".strip() for name in result["remove"]]
    return result
