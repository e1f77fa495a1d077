# Copyright: gpu-install contributors
# Apache License 2.0
"""Host detection for gpu-install: one implementation, stdlib only.

Imported by the ``gpu_install.nvidia.gpu_facts`` module on managed hosts
(Python >= 3.8) and by the CLI (``gpu-install detect``).  Public API:

* ``detect(root=None) -> dict``: every fact, JSON-serialisable.  With ``root``
  every file is read below that directory (a captured tree, a mounted image)
  and nothing of the running host is consulted: no ``uname``, no subprocess.
* ``refusal(facts) -> (3, sentence) | None``: the first refusing problem.
* ``PROBLEMS``: problem code -> (refuses, description); docs/detect.md lists them.

Distribution, Docker-flavour and package differences are tables below, not
``if`` ladders.  Odd input never raises: unreadable, truncated or binary files
read as absent.
"""

from __future__ import annotations

import os
import re

from ansible_collections.gpu_install.nvidia.plugins.module_utils import engines, errors

# typing is for the type checker only (mypy reads any TYPE_CHECKING name as true): importing it costs
# `gpu-install detect` a few milliseconds at every start (bench/detect). Annotations are strings here.
# struct and bdb_hash are imported where an rpm database is read, which most hosts have none of.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

SCHEMA = 1

if TYPE_CHECKING:
    Facts = Dict[str, Any]
    Package = Dict[str, Any]
    Packages = Dict[str, Package]

# ---------------------------------------------------------------------------
# Problems: code -> (refuses, description).  The order is the refusal order.
# ---------------------------------------------------------------------------
PROBLEMS: Dict[str, Tuple[bool, str]] = {
    "tegra": (True, "An NVIDIA Tegra/Jetson system: JetPack provides its driver and container runtime."),
    "wsl": (
        True,
        "Windows Subsystem for Linux: the Windows driver serves WSL2, never a Linux driver inside it.",
    ),
    "os_release_missing": (True, "Neither /etc/os-release nor /usr/lib/os-release could be read."),
    "unsupported_os": (True, "The distribution or its version is not in the support matrix."),
    "unsupported_arch": (True, "The CPU architecture is neither x86_64 nor aarch64."),
    "podman_docker_shim": (
        True,
        "podman-docker (podman's docker command) is installed and no Docker engine is.",
    ),
    "docker_too_old": (
        True,
        "The installed Docker is older than 1.12, the first release with custom runtimes.",
    ),
    "podman_docker_shim_beside_docker": (
        False,
        "podman-docker is installed beside a Docker engine: `docker` may run podman instead.",
    ),
    "rootless_docker": (False, "Rootless Docker is set up: gpu-install configures the system daemon only."),
    "no_gpu": (False, "No NVIDIA GPU was found (the CLI refuses this outside image builds)."),
    "fabric_manager_needed": (False, "NVSwitches were found: NVIDIA Fabric Manager is needed."),
    "nouveau_loaded": (False, "The nouveau driver is loaded and must be blacklisted and unloaded."),
    "secure_boot": (False, "Secure Boot is enabled: the NVIDIA kernel modules must be signed."),
    "package_db_unreadable": (False, "The rpm database could not be read: rpm packages are not reported."),
    "detection_incomplete": (False, "A part of detection failed unexpectedly: its facts read as unknown."),
}

# ---------------------------------------------------------------------------
# Support matrix (data, general to specific).
# ---------------------------------------------------------------------------
# Every Ubuntu codename gpu-install may meet (derivatives name their base by it).
UBUNTU_CODENAMES: Dict[str, str] = {
    "xenial": "16.04",
    "bionic": "18.04",
    "cosmic": "18.10",
    "disco": "19.04",
    "eoan": "19.10",
    "focal": "20.04",
    "groovy": "20.10",
    "hirsute": "21.04",
    "impish": "21.10",
    "jammy": "22.04",
    "kinetic": "22.10",
    "lunar": "23.04",
    "mantic": "23.10",
    "noble": "24.04",
    "oracular": "24.10",
    "plucky": "25.04",
    "questing": "25.10",
}
DEBIAN_CODENAMES: Dict[str, str] = {
    "jessie": "8",
    "stretch": "9",
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
}

# base id -> how it is supported.  "versions": the supported versions; "key": how VERSION_ID
# is compared ("exact", or "major": "9.4" -> "9"); the repositories' codename of a version is
# looked up in "codenames" (codename -> version) or spelled by "codename_format".
BASES: Dict[str, Dict[str, Any]] = {
    "ubuntu": {
        "label": "Ubuntu",
        "family": "debian",
        "key": "exact",
        "versions": ("20.04", "22.04", "24.04"),
        "codenames": UBUNTU_CODENAMES,
        "codename_format": None,
        "note": " (and derivatives)",
    },
    "debian": {
        "label": "Debian",
        "family": "debian",
        "key": "major",
        "versions": ("11", "12", "13"),
        "codenames": DEBIAN_CODENAMES,
        "codename_format": None,
        "note": "",
    },
    "rhel": {
        "label": "RHEL",
        "family": "redhat",
        "key": "major",
        "versions": ("8", "9", "10"),
        "codenames": {},
        "codename_format": "rhel{}",
        "note": " and rebuilds",
    },
    "amzn": {
        "label": "Amazon Linux",
        "family": "redhat",
        "key": "major",
        "versions": ("2023",),
        "codenames": {},
        "codename_format": "amzn{}",
        "note": "",
    },
}
# os-release ID -> the base it is (rebuilds match on the major version).
BASE_OF_ID: Dict[str, str] = {
    "ubuntu": "ubuntu",
    "debian": "debian",
    "rhel": "rhel",
    "rocky": "rhel",
    "almalinux": "rhel",
    "ol": "rhel",
    "centos": "rhel",
    "amzn": "amzn",
}
# Derivatives: (ID_LIKE token, base, os-release keys naming the base's codename), in order.
DERIVED_VIA: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("ubuntu", "ubuntu", ("UBUNTU_CODENAME", "VERSION_CODENAME")),
    ("debian", "debian", ("DEBIAN_CODENAME", "VERSION_CODENAME")),
)
# Package family by os-release ID or ID_LIKE token (for refused systems too).
FAMILY_OF: Dict[str, str] = {
    "debian": "debian",
    "ubuntu": "debian",
    "rhel": "redhat",
    "centos": "redhat",
    "fedora": "redhat",
    "rocky": "redhat",
    "almalinux": "redhat",
    "ol": "redhat",
    "amzn": "redhat",
}
SUPPORTED_ARCHES: Tuple[str, ...] = ("x86_64", "aarch64")


def _supported_text() -> str:
    parts = []
    for base in BASES.values():
        versions = ", ".join(base["versions"])
        parts.append("{} {}{}".format(base["label"], versions, base["note"]))
    return ", ".join(parts)


SUPPORTED_TEXT = _supported_text()

# ---------------------------------------------------------------------------
# Architecture spellings.
# ---------------------------------------------------------------------------
# dpkg architecture -> uname -m
DEB_ARCH: Dict[str, str] = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "armhf": "armv7l",
    "armel": "armv5tel",
    "i386": "i686",
    "ppc64el": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64el": "mips64",
    "loong64": "loongarch64",
}
# ELF e_machine -> uname -m, by (e_machine, 64-bit, little-endian); None matches either.
ELF_MACHINES: Tuple[Tuple[int, Optional[bool], Optional[bool], str], ...] = (
    (62, None, None, "x86_64"),
    (183, None, None, "aarch64"),
    (3, None, None, "i686"),
    (40, None, None, "armv7l"),
    (21, None, True, "ppc64le"),
    (21, None, False, "ppc64"),
    (20, None, None, "ppc"),
    (22, True, None, "s390x"),
    (22, False, None, "s390"),
    (243, None, None, "riscv64"),
    (258, None, None, "loongarch64"),
    (8, None, None, "mips"),
)
# Files whose ELF header names the architecture of a captured tree.
ELF_PROBES: Tuple[str, ...] = ("/bin/sh", "/usr/bin/env")
# rpm packages whose ARCH names the architecture of a captured tree.
RPM_ARCH_PROBES: Tuple[str, ...] = ("glibc", "bash", "coreutils")
RPM_ARCH: Dict[str, str] = {"i386": "i686", "i586": "i686", "armv7hl": "armv7l"}

# ---------------------------------------------------------------------------
# Packages.
# ---------------------------------------------------------------------------
# (flavour, package name, package databases it counts from, daemon.json that flavour reads),
# in order of preference when several are present.  "docker" on Debian is an unrelated
# system-tray package: it counts only from rpm (Red Hat 7, Amazon Linux).
DOCKER_ENGINES: Tuple[Tuple[str, str, Tuple[str, ...], str], ...] = (
    ("docker-ce", "docker-ce", ("deb", "rpm"), "/etc/docker/daemon.json"),
    ("docker.io", "docker.io", ("deb",), "/etc/docker/daemon.json"),
    ("moby-engine", "moby-engine", ("deb", "rpm"), "/etc/docker/daemon.json"),
    ("docker-engine", "docker-engine", ("deb", "rpm"), "/etc/docker/daemon.json"),
    ("docker", "docker", ("rpm",), "/etc/docker/daemon.json"),
)
SNAP_DOCKER_CONFIG = "/var/snap/docker/current/config/daemon.json"
SNAP_DOCKER_YAML = "/snap/docker/current/meta/snap.yaml"
SNAP_DOCKER_DATA = "/var/snap/docker"
SNAP_BLOBS = "/var/lib/snapd/snaps"
# Docker installed from its static binaries (Docker's "install from binaries" page, or a copy
# carried onto a machine without network): a dockerd that no package owns.
STATIC_DOCKERD_DIRS: Tuple[str, ...] = ("/usr/local/bin", "/usr/bin", "/usr/sbin", "/usr/local/sbin")
PODMAN_SHIM = "podman-docker"
ROOTLESS_EXTRAS = "docker-ce-rootless-extras"
ROOTLESS_UNIT = ".config/systemd/user/docker.service"
DOCKER_MIN = (1, 12)

# Driver packages, in order of preference (full-match patterns).
DRIVER_PACKAGES: Tuple[str, ...] = (
    r"cuda-drivers(-\d+)?",
    r"nvidia-open(-\d+)?",
    r"nvidia-driver(-\d+)?(-server)?(-open)?",
    r"nvidia-driver-latest(-dkms)?",
    r"kmod-nvidia.*",
    r"nvidia-kernel-dkms",
    r"nvidia-dkms-\d+.*",
    r"nvidia-headless-\d+.*",
)
TOOLKIT_PACKAGES: Tuple[str, ...] = ("nvidia-container-toolkit", "nvidia-container-toolkit-base")
PERSISTENCED_PACKAGES: Tuple[str, ...] = ("nvidia-persistenced",)
PERSISTENCED_BINARIES: Tuple[str, ...] = ("/usr/bin/nvidia-persistenced", "/usr/sbin/nvidia-persistenced")
PERSISTENCED_UNIT = "nvidia-persistenced.service"
PERSISTENCED_PIDFILES: Tuple[str, ...] = (
    "/run/nvidia-persistenced/nvidia-persistenced.pid",
    "/var/run/nvidia-persistenced/nvidia-persistenced.pid",
)

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_ARCH = "/var/lib/dpkg/arch"
RPMDB_SQLITE: Tuple[str, ...] = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
RPMDB_OTHER: Tuple[str, ...] = (
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/Packages",
    "/usr/lib/sysimage/rpm/Packages.db",
)
RPM_QUERY = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"
RPMTAG_NAME, RPMTAG_VERSION, RPMTAG_RELEASE, RPMTAG_EPOCH, RPMTAG_ARCH = 1000, 1001, 1002, 1003, 1022
RPM_HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"

# ---------------------------------------------------------------------------
# PCI, /proc and /sys.
# ---------------------------------------------------------------------------
NVIDIA_VENDOR = "0x10de"
GPU_CLASSES: Tuple[str, ...] = ("0x0300", "0x0302")  # VGA, 3D controller
NVSWITCH_CLASSES: Tuple[str, ...] = ("0x0680",)  # bridge, other
PCI_DEVICES = "/sys/bus/pci/devices"
NVIDIA_PROC_GPUS = "/proc/driver/nvidia/gpus"
NVIDIA_PROC_VERSION = "/proc/driver/nvidia/version"
NVIDIA_SYS_VERSION = "/sys/module/nvidia/version"
DRIVER_FLAVOURS: Tuple[Tuple[str, str], ...] = (
    ("Open Kernel Module", "open"),
    ("Kernel Module", "proprietary"),
)
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
TEGRA_MARKERS: Tuple[str, ...] = ("/etc/nv_tegra_release",)
TEGRA_COMPATIBLE: Tuple[str, ...] = (
    "/proc/device-tree/compatible",
    "/sys/firmware/devicetree/base/compatible",
)
WSL_TEXT_FILES: Tuple[str, ...] = ("/proc/sys/kernel/osrelease", "/proc/version")
WSL_WORDS: Tuple[str, ...] = ("microsoft", "wsl")
WSL_MARKERS: Tuple[str, ...] = (
    "/proc/sys/fs/binfmt_misc/WSLInterop",
    "/proc/sys/fs/binfmt_misc/WSLInterop-late",
)
OS_RELEASE_FILES: Tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release")

_SMALL = 1 << 20
_LARGE = 64 << 20
_MAX_LINKS = 40
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EPOCH_RE = re.compile(r"^\d+:")
_UPSTREAM_RE = re.compile(r"^(\d+(?:\.\d+)*)")
_DRIVER_VERSION_RE = re.compile(r"(?<![\w.])(\d+\.\d+(?:\.\d+)*)(?![\w.])")
# dpkg status: a line with a field parse_dpkg_status reads, or a blank line (the end of a stanza); the
# first line at the start of the text, every other one after its "\n". Other line breaks that
# str.splitlines() honours are made "\n" first.
_DPKG_LINE = r"(?:(Package|Status|Version|Architecture):([^\n]*)|[^\S\n]*(?=\n|\Z))"
_DPKG_FIRST_LINE_RE = re.compile(_DPKG_LINE)
_DPKG_NEXT_LINES_RE = re.compile("\n" + _DPKG_LINE)
_OTHER_LINE_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


# ---------------------------------------------------------------------------
# The host's files, optionally below a root directory.
# ---------------------------------------------------------------------------
class Host:
    """Reads the files of the host, or of a tree below ``root`` as if it were ``/``.

    Below a root, symlinks are resolved inside the root (an absolute target
    ``/usr/src/x`` means ``ROOT/usr/src/x``), like a chroot.  Every read
    returns ``None``/``False`` on any error.
    """

    def __init__(self, root: str | None = None) -> None:
        self.root = None if root is None else os.path.abspath(os.fspath(root))

    @property
    def live(self) -> bool:
        return self.root is None

    def path(self, path: str) -> str:
        """The real path of ``path`` (an absolute host path), links followed."""
        if self.root is None:
            return path
        return self._resolve(path, follow_last=True)

    def lpath(self, path: str) -> str:
        """Like ``path`` but the last component is not followed (for lexists/readlink)."""
        if self.root is None:
            return path
        return self._resolve(path, follow_last=False)

    def _resolve(self, path: str, follow_last: bool) -> str:
        assert self.root is not None
        pending = [p for p in path.split("/") if p]
        done: List[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = os.path.join(self.root, *done, part)
            if (pending or follow_last) and os.path.islink(candidate):
                hops += 1
                try:
                    target = os.readlink(candidate)
                except (OSError, ValueError):
                    return ""  # unresolvable: reads as absent, never as a path outside the root
                if hops > _MAX_LINKS:
                    return ""  # a loop: the OS must not follow it (relative links could leave the root)
                if target.startswith("/"):
                    done = []
                pending = [p for p in target.split("/") if p] + pending
                continue
            done.append(part)
        return os.path.join(self.root, *done)

    def read_bytes(self, path: str, limit: int = _SMALL) -> bytes | None:
        try:
            with open(self.path(path), "rb") as handle:
                return handle.read(limit)
        except (OSError, ValueError):
            return None

    def read_text(self, path: str, limit: int = _SMALL) -> str | None:
        data = self.read_bytes(path, limit)
        if data is None:
            return None
        return data.decode("utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        try:
            return os.path.exists(self.path(path))
        except (OSError, ValueError):
            return False

    def lexists(self, path: str) -> bool:
        try:
            return os.path.lexists(self.lpath(path))
        except (OSError, ValueError):
            return False

    def isfile(self, path: str) -> bool:
        try:
            return os.path.isfile(self.path(path))
        except (OSError, ValueError):
            return False

    def isdir(self, path: str) -> bool:
        try:
            return os.path.isdir(self.path(path))
        except (OSError, ValueError):
            return False

    def listdir(self, path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(path)))
        except (OSError, ValueError):
            return []

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.lpath(path))
        except (OSError, ValueError):
            return None


def _clean(text: str, limit: int = 200) -> str:
    """Printable, single-line, bounded: safe inside a one-sentence message."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text[:limit]


def _problem(code: str, message: str) -> Dict[str, Any]:
    return {"code": code, "message": message, "refuses": PROBLEMS[code][0]}


# ---------------------------------------------------------------------------
# os-release
# ---------------------------------------------------------------------------
def _shell_word(value: str) -> str | None:
    """The value of one shell-style assignment right-hand side; None when it is malformed.

    '...' is literal; "..." honours backslash escapes of " \\ $ and `; an unquoted backslash
    escapes the next character; unquoted whitespace followed by # starts a comment.
    """
    out: List[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "'":
            end = value.find("'", i + 1)
            if end < 0:
                return None
            out.append(value[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= n:
                    return None
                ch = value[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n and value[i + 1] in '"\\$`':
                    ch = value[i + 1]
                    i += 1
                out.append(ch)
                i += 1
        elif ch == "\\":
            out.append(value[i + 1 : i + 2])
            i += 2
        elif ch.isspace():
            rest = value[i:].lstrip()
            if not rest or rest.startswith("#"):
                break
            out.append(" ")
            i += len(value[i:]) - len(rest)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_os_release(text: str) -> Dict[str, str]:
    """Parse os-release(5): shell-style assignments; comments and garbage lines are ignored."""
    result: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not _NAME_RE.match(key):
            continue
        word = _shell_word(value)
        if word is not None:
            result[key] = word
    return result


def _upstream(version: str | None) -> str | None:
    """Upstream version: epoch and distro suffixes stripped ("5:24.0.7-1~ubuntu" -> "24.0.7")."""
    if not version:
        return None
    match = _UPSTREAM_RE.match(_EPOCH_RE.sub("", version.strip()))
    return match.group(1) if match else None


def _version_tuple(version: str | None) -> Tuple[int, ...]:
    if not version:
        return ()
    return tuple(int(part) for part in version.split(".") if part.isascii() and part.isdigit())


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def _resolve_base(release: Dict[str, str]) -> Tuple[str, str] | None:
    """(base id, base version) this os-release is, or derives from; None if unknown."""
    os_id = release.get("ID", "").lower()
    version_id = release.get("VERSION_ID", "")
    base = BASE_OF_ID.get(os_id)
    if base is not None:
        if not version_id:
            return None
        key = BASES[base]["key"]
        return base, (_major(version_id) if key == "major" else version_id)
    like = release.get("ID_LIKE", "").lower().split()
    for token, derived, keys in DERIVED_VIA:
        if token not in like:
            continue
        codenames = BASES[derived]["codenames"]
        for key in keys:
            version = codenames.get(release.get(key, "").lower())
            if version:
                return derived, version
    return None


def _family(release: Dict[str, str], base: str | None) -> str | None:
    if base is not None:
        return str(BASES[base]["family"])
    for token in [release.get("ID", "").lower()] + release.get("ID_LIKE", "").lower().split():
        if token in FAMILY_OF:
            return FAMILY_OF[token]
    return None


def _codename(spec: Dict[str, Any], version: str) -> str | None:
    """The package repositories' spelling of a base version ("22.04" -> "jammy", "9" -> "rhel9")."""
    if spec["codename_format"]:
        return str(spec["codename_format"]).format(version)
    for codename, known in spec["codenames"].items():
        if known == version:
            return str(codename)
    return None


def _os_label(release: Dict[str, str]) -> str:
    name, version = release.get("NAME"), release.get("VERSION_ID")
    if name and version:
        return _clean(f"{name} {version}")
    return _clean(release.get("PRETTY_NAME") or name or release.get("ID") or "This distribution")


def detect_os(host: Host, arch: str | None) -> Tuple[Facts, List[Dict[str, Any]]]:
    release: Dict[str, str] | None = None
    for path in OS_RELEASE_FILES:
        text = host.read_text(path)
        if text is not None:
            release = parse_os_release(text)
            break
    facts: Facts = {
        "id": None,
        "version_id": None,
        "codename": None,
        "family": None,
        "arch": arch,
        "supported": False,
        "name": None,
        "like": None,
    }
    problems: List[Dict[str, Any]] = []
    if release is None:
        problems.append(
            _problem(
                "os_release_missing",
                "Neither /etc/os-release nor /usr/lib/os-release could be read, so the distribution is "
                f"unknown: gpu-install supports {SUPPORTED_TEXT}.",
            )
        )
    else:
        resolved = _resolve_base(release)
        base, base_version = resolved if resolved else (None, None)
        facts["id"] = release.get("ID", "").lower() or None
        facts["version_id"] = release.get("VERSION_ID") or None
        facts["name"] = release.get("PRETTY_NAME") or release.get("NAME") or None
        facts["family"] = _family(release, base)
        distro_ok = False
        codename: str | None = release.get("VERSION_CODENAME") or None
        if base is not None and base_version is not None:
            spec = BASES[base]
            facts["like"] = {"id": base, "version_id": base_version}
            distro_ok = base_version in spec["versions"]
            codename = _codename(spec, base_version) or codename
        facts["codename"] = codename
        if not distro_ok:
            label = _os_label(release)
            if base is not None and base_version is not None and facts["id"] not in BASE_OF_ID:
                label += " (based on {} {})".format(BASES[base]["label"], base_version)
            problems.append(
                _problem(
                    "unsupported_os",
                    f"{label} is not supported: gpu-install supports {SUPPORTED_TEXT}.",
                )
            )
        facts["supported"] = distro_ok
    if arch is not None and arch not in SUPPORTED_ARCHES:
        facts["supported"] = False
        problems.append(
            _problem(
                "unsupported_arch",
                "The {} architecture is not supported: gpu-install supports {}.".format(
                    _clean(arch, 40), " and ".join(SUPPORTED_ARCHES)
                ),
            )
        )
    return facts, problems


# ---------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------
def elf_arch(header: bytes) -> str | None:
    """``uname -m`` spelling of an ELF file's machine, from its first 20 bytes."""
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[5] not in (1, 2):
        return None
    little = header[5] == 1
    is64 = header[4] == 2
    machine = int.from_bytes(header[18:20], "little" if little else "big")
    for e_machine, want64, want_little, name in ELF_MACHINES:
        if e_machine != machine:
            continue
        if want64 is not None and want64 != is64:
            continue
        if want_little is not None and want_little != little:
            continue
        return name
    return None


def detect_arch(host: Host, packages: Packages) -> str | None:
    if host.live:
        try:
            return os.uname().machine or None
        except (AttributeError, OSError):
            return None
    text = host.read_text("/proc/sys/kernel/arch")
    if text and text.strip():
        return _clean(text.strip(), 40)
    for probe in ELF_PROBES:
        header = host.read_bytes(probe, 64)
        if header:
            arch = elf_arch(header)
            if arch:
                return arch
    deb = (host.read_text(DPKG_ARCH) or "").strip().split("\n")[0].strip()
    if not deb:
        base_files = packages.get("base-files")
        if base_files and base_files.get("source") == "deb":
            deb = base_files.get("arch") or ""
    if deb:
        return DEB_ARCH.get(deb, _clean(deb, 40))
    for name in RPM_ARCH_PROBES:
        pkg = packages.get(name)
        if pkg and pkg.get("source") == "rpm" and pkg.get("arch") and pkg["arch"] != "noarch":
            return RPM_ARCH.get(pkg["arch"], _clean(pkg["arch"], 40))
    return None


# ---------------------------------------------------------------------------
# Package databases
# ---------------------------------------------------------------------------
def parse_dpkg_status(text: str) -> Packages:
    """Installed packages of a dpkg status file (state "installed" only).

    The lines are those of ``str.splitlines()``; a blank line (only white space) ends a stanza, and of
    the rest only the fields read here count: one regex finds them, and the descriptions and
    dependencies that fill most of the file's 20,000 lines are never looked at from Python (a loop over
    every line was most of the time of `gpu-install detect`, bench/detect).
    """
    if any(brk in text for brk in _OTHER_LINE_BREAKS):
        text = "\n".join(text.splitlines())
    packages: Packages = {}
    stanza: Dict[str, str] = {}

    def flush() -> None:
        name = stanza.get("Package", "").strip()
        status = stanza.get("Status", "").split()
        if name and len(status) == 3 and status[2] == "installed":
            packages[name] = {
                "name": name,
                "version": stanza.get("Version", "").strip() or None,
                "arch": stanza.get("Architecture", "").strip() or None,
                "source": "deb",
            }
        stanza.clear()

    first = _DPKG_FIRST_LINE_RE.match(text)
    lines = [first.groups()] if first else []
    for key, value in lines + _DPKG_NEXT_LINES_RE.findall(text):
        if key:
            stanza[key] = value
        else:
            flush()
    flush()
    return packages


def _rpm_header_fields(blob: bytes) -> Dict[int, Any]:
    """NAME/VERSION/RELEASE/EPOCH/ARCH of one rpm header blob (raises on garbage)."""
    import struct

    if blob[:8] == RPM_HEADER_MAGIC:
        blob = blob[8:]
    index_len, data_len = struct.unpack(">ii", blob[:8])
    if index_len < 0 or data_len < 0 or 8 + index_len * 16 + data_len > len(blob):
        raise ValueError("truncated rpm header")
    data_start = 8 + index_len * 16
    data = blob[data_start : data_start + data_len]
    wanted = (RPMTAG_NAME, RPMTAG_VERSION, RPMTAG_RELEASE, RPMTAG_EPOCH, RPMTAG_ARCH)
    fields: Dict[int, Any] = {}
    for i in range(index_len):
        tag, kind, offset, count = struct.unpack(">iiii", blob[8 + i * 16 : 24 + i * 16])
        if tag not in wanted or offset < 0 or offset >= len(data):
            continue
        if kind == 4 and count >= 1:  # INT32
            (fields[tag],) = struct.unpack(">i", data[offset : offset + 4])
        elif kind in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: the first string
            end = data.find(b"\0", offset)
            fields[tag] = data[offset : end if end >= 0 else len(data)].decode("utf-8", "replace")
    return fields


def _rpm_package(name: str, epoch: Any, version: str, release: str, arch: str | None) -> Package:
    full = f"{version}-{release}" if release else version
    if epoch not in (None, "", 0, "0", "(none)"):
        full = f"{epoch}:{full}"
    return {"name": name, "version": full, "arch": arch or None, "source": "rpm"}


def _packages_from_headers(blobs: Iterable[bytes]) -> Packages:
    """Packages from rpm header blobs (sqlite or Berkeley DB alike); unreadable headers are skipped."""
    import struct

    packages: Packages = {}
    for blob in blobs:
        try:
            fields = _rpm_header_fields(blob)
        except (struct.error, ValueError, TypeError, IndexError):
            continue
        name = fields.get(RPMTAG_NAME)
        if not isinstance(name, str) or not name:
            continue
        arch = fields.get(RPMTAG_ARCH)
        packages[name] = _rpm_package(
            name,
            fields.get(RPMTAG_EPOCH),
            str(fields.get(RPMTAG_VERSION) or ""),
            str(fields.get(RPMTAG_RELEASE) or ""),
            arch if isinstance(arch, str) else None,
        )
    return packages


def read_rpm_sqlite(path: str) -> Packages:
    """Packages of an rpm sqlite database (raises sqlite3.Error/ValueError when unreadable)."""
    import sqlite3
    from urllib.parse import quote

    packages: Packages = {}
    uri = "file:{}?{}"
    last_error: Exception | None = None
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(uri.format(quote(path), mode), uri=True)
        except sqlite3.Error as exc:
            last_error = exc
            continue
        try:
            rows = conn.execute("SELECT blob FROM Packages").fetchall()
        except sqlite3.Error as exc:
            last_error = exc
            continue
        finally:
            conn.close()
        packages.update(_packages_from_headers(bytes(blob) for (blob,) in rows))
        return packages
    raise ValueError(str(last_error) if last_error else "unreadable")


def read_rpm_bdb(path: str) -> Packages:
    """Packages of an rpm Berkeley DB ``Packages`` file (raises ValueError when unreadable)."""
    from ansible_collections.gpu_install.nvidia.plugins.module_utils import bdb_hash

    return _packages_from_headers(bdb_hash.iter_values(path))


def parse_rpm_query(text: str) -> Packages:
    """Packages from ``rpm -qa --qf RPM_QUERY`` output."""
    packages: Packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 4 or not fields[0]:
            continue
        arch = fields[4] if len(fields) > 4 else None
        packages[fields[0]] = _rpm_package(fields[0], fields[1], fields[2], fields[3], arch)
    return packages


def _rpm_query_live() -> Packages:
    import subprocess  # here, not at the top: detect runs no command on most hosts, and the import costs its start

    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(
        ["rpm", "-qa", "--qf", RPM_QUERY],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ValueError(_clean(proc.stderr.decode("utf-8", "replace"), 120) or f"rpm exited {proc.returncode}")
    return parse_rpm_query(proc.stdout.decode("utf-8", "replace"))


def read_packages(host: Host) -> Tuple[Packages, List[Dict[str, Any]]]:
    """Installed packages from dpkg and rpm (rpm wins a name clash)."""
    problems: List[Dict[str, Any]] = []
    packages: Packages = {}
    status = host.read_text(DPKG_STATUS, _LARGE)
    if status:
        packages.update(parse_dpkg_status(status))
    rpm: Packages = {}
    where: str | None = None
    why = ""
    try:
        for path in RPMDB_SQLITE:
            if host.exists(path):
                where = path
                rpm = read_rpm_sqlite(host.path(path))
                break
        else:
            other = [p for p in RPMDB_OTHER if host.exists(p)]
            if other:
                where = other[0]
                if not where.endswith(".db"):  # Berkeley DB (RHEL 8): read here, rpm only as the live fallback
                    try:
                        rpm = read_rpm_bdb(host.path(where))
                    except ValueError as exc:
                        if not host.live:
                            raise
                        try:
                            rpm = _rpm_query_live()
                        except Exception as live_exc:
                            raise ValueError(f"{exc}; rpm -qa: {live_exc}") from None
                elif host.live:  # ndb (SUSE): only rpm reads it
                    rpm = _rpm_query_live()
                else:
                    raise ValueError("not an sqlite database; only rpm on the live host reads it")
    except Exception as exc:  # sqlite3.Error, OSError, a missing rpm: the db reads as absent
        why = _clean(str(exc), 120) or type(exc).__name__
    if why:
        problems.append(
            _problem(
                "package_db_unreadable",
                f"The rpm database {where} could not be read ({why}): rpm packages are not reported.",
            )
        )
    packages.update(rpm)
    return packages, problems


# ---------------------------------------------------------------------------
# Docker
# ---------------------------------------------------------------------------
def _snap_docker(host: Host) -> Package | None:
    text = host.read_text(SNAP_DOCKER_YAML)
    version: str | None = None
    if text is not None:
        for line in text.splitlines():
            if line.startswith("version:"):
                version = line.split(":", 1)[1].strip().strip("'\"") or None
                break
        return {"name": "docker", "version": version, "arch": None, "source": "snap"}
    blobs = [n for n in host.listdir(SNAP_BLOBS) if n.startswith("docker_") and n.endswith(".snap")]
    if blobs and host.isdir(SNAP_DOCKER_DATA):
        return {"name": "docker", "version": None, "arch": None, "source": "snap"}
    return None


def _rootless_users(host: Host) -> List[str]:
    homes = ["/home/" + name for name in host.listdir("/home")] + ["/root"]
    return [os.path.basename(home) for home in homes if host.exists(home + "/" + ROOTLESS_UNIT)]


def _dockerd_version(path: str) -> str | None:
    """``dockerd --version`` of a live host's static dockerd ("Docker version 26.1.5+dfsg1, build ...")."""
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(rb"version\s+v?(\d+(?:\.\d+)+)", out)
    return match.group(1).decode("ascii") if match else None


def _static_docker(host: Host) -> Package | None:
    """A dockerd no package owns: in the usual directories, or (live hosts) on PATH."""
    dirs = list(STATIC_DOCKERD_DIRS)
    if host.live:
        dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.startswith("/") and d not in dirs]
    for directory in dirs:
        path = directory.rstrip("/") + "/dockerd"
        if host.isfile(path):
            version = _dockerd_version(path) if host.live else None
            return {"name": "dockerd", "version": version, "arch": None, "source": "static", "path": path}
    return None


def detect_docker(host: Host, packages: Packages) -> Tuple[Facts, List[Dict[str, Any]]]:
    found: List[Tuple[str, Package, str]] = []
    for flavour, name, sources, config in DOCKER_ENGINES:
        pkg = packages.get(name)
        if pkg and pkg.get("source") in sources:
            found.append((flavour, pkg, config))
    snap = _snap_docker(host)
    if snap is not None:
        found.append(("snap", snap, SNAP_DOCKER_CONFIG))
    if not found:
        static = _static_docker(host)
        if static is not None:
            found.append(("static", static, "/etc/docker/daemon.json"))
    shim = packages.get(PODMAN_SHIM)
    facts: Facts = {
        "flavour": None,
        "version": None,
        "package": None,
        "config_path": None,
        "rootless": False,
        "podman_shim": shim is not None,
        "engines": [f for f, _, _ in found],
    }
    problems: List[Dict[str, Any]] = []
    if found:
        flavour, pkg, config = found[0]
        facts.update(
            flavour=flavour,
            version=_upstream(pkg.get("version")),
            package={"name": pkg["name"], "version": pkg.get("version")},
            config_path=config,
        )
        if facts["version"] and _version_tuple(facts["version"]) < DOCKER_MIN:
            problems.append(
                _problem(
                    "docker_too_old",
                    "Docker {} ({} {}) is older than {}, the first release with custom runtimes: "
                    "upgrade or remove it.".format(
                        facts["version"], pkg["name"], pkg.get("version"), ".".join(map(str, DOCKER_MIN))
                    ),
                )
            )
        if shim is not None:
            problems.append(
                _problem(
                    "podman_docker_shim_beside_docker",
                    "podman-docker is installed beside {}: the docker command may run podman instead of the "
                    "Docker engine gpu-install configures.".format(pkg["name"]),
                )
            )
    elif shim is not None:
        problems.append(
            _problem(
                "podman_docker_shim",
                "Found podman's docker shim (podman-docker {}), not Docker: remove podman-docker so that "
                "gpu-install can install Docker, or install a Docker engine first.".format(shim.get("version")),
            )
        )
    if ROOTLESS_EXTRAS in packages:
        users = _rootless_users(host)
        if users:
            facts["rootless"] = True
            problems.append(
                _problem(
                    "rootless_docker",
                    "Rootless Docker is set up for {}: gpu-install configures the system daemon only, "
                    "so rootless daemons need their own nvidia runtime configuration.".format(", ".join(users)),
                )
            )
    return facts, problems


# ---------------------------------------------------------------------------
# GPUs, NVSwitches, driver
# ---------------------------------------------------------------------------
def _pci_address(text: str) -> str | None:
    """Canonical ``dddd:bb:dd.f`` (lower case) of a PCI address; None if it is not one."""
    match = re.match(r"^\s*(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*$", text)
    if not match:
        return None
    domain, bus, dev, fn = match.groups()
    return "{:04x}:{:02x}:{:02x}.{}".format(int(domain or "0", 16), int(bus, 16), int(dev, 16), fn)


def _nvidia_proc_gpus(host: Host) -> Dict[str, Dict[str, Any]]:
    """/proc/driver/nvidia/gpus/*/information by canonical PCI address."""
    result: Dict[str, Dict[str, Any]] = {}
    for entry in host.listdir(NVIDIA_PROC_GPUS):
        text = host.read_text(f"{NVIDIA_PROC_GPUS}/{entry}/information")
        if text is None:
            continue
        info: Dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip().lower()] = value.strip()
        address = _pci_address(info.get("bus location", "")) or _pci_address(entry)
        if address is None:
            continue
        minor = info.get("device minor", "")
        result[address] = {
            "name": info.get("model") or None,
            "uuid": info.get("gpu uuid") or None,
            "minor": int(minor) if minor.isascii() and minor.isdigit() else None,
        }
    return result


def _hex_attr(host: Host, path: str) -> str | None:
    text = host.read_text(path, 64)
    if text is None:
        return None
    value = text.strip().lower()
    return value if re.match(r"^0x[0-9a-f]+$", value) else None


def detect_gpus(host: Host) -> Tuple[List[Dict[str, Any]], List[str], List[Dict[str, Any]]]:
    proc = _nvidia_proc_gpus(host)
    gpus: List[Dict[str, Any]] = []
    switches: List[str] = []
    for entry in host.listdir(PCI_DEVICES):
        base = f"{PCI_DEVICES}/{entry}"
        if _hex_attr(host, base + "/vendor") != NVIDIA_VENDOR:
            continue
        klass = _hex_attr(host, base + "/class") or ""
        address = _pci_address(entry) or entry.lower()
        if klass.startswith(NVSWITCH_CLASSES):
            switches.append(address)
        if not klass.startswith(GPU_CLASSES):
            continue
        driver_link = host.readlink(base + "/driver")
        info = proc.get(address, {})
        gpus.append(
            {
                "pci_address": address,
                "vendor_id": NVIDIA_VENDOR,
                "device_id": _hex_attr(host, base + "/device"),
                "class": klass,
                "name": info.get("name"),
                "uuid": info.get("uuid"),
                "minor": info.get("minor"),
                "kernel_driver": os.path.basename(driver_link) if driver_link else None,
            }
        )
    if not gpus:
        for address, info in sorted(proc.items()):
            gpus.append(
                {
                    "pci_address": address,
                    "vendor_id": NVIDIA_VENDOR,
                    "device_id": None,
                    "class": None,
                    "name": info.get("name"),
                    "uuid": info.get("uuid"),
                    "minor": info.get("minor"),
                    "kernel_driver": "nvidia",
                }
            )
    problems: List[Dict[str, Any]] = []
    if not gpus:
        problems.append(
            _problem(
                "no_gpu",
                "No NVIDIA GPU was found on the PCI bus (vendor 0x10de, display class) or in /proc/driver/nvidia/gpus.",
            )
        )
    if switches:
        problems.append(
            _problem(
                "fabric_manager_needed",
                f"{len(switches)} NVSwitch device(s) found: this system needs NVIDIA Fabric Manager "
                "(nvidia-fabricmanager, same branch as the driver) before CUDA can use its GPUs.",
            )
        )
    return gpus, sorted(switches), problems


def _first_package(packages: Packages, patterns: Iterable[str]) -> Package | None:
    names = sorted(packages)
    for pattern in patterns:
        regex = re.compile(pattern)
        for name in names:
            if regex.fullmatch(name):
                return packages[name]
    return None


def detect_driver(host: Host, packages: Packages) -> Tuple[Facts, bool, List[Dict[str, Any]]]:
    version: str | None = None
    flavour: str | None = None
    proc = host.read_text(NVIDIA_PROC_VERSION)
    if proc:
        line = proc.splitlines()[0] if proc.splitlines() else ""
        for marker, name in DRIVER_FLAVOURS:
            if marker in line:
                flavour = name
                match = _DRIVER_VERSION_RE.search(line.split(marker, 1)[1])
                version = match.group(1) if match else None
                break
    if version is None:
        text = (host.read_text(NVIDIA_SYS_VERSION) or "").strip()
        match = _DRIVER_VERSION_RE.match(text)
        version = match.group(1) if match else None
    loaded = bool(proc) or host.isdir("/sys/module/nvidia")
    pkg = _first_package(packages, DRIVER_PACKAGES)
    facts: Facts = {
        "loaded": loaded,
        "version": version,
        "flavour": flavour,
        "package": {"name": pkg["name"], "version": pkg.get("version")} if pkg else None,
    }
    modules = host.read_text("/proc/modules") or ""
    nouveau = host.isdir("/sys/module/nouveau") or any(line.startswith("nouveau ") for line in modules.splitlines())
    problems: List[Dict[str, Any]] = []
    if nouveau:
        problems.append(
            _problem(
                "nouveau_loaded",
                "The nouveau driver is loaded: it must be blacklisted and unloaded (a reboot may be needed) "
                "before the NVIDIA driver can use the GPUs.",
            )
        )
    return facts, nouveau, problems


# ---------------------------------------------------------------------------
# Platform: Secure Boot, Tegra, WSL, kernel
# ---------------------------------------------------------------------------
def detect_secure_boot(host: Host) -> bool | None:
    data = host.read_bytes(SECURE_BOOT_VAR, 64)
    if data is not None and len(data) >= 5:
        return data[4] == 1
    if host.isdir("/sys/firmware/efi"):
        efivars = host.listdir("/sys/firmware/efi/efivars")
        return False if efivars else None
    if host.isdir("/sys/firmware"):
        return False
    return None


def detect_tegra(host: Host) -> bool:
    if any(host.exists(path) for path in TEGRA_MARKERS):
        return True
    return any(b"nvidia,tegra" in (host.read_bytes(path, 4096) or b"") for path in TEGRA_COMPATIBLE)


def detect_wsl(host: Host) -> bool:
    for path in WSL_TEXT_FILES:
        text = (host.read_text(path, 4096) or "").lower()
        if any(word in text for word in WSL_WORDS):
            return True
    return any(host.exists(path) for path in WSL_MARKERS)


def detect_kernel(host: Host) -> Facts:
    release: str | None
    if host.live:
        try:
            release = os.uname().release or None
        except (AttributeError, OSError):
            release = None
    else:
        release = (host.read_text("/proc/sys/kernel/osrelease", 4096) or "").strip() or None
    headers: bool | None = None
    if release is not None and "/" not in release:
        headers = host.exists(f"/lib/modules/{release}/build")
    return {"release": release, "headers_installed": headers}


# ---------------------------------------------------------------------------
# Container toolkit, persistenced
# ---------------------------------------------------------------------------
def detect_toolkit(packages: Packages) -> Facts:
    for name in TOOLKIT_PACKAGES:
        pkg = packages.get(name)
        if pkg:
            return {
                "installed": True,
                "version": _upstream(pkg.get("version")),
                "package": {"name": name, "version": pkg.get("version")},
            }
    return {"installed": False, "version": None, "package": None}


def _pid_running(host: Host, pid: int) -> bool | None:
    proc_dir = f"/proc/{pid}"
    if not host.isdir(proc_dir):
        return False if host.live else None
    comm = host.read_text(proc_dir + "/comm", 256)
    if comm is not None and comm.strip() and not "nvidia-persistenced".startswith(comm.strip()):
        return False  # a stale pid file naming some other process
    return True


def detect_persistenced(host: Host, packages: Packages) -> Facts:
    pkg = _first_package(packages, [re.escape(name) for name in PERSISTENCED_PACKAGES])
    installed = pkg is not None or any(host.exists(path) for path in PERSISTENCED_BINARIES)
    enabled = any(
        host.lexists(f"/etc/systemd/system/{wants}/{PERSISTENCED_UNIT}")
        for wants in host.listdir("/etc/systemd/system")
        if wants.endswith(".wants")
    )
    running: bool | None = False
    for path in PERSISTENCED_PIDFILES:
        text = host.read_text(path, 64)
        if text is None:
            continue
        pid = text.strip()
        running = _pid_running(host, int(pid)) if pid.isascii() and pid.isdigit() and int(pid) > 0 else False
        break
    return {
        "installed": installed,
        "version": _upstream(pkg.get("version")) if pkg else None,
        "enabled": enabled,
        "running": running,
    }


# ---------------------------------------------------------------------------
# containerd, kubelet, Podman (docs/engines.md "Facts and their sources")
# ---------------------------------------------------------------------------
# containerd packages, in order of preference: Debian/Ubuntu's, Docker's repository's.
CONTAINERD_PACKAGES: Tuple[str, ...] = ("containerd", "containerd.io")
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_UNIT = "containerd.service"
# disabled_plugins names that turn the CRI plugin off, by (containerd major, config version). containerd matches a
# version 1 file's list against plugin ids ("cri") and a version 2/3 file's against plugin URIs (containerd
# services/server/config/config.go, V1DisabledFilter / V2DisabledFilter). None: containerd's version unknown.
CRI_DISABLED_BY: Dict[Tuple[Optional[int], int], Tuple[str, ...]] = {
    (1, 1): ("cri",),
    (1, 2): ("io.containerd.grpc.v1.cri",),
    (2, 1): ("cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"),
    (2, 2): ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"),
    (2, 3): ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"),
    (None, 1): ("cri",),
    (None, 2): ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"),
    (None, 3): ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"),
}


def cri_disabled(disabled: List[str], major: Optional[int], config_version: Optional[int]) -> bool:
    """Whether ``disabled_plugins`` turns the CRI plugin off for containerd ``major`` reading a file of
    ``config_version`` (None: a file without one, version 1). A version 2/3 file must name plugins by URI:
    containerd refuses to start on a bare id there ('invalid disabled plugin URI "cri" expect io.containerd.x.vx',
    seen with Debian's 1.7.24), so nothing of it runs."""
    key = (major if major in (1, 2) else None, config_version or 1)
    off_names = CRI_DISABLED_BY.get(key, CRI_DISABLED_BY[(None, 2)])
    bare = (config_version or 1) >= 2 and any("." not in name for name in disabled)
    return bare or any(name in off_names for name in disabled)


# kubelet: binaries and units that say one is installed; where its runtime endpoint is set (flags win over the
# config file, as the kubelet documents); the endpoint it takes when none is set (Kubernetes
# pkg/kubelet/apis/config/v1beta1/defaults.go).
KUBELET_BINARIES: Tuple[str, ...] = ("/usr/bin/kubelet", "/usr/local/bin/kubelet", "/opt/bin/kubelet")
UNIT_DIRS: Tuple[str, ...] = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
KUBELET_UNIT = "kubelet.service"
KUBELET_FLAG_FILES: Tuple[str, ...] = (
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
)
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
PODMAN_PACKAGE = "podman"
PODMAN_CDI_MIN = (4, 1)
ENGINE_BINARY_DIRS: Tuple[str, ...] = STATIC_DOCKERD_DIRS
_ENGINE_VERSION_RE = re.compile(rb"\bv?(\d+\.\d+(?:\.\d+)*)")
_TOML_VERSION_RE = re.compile(r"^[ \t]*version[ \t]*=[ \t]*(\d+)[ \t]*(?:#.*)?$", re.M)
_TOML_TABLE_RE = re.compile(r"^[ \t]*\[", re.M)
_TOML_DISABLED_RE = re.compile(r"^[ \t]*disabled_plugins[ \t]*=[ \t]*\[([^\]]*)\]", re.M)
_TOML_STRING_RE = re.compile(r"\"([^\"\\]*)\"|'([^']*)'")
_ENDPOINT_FLAG_RE = re.compile(r"--container-runtime-endpoint(?:=|\s+)[\"']?([^\s\"']+)")
_CONFIG_FLAG_RE = re.compile(r"--config(?:=|\s+)[\"']?([^\s\"']+)")
_YAML_ENDPOINT_RE = re.compile(r"^containerRuntimeEndpoint:[ \t]*[\"']?([^\"'\s#]+)", re.M)


def _engine_binary(host: Host, name: str) -> str | None:
    """An engine's binary in the usual directories, or (live hosts) on PATH."""
    dirs = list(ENGINE_BINARY_DIRS)
    if host.live:
        dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.startswith("/") and d not in dirs]
    for directory in dirs:
        path = directory.rstrip("/") + "/" + name
        if host.isfile(path):
            return path
    return None


def _binary_version(path: str) -> str | None:
    """The first dotted version ``PATH --version`` prints (``podman version 5.4.2``, ``containerd ... v1.7.24``)."""
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _ENGINE_VERSION_RE.search(out.split(b"\n", 1)[0][:512])
    return match.group(1).decode("ascii") if match else None


def _unit_active(host: Host, unit: str) -> bool | None:
    """Whether a systemd unit is active (``systemctl is-active``); None without systemd or below a root."""
    if not host.live or not host.isdir("/run/systemd/system"):
        return None
    import subprocess

    try:
        proc = subprocess.run(["systemctl", "is-active", unit], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() == b"active"


def _toml_load(text: str) -> Tuple[Dict[str, Any] | None, str | None]:
    """(document, None), or (None, why) when no TOML reader exists here or the text is not TOML."""
    from ansible_collections.gpu_install.nvidia.plugins.module_utils.fileio import toml_reader

    toml = toml_reader()
    if toml is None:
        return None, None
    try:
        return toml.loads(text), None
    except Exception as exc:  # TOMLDecodeError, or a reader's own error on odd input
        return None, _clean(str(exc), 160) or type(exc).__name__


def _toml_fallback(text: str) -> Dict[str, Any]:
    """``version`` and ``disabled_plugins`` by line patterns (no TOML reader, or a malformed file)."""
    table = _TOML_TABLE_RE.search(text)
    head = text[: table.start()] if table else text
    doc: Dict[str, Any] = {}
    match = _TOML_VERSION_RE.search(head)
    if match:
        doc["version"] = int(match.group(1))
    match = _TOML_DISABLED_RE.search(head)
    if match:
        doc["disabled_plugins"] = [a or b for a, b in _TOML_STRING_RE.findall(match.group(1))]
    return doc


def _socket_path(endpoint: str) -> str:
    """A runtime endpoint or socket address as a canonical path (``unix://`` dropped, /var/run is /run)."""
    path = endpoint.strip()
    if path.startswith("unix://"):
        path = path[len("unix://") :]
    path = os.path.normpath(path) if path.startswith("/") else path
    if path.startswith("/var/run/"):
        path = path[len("/var") :]
    return path


def _unit_texts(host: Host, unit: str) -> List[Tuple[str, str]]:
    """(path, text) of a unit's files and drop-ins, in every unit directory."""
    out: List[Tuple[str, str]] = []
    for directory in UNIT_DIRS:
        path = f"{directory}/{unit}"
        text = host.read_text(path, 65536)
        if text is not None:
            out.append((path, text))
        for name in host.listdir(f"{path}.d"):
            if name.endswith(".conf"):
                text = host.read_text(f"{path}.d/{name}", 65536)
                if text is not None:
                    out.append((f"{path}.d/{name}", text))
    return out


def detect_kubelet(host: Host) -> Facts:
    """Whether a kubelet is installed, and the runtime endpoint it uses (and where that was read)."""
    units = _unit_texts(host, KUBELET_UNIT)
    binary = next((path for path in KUBELET_BINARIES if host.isfile(path)), None)
    present = binary is not None or bool(units)
    facts: Facts = {"present": present, "endpoint": None, "endpoint_source": None}
    if not present:
        return facts
    texts = [(path, host.read_text(path, 65536)) for path in KUBELET_FLAG_FILES] + units
    config = KUBELET_CONFIG
    for path, text in texts:
        for line in (text or "").splitlines():
            if line.lstrip().startswith("#"):
                continue
            match = _ENDPOINT_FLAG_RE.search(line)
            if match and facts["endpoint"] is None:
                facts.update(endpoint=match.group(1), endpoint_source=path)
            match = _CONFIG_FLAG_RE.search(line)
            if match and match.group(1).startswith("/"):
                config = match.group(1)
    if facts["endpoint"] is None:
        match = _YAML_ENDPOINT_RE.search(host.read_text(config, 262144) or "")
        if match:
            facts.update(endpoint=match.group(1), endpoint_source=config)
    if facts["endpoint"] is None:
        facts.update(endpoint=KUBELET_DEFAULT_ENDPOINT, endpoint_source="default")
    return facts


def detect_containerd(host: Host, packages: Packages, kubelet: Facts) -> Facts:
    pkg = next((packages[name] for name in CONTAINERD_PACKAGES if packages.get(name)), None)
    binary = None if pkg else _engine_binary(host, "containerd")
    version = _upstream(pkg.get("version")) if pkg else None
    if binary is not None and host.live:
        version = _binary_version(binary)
    present = pkg is not None or binary is not None
    text = host.read_text(CONTAINERD_CONFIG, _LARGE)
    doc: Dict[str, Any] | None = None
    config_error: str | None = None
    if text is not None:
        doc, config_error = _toml_load(text)
        if doc is None:
            doc = _toml_fallback(text)
    config_version: int | None = None
    disabled: List[str] = []
    socket = CONTAINERD_SOCKET
    if doc is not None:
        raw = doc.get("version", 1)
        config_version = raw if isinstance(raw, int) and not isinstance(raw, bool) else 1
        listed = doc.get("disabled_plugins")
        disabled = [str(p) for p in listed] if isinstance(listed, list) else []
        grpc = doc.get("grpc")
        address = grpc.get("address") if isinstance(grpc, dict) else None
        if isinstance(address, str) and address.startswith("/"):
            socket = _socket_path(address)
    major = _version_tuple(version)[:1]
    bare = [name for name in disabled if "." not in name]
    if (config_version or 1) >= 2 and bare and config_error is None:
        config_error = (
            f"disabled_plugins names {_clean(bare[0], 60)!r}, but a version {config_version} file names plugins by "
            "URI (io.containerd.x.vx): containerd refuses to start with it"
        )
    cri = present and not cri_disabled(disabled, major[0] if major else None, config_version)
    uses = bool(kubelet.get("present")) and _socket_path(str(kubelet.get("endpoint") or "")) == socket
    return {
        "present": present,
        "package": pkg["name"] if pkg else None,
        "version": version,
        "config_path": CONTAINERD_CONFIG,
        "config_exists": text is not None,
        "config_version": config_version,
        "config_error": config_error,
        "disabled_plugins": disabled,
        "cri_enabled": cri,
        "kubelet": present and uses,
        "socket": socket,
        "active": _unit_active(host, CONTAINERD_UNIT) if present else None,
    }


def detect_podman(host: Host, packages: Packages) -> Facts:
    pkg = packages.get(PODMAN_PACKAGE)
    binary = None if pkg else _engine_binary(host, "podman")
    version = _upstream(pkg.get("version")) if pkg else None
    if binary is not None and host.live:
        version = _binary_version(binary)
    present = pkg is not None or binary is not None
    return {
        "present": present,
        "version": version,
        "cdi": present and bool(version) and _version_tuple(version) >= PODMAN_CDI_MIN,
    }


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def _guarded(section: str, problems: List[Dict[str, Any]], fn: Callable[[], Any], fallback: Any) -> Any:
    """Run one detection step; an unexpected error degrades to ``fallback`` plus a problem."""
    try:
        return fn()
    except Exception as exc:  # a last line of defence: detection never raises
        problems.append(
            _problem(
                "detection_incomplete",
                f"Detecting {section} failed ({type(exc).__name__}: {_clean(str(exc), 120)}): "
                "those facts read as unknown.",
            )
        )
        return fallback


def detect(root: str | None = None) -> Facts:
    """All facts about the host (or the tree below ``root``), JSON-serialisable."""
    host = Host(root)
    internal: List[Dict[str, Any]] = []
    found: List[Dict[str, Any]] = []

    packages, pkg_problems = _guarded("packages", internal, lambda: read_packages(host), ({}, []))
    arch = _guarded("architecture", internal, lambda: detect_arch(host, packages), None)
    os_facts, os_problems = _guarded("the distribution", internal, lambda: detect_os(host, arch), ({}, []))
    docker, docker_problems = _guarded("Docker", internal, lambda: detect_docker(host, packages), ({}, []))
    gpus, switches, gpu_problems = _guarded("GPUs", internal, lambda: detect_gpus(host), ([], [], []))
    driver, nouveau, driver_problems = _guarded(
        "the driver", internal, lambda: detect_driver(host, packages), ({}, None, [])
    )
    secure_boot = _guarded("Secure Boot", internal, lambda: detect_secure_boot(host), None)
    tegra = _guarded("Tegra", internal, lambda: detect_tegra(host), False)
    wsl = _guarded("WSL", internal, lambda: detect_wsl(host), False)
    kernel = _guarded("the kernel", internal, lambda: detect_kernel(host), {})
    toolkit = _guarded("the container toolkit", internal, lambda: detect_toolkit(packages), {})
    persistenced = _guarded("nvidia-persistenced", internal, lambda: detect_persistenced(host, packages), {})
    systemd = _guarded("systemd", internal, lambda: host.isdir("/run/systemd/system"), False)
    kubelet = _guarded("the kubelet", internal, lambda: detect_kubelet(host), {"present": False})
    containerd = _guarded("containerd", internal, lambda: detect_containerd(host, packages, kubelet), {})
    podman = _guarded("Podman", internal, lambda: detect_podman(host, packages), {})

    if tegra:
        found.append(
            _problem(
                "tegra",
                "This is an NVIDIA Tegra/Jetson system: gpu-install does not support Tegra, whose driver and "
                "container runtime come with NVIDIA JetPack.",
            )
        )
    if wsl:
        found.append(
            _problem(
                "wsl",
                "This is Windows Subsystem for Linux: the Windows driver serves WSL2, so install the NVIDIA "
                "driver on Windows, never a Linux driver inside WSL2.",
            )
        )
    if secure_boot:
        found.append(
            _problem(
                "secure_boot",
                "Secure Boot is enabled: the NVIDIA kernel modules must be signed with a key the firmware "
                "trusts (distribution-signed modules, or DKMS with an enrolled MOK), or they will not load.",
            )
        )
    found += os_problems + pkg_problems + docker_problems + gpu_problems + driver_problems + internal
    order = list(PROBLEMS)
    problems = sorted(found, key=lambda p: order.index(p["code"]))
    facts = {
        "schema": SCHEMA,
        "supported": not any(p["refuses"] for p in problems),
        "problems": problems,
        "os": os_facts,
        "docker": docker,
        "gpus": gpus,
        "nvswitches": switches,
        "driver": driver,
        "nouveau_loaded": nouveau,
        "secure_boot": secure_boot,
        "tegra": tegra,
        "wsl": wsl,
        "kernel": kernel,
        "container_toolkit": toolkit,
        "persistenced": persistenced,
        "systemd": systemd,
        "containerd": containerd,
        "podman": podman,
        "kubelet": kubelet,
        "engines": [],
        "root": host.root,
    }
    # The engines `auto` takes; gpu_facts resolves the user's setting again (engines.apply).
    _guarded("the container engines", problems, lambda: engines.apply(facts, engines.AUTO), [])
    return facts


def refusal(facts: Facts) -> Tuple[int, str] | None:
    """(exit code 3, one sentence) for the first refusing problem, else None."""
    problems = facts.get("problems") if isinstance(facts, dict) else None
    for problem in problems or []:
        if isinstance(problem, dict) and problem.get("refuses"):
            return errors.UNSUPPORTED, str(problem.get("message") or problem.get("code"))
    return None
