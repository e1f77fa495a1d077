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
PACKAGE_SOURCE = 5  # errors.PACKAGE_SOURCE

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
# Ubuntu's branch, when nvidia_driver_branch is empty: the newest -server branch the archive offers for this
# kernel flavour, asked of apt (ubuntu_branches below), never a number written here.
UBUNTU_OFFERED = {
    "userspace": {
        "open": r"nvidia-headless-no-dkms-(\d+)-server-open",
        "proprietary": r"nvidia-headless-no-dkms-(\d+)-server",
    },
    "modules": {
        "open": r"linux-modules-nvidia-(\d+)-server-open-{flavour}",
        "proprietary": r"linux-modules-nvidia-(\d+)-server-{flavour}",
    },
}
# What the plan module asks apt for (apt-cache pkgnames PREFIX) and dpkg for (the kernel's metapackages).
UBUNTU_PROBE_PREFIXES = ("nvidia-headless-no-dkms-", "linux-modules-nvidia-")
KERNEL_METAPACKAGES = "linux-image-*"
# Debian's driver branch per release (nvidia_driver_branch must name it, if set).
DEBIAN_BRANCH = {"11": "470", "12": "535", "13": "550"}

# Where a vendor changed its scheme at a branch, a table is a tuple of (first branch, entry), oldest first:
# ``since(table, branch)`` picks the entry for a branch, and the newest entry for no branch (the newest driver).
# Sources and the dates they were read: docs/driver.md, "Facts".

# NVIDIA's CUDA repository (nvidia_driver_source: auto): the driver's metapackages, per kernel-module flavour. dnf
# has these on every branch; apt has them for the newest driver and, from 590, for a branch too.
CUDA_METAPACKAGES = {"open": "nvidia-open", "proprietary": "cuda-drivers"}
# apt, per branch: the driver's metapackage, and how a branch is held: up to 580 by the branch's own metapackage
# plus gpu-install's apt pin (HOLD_APT_PATH); from 590 NVIDIA dropped the branch from its package names and holds a
# branch with its nvidia-driver-pinning-<branch> package, installed before the driver.
CUDA_APT: Tuple[Tuple[int, Dict[str, Any]], ...] = (
    (0, {"open": "nvidia-open-{branch}", "proprietary": "cuda-drivers-{branch}", "pinning": None}),
    (590, {**CUDA_METAPACKAGES, "pinning": "nvidia-driver-pinning-{branch}"}),
)
# dnf: the branch is chosen by NVIDIA's nvidia-driver module stream (EL 8, 9, Amazon Linux 2023: open-dkms /
# latest-dkms for the newest, <branch>-open / <branch>-dkms for one), or, where the distribution has no module
# streams (EL 10), held with dnf's versionlock plugin on every package matching NVIDIA's glob (*nvidia*<branch>*).
DNF_MODULE = "nvidia-driver"
DNF_MODULE_STREAM = {"open": "{branch}-open", "proprietary": "{branch}-dkms"}
DNF_MODULE_NEWEST = {"open": "open-dkms", "proprietary": "latest-dkms"}
DNF_MODULE_RELEASES = {("rhel", "8"), ("rhel", "9"), ("amzn", "2023")}
VERSIONLOCK_GLOB = "*nvidia*{branch}*"
VERSIONLOCK_PLUGIN = "python3-dnf-plugin-versionlock"
VERSIONLOCK_LIST = "/etc/dnf/plugins/versionlock.list"

# Fabric Manager (and NSCQ, its NVSwitch query library) for NVSwitch hosts, of the driver's branch, per package
# source: NVIDIA's CUDA repository for apt and dnf (the runfile's driver takes them from there too), Ubuntu's archive.
FABRICMANAGER: Dict[str, Tuple[Tuple[int, Tuple[str, ...]], ...]] = {
    "apt": (
        (0, ("nvidia-fabricmanager-{branch}", "libnvidia-nscq-{branch}")),
        (580, ("nvidia-fabricmanager", "libnvidia-nscq")),
    ),
    "dnf": (
        (0, ("nvidia-fabric-manager", "libnvidia-nscq-{branch}")),
        (580, ("nvidia-fabricmanager", "libnvidia-nscq")),
    ),
    "ubuntu": ((0, ("nvidia-fabricmanager-{branch}", "libnvidia-nscq-{branch}")),),
}


def since(table: Sequence[Tuple[int, Any]], branch: str) -> Any:
    """The entry of a per-branch table for ``branch`` (the newest entry for no branch)."""
    chosen = table[0][1]
    for first, entry in table:
        if not branch or int(branch) >= first:
            chosen = entry
    return chosen


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
# dkms is not in RHEL: it comes from EPEL (repos.VENDORS["epel"]), whose packages need the distribution's CodeReady
# Builder repository enabled, by os-release ID. Oracle Linux mirrors EPEL itself (ol<N>_developer_EPEL, defined by
# its oracle-epel-release-el<N> package); Amazon Linux 2023 has no EPEL and is served by NVIDIA's repository.
# Per entry: the repositories to enable ({major}, {arch}; the first that the host defines of each group), how,
# and the packages that define them or the command (installed before).
DNF_ENABLE = ("dnf", "config-manager", "--set-enabled")
SUBSCRIPTION_ENABLE = ("subscription-manager", "repos", "--enable")
_CRB = {"epel": True, "groups": ((("{crb}", DNF_ENABLE, ""),),), "packages": ("dnf-plugins-core",)}
CODEREADY: Dict[str, Dict[str, Any]] = {
    "rhel": {
        "epel": True,
        "groups": (
            (
                ("codeready-builder-for-rhel-{major}-{arch}-rpms", SUBSCRIPTION_ENABLE, ""),
                ("codeready-builder-for-rhel-{major}-rhui-rpms", DNF_ENABLE, ""),
            ),
        ),
        "packages": ("dnf-plugins-core",),
    },
    "rocky": _CRB,
    "almalinux": _CRB,
    "centos": _CRB,
    "ol": {
        "epel": False,
        "groups": (
            (("ol{major}_codeready_builder", DNF_ENABLE, ""),),
            (("ol{major}_developer_EPEL", DNF_ENABLE, "oracle-epel-release-el{major}"),),
        ),
        "packages": ("dnf-plugins-core", "oracle-epel-release-el{major}"),
    },
}
# The rebuilds' CodeReady Builder repository id: PowerTools on EL 8, CRB from EL 9.
CRB_ID = {"8": "powertools"}
CRB_ID_DEFAULT = "crb"

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
# Ubuntu's precompiled modules (linux-modules-nvidia-*, linux-objects-nvidia-*, linux-signatures-nvidia-*) are
# versioned by the kernel (6.8.0-90.91), so a version pin never matches them: they are held by name instead, their
# metapackage naming the branch (linux-modules-nvidia-580-server-open-generic), and the pin leaves them out.
HOLD_APT_PACKAGES = (
    "nvidia-* libnvidia-* libcuda1* libcuda1-* libnvcuvid1 libnvoptix1 libgl1-nvidia-* libegl-nvidia* "
    "libgles-nvidia* libglx-nvidia* xserver-xorg-video-nvidia* firmware-nvidia-gsp* cuda-drivers*"
)
UBUNTU_KERNEL_MODULE_GLOBS = ("linux-modules-nvidia-*", "linux-objects-nvidia-*", "linux-signatures-nvidia-*")

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


def ubuntu_kernel_flavour(images: Dict[str, str], release: Optional[str]) -> Optional[str]:
    """The flavour of Ubuntu's installed kernel metapackage (generic-hwe-24.04, aws), picked as ubuntu-drivers does.

    images: installed ``linux-image-*`` packages, name -> Depends. ubuntu-drivers (UbuntuDrivers/kerneldetection.py,
    ``_get_linux_metapackage``) takes the metapackage of the newest installed kernel image, the longest-named one
    where several depend on it (linux-image-generic-hwe-24.04 over linux-image-generic), and modules for
    ``virtual`` are ``generic`` ones (detect.py, ``get_linux_modules_metapackage``). None when no metapackage is
    installed: the running kernel's release names the flavour then.
    """
    best: Optional[Tuple[Tuple[Any, ...], str]] = None
    for name, depends in images.items():
        match = re.fullmatch(r"linux-image-([a-z][a-z0-9.+-]*)", name)
        if not match or match.group(1).startswith(("unsigned-", "extra-", "uc-")):
            continue
        deps = [d.strip().split(" ", 1)[0] for alt in depends.split(",") for d in alt.split("|") if d.strip()]
        image = next((d for d in deps if re.match(r"linux-image-(?:unsigned-)?\d", d)), None)
        if image is None:
            continue
        key = (_release_key(image.split("-", 2)[-1].replace("unsigned-", "")), match.group(1))
        if best is None or key > best:
            best = key
    if best is None:
        return None
    return "generic" if best[1] == "virtual" else best[1]


def ubuntu_branches(names: Sequence[str], modules: str, flavour: str) -> List[str]:
    """The -server branches Ubuntu's archive offers whole for this kernel flavour, newest first.

    names: the package names apt offers (``UBUNTU_PROBE_PREFIXES``). Whole means the headless userspace and the
    precompiled modules metapackage for the flavour, in the chosen kernel-module flavour.
    """
    found = []
    for part in ("userspace", "modules"):
        pattern = re.compile(UBUNTU_OFFERED[part][modules].format(flavour=re.escape(flavour)))
        found.append({m.group(1) for m in map(pattern.fullmatch, names) if m})
    return sorted(found[0] & found[1], key=int, reverse=True)


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


def plan(
    facts: Dict[str, Any],
    settings: Dict[str, Any],
    mok_enrolled: bool = False,
    probes: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Everything the role installs and writes, or the refusal (exit 3) that stops it before any change.

    settings: source, branch, kernel_modules, image_build. mok_enrolled: DKMS has a signing key that the
    firmware trusts (a live probe; Secure Boot hosts need it for DKMS-built modules). probes: what the host's
    package manager says (the plan module asks, in its ``_probes``): ``apt_names``, the package names apt offers
    with ``UBUNTU_PROBE_PREFIXES`` (None: not asked); ``kernel_images``, installed ``linux-image-*`` -> Depends;
    ``versionlock``, the text of dnf's versionlock.list.
    """
    probes = probes or {}
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
        "pinning": [],
        "repositories": [],
        "codeready": [],
        "codeready_packages": [],
        "repository_packages": {},
        "module": None,
        "versionlock": None,
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
        # gpu-install remove --driver (removal_items below).
        "initramfs_tool": INITRAMFS_TOOL[manager],
        "initramfs_pending": INITRAMFS_PENDING,
        "versionlock_delete": list(VERSIONLOCK_DELETE),
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

    if base == "ubuntu":
        flavour = ubuntu_kernel_flavour(probes.get("kernel_images") or {}, release) or flavour
    fill = {"branch": branch, "flavour": flavour or DEFAULT_FLAVOUR.get((base, arch), ""), "release": release}
    if source == "distro" and base == "ubuntu":
        why = ubuntu_branch(probes.get("apt_names"), modules, fill["flavour"], branch)
        if why[1]:
            result["refusal"] = {"code": why[2], "reason": " ".join(why[1].split())}
            return result
        branch = fill["branch"] = result["branch"] = why[0]
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
    elif source == "auto" and manager == "apt":
        scheme: Dict[str, Any] = since(CUDA_APT, branch)  # no branch: the newest scheme's metapackage, unpinned
        result["packages"] = [str(scheme[modules]).format(**fill)]
        if branch and scheme["pinning"]:
            result["pinning"] = [scheme["pinning"].format(**fill)]
    elif source == "auto":
        result["packages"] = [CUDA_METAPACKAGES[modules]]
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
        if manager == "dnf":
            result.update(dkms_source(str(osf.get("id") or base), major, arch))

    # Fabric Manager of the same branch on NVSwitch hosts.
    if facts.get("nvswitches"):
        fm_table = FABRICMANAGER.get(base if source == "distro" else manager)
        if fm_table is None:
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
        result["fabricmanager"] = [name.format(**fill) for name in since(fm_table, branch)]

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

    # What each repository's preflight checks it offers (repos.preflight): NVIDIA's repository the driver's packages,
    # EPEL dkms. apt simulates with the host's own sources beside, so dkms stays in the list there.
    dkms = DKMS_PACKAGE[manager]
    elsewhere = manager == "dnf" and bool(result["repositories"] or result["codeready"])
    if source == "auto":
        result["repository_packages"]["cuda"] = (
            result["pinning"]
            + [p for p in result["packages"] if not (p == dkms and elsewhere)]
            + result["fabricmanager"]
        )
    if result["repositories"]:
        result["repository_packages"]["epel"] = [dkms]

    # What picks and holds the branch: apt's pin, or NVIDIA's pinning package (apt, from 590); dnf's module stream
    # (the newest stream without a branch), or dnf's versionlock where there are no streams (EL 10).
    if source in ("auto", "distro") and manager == "apt" and branch and not result["pinning"]:
        result["hold"] = {"path": HOLD_APT_PATH, "content": apt_hold_text(branch)}
    elif source == "auto" and manager == "dnf":
        if (base, major) in DNF_MODULE_RELEASES:
            stream = (DNF_MODULE_STREAM if branch else DNF_MODULE_NEWEST)[modules].format(branch=branch)
            result["hold"] = {"path": HOLD_DNF_PATH, "content": dnf_hold_text(stream)}
            result["module"] = f"{DNF_MODULE}:{stream}"
        elif branch:
            locks = versionlock_entries(probes.get("versionlock") or "")
            result["versionlock"] = {
                "glob": VERSIONLOCK_GLOB.format(branch=branch),
                "plugin": VERSIONLOCK_PLUGIN,
                "path": VERSIONLOCK_LIST,
                "held": any(b == branch for b in locks.values()),
                "stale": sorted(entry for entry, b in locks.items() if b != branch),
            }
    return result


def dkms_source(os_id: str, major: str, arch: str) -> Dict[str, Any]:
    """Where dnf finds dkms: the repositories gpu-install configures (EPEL), and the distribution's own to enable.

    codeready: groups of {ids, enable (id -> argv), defined_by}: the role enables, of each group, the first id the host
    defines; a group that no id of is defined refuses the run before any change, unless a package installed first
    (defined_by) defines it.
    """
    entry = CODEREADY.get(os_id)
    if entry is None:
        return {"repositories": [], "codeready": [], "codeready_packages": []}
    fill = {"major": major, "arch": arch, "crb": CRB_ID.get(major, CRB_ID_DEFAULT)}
    groups = [
        {
            "ids": [rid.format(**fill) for rid, _argv, _by in group],
            "enable": {rid.format(**fill): [*argv, rid.format(**fill)] for rid, argv, _by in group},
            "defined_by": next((by.format(**fill) for _r, _a, by in group if by), ""),
        }
        for group in entry["groups"]
    ]
    return {
        "repositories": ["epel"] if entry["epel"] else [],
        "codeready": groups,
        "codeready_packages": [p.format(**fill) for p in entry["packages"]],
    }


def versionlock_entries(text: str) -> Dict[str, str]:
    """dnf versionlock.list entries of NVIDIA driver packages, entry -> driver branch (``name-[epoch:]version-...``)."""
    found = {}
    for line in text.splitlines():
        entry = line.strip()
        if entry.startswith(("!", "#")):
            continue  # excludes are the user's; comments
        match = re.fullmatch(r"(\S*nvidia\S*?)-(?:\d+:)?(\d+)\.[^-\s]*-\S+", entry)
        if match and _DRIVER_BRANCH.fullmatch(match.group(2)):
            found[entry] = match.group(2)
    return found


UBUNTU_NOTHING_OFFERED = (
    "Ubuntu's archive offers no NVIDIA -server driver here ({wanted}): refresh apt's lists (apt-get update) with the "
    "restricted and multiverse components enabled{or_branch}, then run again."
)


def ubuntu_branch(
    names: Optional[Sequence[str]], modules: str, flavour: str, branch: str
) -> Tuple[str, Optional[str], int]:
    """(branch, refusal reason, exit code) for Ubuntu's own driver: the set branch if offered, else the newest."""
    offered = ubuntu_branches(names or [], modules, flavour)
    suffix = "-open" if modules == "open" else ""
    wanted = (
        f"nvidia-headless-no-dkms-<branch>-server{suffix} with linux-modules-nvidia-<branch>-server{suffix}-{flavour}"
    )
    if offered and (not branch or branch in offered):
        return branch or offered[0], None, 0
    if branch and names is None:
        return branch, None, 0
    if branch and offered:
        return (
            "",
            f"nvidia_driver_branch: {branch} is not offered by Ubuntu's archive here for the {flavour} kernel "
            f"({wanted}): set one of {', '.join(offered)}, or leave it empty for the newest.",
            UNSUPPORTED,
        )
    or_branch = "" if branch else ' (or set nvidia_driver_branch, e.g. "580")'
    return "", UBUNTU_NOTHING_OFFERED.format(wanted=wanted, or_branch=or_branch), PACKAGE_SOURCE


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
DRIVER_PACKAGE_GLOBS: Tuple[str, ...] = (
    tuple(HOLD_APT_PACKAGES.split()) + UBUNTU_KERNEL_MODULE_GLOBS + ("kmod-nvidia*", "dkms-nvidia*")
)
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


# ---------------------------------------------------------------------------
# Removal (gpu-install remove --driver): what the driver role left besides its packages
# ---------------------------------------------------------------------------
# The driver's packages come from the package record (group ``driver``, module_utils/pkgrecord.py). What else the
# role wrote is found by ``removal_probes`` and listed by ``removal_items`` in the shared item shape
# (module_utils/removal.py). Who takes each back, in this order (a removal killed anywhere resumes from what is
# still there):
# - playbooks/tasks/remove_driver_before.yml, after the drain and before any package goes: NVIDIA's uninstaller for
#   a runfile's driver (``RUNFILE_UNINSTALL``; it calls dkms, which may go too), then the runfile record; it records
#   ``INITRAMFS_PENDING`` before the blacklist goes.
# - the removal module: the versionlock entries (``VERSIONLOCK_DELETE``, before the packages: dnf's versionlock
#   plugin may be one of them), then the whole files ``REMOVAL_FILES`` (the nouveau blacklist, the apt pin, dnf's
#   module stream file), backed up first where the user edited them. ``REMOVAL_KEEP`` stays for the playbook.
# - playbooks/tasks/remove_driver_after.yml: the initramfs rebuild (``INITRAMFS``, where ``INITRAMFS_TOOL`` exists),
#   then the undrain, then ``REMOVAL_KEEP`` goes.
INITRAMFS_TOOL = {"apt": "/usr/sbin/update-initramfs", "dnf": "/usr/bin/dracut"}
# Written before the blacklist goes, removed once the initramfs is rebuilt without it: a removal killed in between
# still rebuilds it next time.
INITRAMFS_PENDING = "/var/lib/gpu-install/nvidia-driver-initramfs-pending"
VERSIONLOCK_DELETE = ("dnf", "-y", "versionlock", "delete")
REMOVAL_FILES = (BLACKLIST_PATH, HOLD_APT_PATH, HOLD_DNF_PATH)
REMOVAL_KEEP = (DRAIN_MARKER, INITRAMFS_PENDING)
_MARKER = "Written by gpu-install"


def removal_probes(manager: str, root: str = "/") -> Dict[str, Any]:
    """What ``removal_items`` needs to know of the host (read-only; ``root`` for tests)."""

    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    def text(path: str) -> Optional[str]:
        try:
            with open(at(path), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    blacklist = text(BLACKLIST_PATH)
    hold = text(HOLD_APT_PATH)
    module = text(HOLD_DNF_PATH)
    return {
        "manager": manager,
        # Only files that say they are gpu-install's (the role writes its marker into both).
        "blacklist": blacklist is not None and _MARKER in blacklist[:512],
        "hold": hold is not None and _MARKER in hold[:512],
        # dnf's own format has no room for a marker: the stream file of NVIDIA's nvidia-driver module as the role
        # writes it (dnf module enable writes the same), on a dnf host only.
        "module_hold": manager == "dnf" and module is not None and bool(re.search(r"^stream=\S+$", module, re.M)),
        "versionlock": text(VERSIONLOCK_LIST) or "",
        "runfile": os.path.isfile(at(RUNFILE_STATE)),
        "uninstaller": os.path.exists(at(RUNFILE_UNINSTALLER)),
        "drain_marker": os.path.exists(at(DRAIN_MARKER)),
        "initramfs_pending": os.path.exists(at(INITRAMFS_PENDING)),
        "initramfs_tool": os.path.exists(at(INITRAMFS_TOOL.get(manager, ""))),
    }


def removal_items(probes: Dict[str, Any]) -> List[Dict[str, str]]:
    """The driver role's traces that ``remove --driver`` takes back, beside the driver's packages, in order.

    probes (``removal_probes``; a missing key means not found): manager; blacklist, hold, module_hold (gpu-install's
    files exist); versionlock (the text of dnf's versionlock.list); runfile (gpu-install's record of the runfile it
    ran), uninstaller (NVIDIA's uninstaller exists); drain_marker (a run left the node drained); initramfs_pending (a
    removal stopped before its initramfs rebuild); initramfs_tool (update-initramfs or dracut exists). Versionlock
    entries are those NVIDIA's glob (``VERSIONLOCK_GLOB``, as install.yml adds it) locks: NVIDIA packages of a
    driver branch; excludes (``!``) and other entries are the user's. Each entry's target is "LIST ENTRY".
    """
    manager = str(probes.get("manager") or "apt")
    items: List[Dict[str, str]] = []

    def add(kind: str, target: str, action: str, detail: str) -> None:
        items.append({"kind": kind, "target": target, "action": action, "detail": detail})

    for entry in sorted(versionlock_entries(str(probes.get("versionlock") or ""))):
        add("hold", f"{VERSIONLOCK_LIST} {entry}", "remove", "dnf versionlock entry of the driver branch")
    if probes.get("runfile"):
        if probes.get("uninstaller"):
            add("driver", RUNFILE_UNINSTALLER, "uninstall", "the runfile's driver, by " + " ".join(RUNFILE_UNINSTALL))
        add("state", RUNFILE_STATE, "remove", "gpu-install's record of the runfile it ran")
    if probes.get("hold"):
        add("hold", HOLD_APT_PATH, "remove", "apt pin of the driver branch")
    if probes.get("module_hold"):
        add("hold", HOLD_DNF_PATH, "remove", "dnf's nvidia-driver module stream")
    if probes.get("blacklist"):
        add("file", BLACKLIST_PATH, "remove", "nouveau and nova_core blacklist")
    if (probes.get("blacklist") or probes.get("initramfs_pending")) and probes.get("initramfs_tool"):
        argv = " ".join(INITRAMFS.get(manager, INITRAMFS["apt"]))
        add("driver", "initramfs", "rebuild", f"{argv}, without the blacklist")
    if probes.get("drain_marker"):
        add("state", DRAIN_MARKER, "remove", "an earlier run left the node drained: gpu_install_undrain_command runs")
    return items
