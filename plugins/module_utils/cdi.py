# Copyright: gpu-install contributors
# Apache License 2.0
"""CDI spec generation for NVIDIA GPUs: one implementation, stdlib only.

Docker 25+ injects devices named in a Container Device Interface (CDI) spec
(``docker run --device nvidia.com/gpu=all``).  gpu-install writes that spec
itself, so CDI mode needs no NVIDIA Container Toolkit.  Imported by the
``gpu_install.nvidia.cdi_spec`` module on managed hosts (Python >= 3.8) and by
the CLI.  Public API:

* ``discover(root=None, search_paths=None, ..., capabilities=None) -> Discovery``:
  GPUs, device nodes, libraries, binaries, config files, firmware and sockets
  of the host (or of a tree below ``root``: a captured tree, a mounted image).
* ``build_spec(discovery, ..., capabilities=None) -> dict``: the spec,
  deterministic (sorted).
* ``normalize_capabilities(names) -> tuple``: the NVIDIA_DRIVER_CAPABILITIES
  names (``utility``, ``compute``, ``video``, ``graphics``, ``display``,
  ``all``) checked and put in canonical order; unknown ones are refused.
* ``generate(...) -> dict`` and ``dumps(spec) -> bytes``: both in one.
* ``validate(spec) -> list of problems``: the CDI format's rules, checked
  with the stdlib (required fields, name syntax, absolute paths, no duplicate
  device names).
* ``parse_ld_so_cache(data)`` / ``parse_ldconfig_p(text)``: the linker cache.

Libraries are found by their stable SONAME (``libcuda.so.1``, not
``libcuda.so.580.95.05``), first in the linker cache, then in the driver
directories given in ``search_paths``; a driver upgrade then keeps the spec
valid.  Libraries whose SONAME carries the driver version (``libnvidia-gpucomp``,
``libnvidia-glcore``, ...) and the GSP firmware are versioned by nature: the
spec must be regenerated after a driver change (the module reports it in
``stale``).

What a capability adds follows the NVIDIA Container Toolkit (libnvidia-container's
per-capability library lists and device rules, nvidia-container-toolkit's
graphics mounts): the tables below are the whole of it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, fileio, gpu_detect

CDI_VERSION = "0.5.0"  # Docker 25+ vendors CDI 0.6; nothing here needs more than 0.3
VENDOR = "nvidia.com"
CLASS = "gpu"
KIND = f"{VENDOR}/{CLASS}"
DEFAULT_PATH = "/etc/cdi/gpu-install-nvidia.json"
# Driver directories outside the linker cache that are searched by default: the
# nvidia-docker 1.0 layout, which some images and hosts (the lent H100 among them) use.
DEFAULT_SEARCH_PATHS: Tuple[str, ...] = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/local/nvidia/bin")
LD_SO_CACHE = "/etc/ld.so.cache"

# Driver capabilities, by the names of the toolkit's NVIDIA_DRIVER_CAPABILITIES, in canonical order.
CAPABILITIES: Tuple[str, ...] = ("utility", "compute", "video", "graphics", "display")
DEFAULT_CAPABILITIES: Tuple[str, ...] = ("utility", "compute")
# A capability that brings others with it: NVDEC/NVENC are CUDA APIs (the toolkit gives video containers
# CUDA's libraries too); display is graphics plus the modesetting node.
IMPLIES: Dict[str, Tuple[str, ...]] = {"video": ("compute",), "display": ("graphics",)}
# The toolkit's capabilities that this generator refuses, and why.
UNSUPPORTED_CAPABILITIES: Dict[str, str] = {
    "compat32": "32-bit libraries",
    "ngx": "NGX (DLSS) libraries",
}

# Control device nodes, by capability: nvidiactl always (and required), nvidia-uvm for CUDA, nvidia-modeset
# for display only ("only display capability requires the modeset device", as libnvidia-container has it).
CONTROL_NODES: Tuple[str, ...] = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
REQUIRED_NODES: Tuple[str, ...] = ("/dev/nvidiactl",)
CAPABILITY_NODES: Dict[str, Tuple[str, ...]] = {
    "compute": ("/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"),
    "display": ("/dev/nvidia-modeset",),
}
CAPS_DIR = "/dev/nvidia-caps"

# Driver libraries by stable SONAME, by capability. "subdir/name" is found (and mounted) in that subdirectory
# of a library directory: libvdpau looks for its drivers in <libdir>/vdpau, libgbm for its backends in
# <libdir>/gbm (where Debian's, NVIDIA's RPM and the runfile's installs put them).
CAPABILITY_LIBRARIES: Dict[str, Tuple[str, ...]] = {
    "utility": ("libnvidia-ml.so.1", "libnvidia-cfg.so.1"),
    "compute": (
        "libcuda.so.1",
        "libcudadebugger.so.1",
        "libnvidia-ptxjitcompiler.so.1",
        "libnvidia-nvvm.so.4",
        "libnvidia-opencl.so.1",
    ),
    "video": (
        "libnvcuvid.so.1",
        "libnvidia-encode.so.1",
        "libnvidia-opticalflow.so.1",
        "vdpau/libvdpau_nvidia.so.1",
    ),
    "graphics": (
        "libGLX_nvidia.so.0",
        "libEGL_nvidia.so.0",
        "libGLESv2_nvidia.so.2",
        "libGLESv1_CM_nvidia.so.1",
        "libnvidia-fbc.so.1",
        "libnvoptix.so.1",
        "libnvidia-allocator.so.1",
        "libnvidia-egl-wayland.so.1",
        "libnvidia-egl-wayland2.so.1",
        "libnvidia-egl-gbm.so.1",
        "libnvidia-egl-xcb.so.1",
        "libnvidia-egl-xlib.so.1",
        "gbm/nvidia-drm_gbm.so",
    ),
}
# Libraries whose SONAME is the driver version itself ({version} is filled in), by capability.
CAPABILITY_VERSIONED: Dict[str, Tuple[str, ...]] = {
    "compute": ("libnvidia-gpucomp.so.{version}",),
    "graphics": (
        "libnvidia-eglcore.so.{version}",
        "libnvidia-glcore.so.{version}",
        "libnvidia-tls.so.{version}",
        "libnvidia-glsi.so.{version}",
        "libnvidia-glvkspirv.so.{version}",
        "libnvidia-rtcore.so.{version}",
    ),
}
# Without these a capability is useless, so their absence is a refusal (the rest is reported in ``missing``).
CAPABILITY_REQUIRED: Dict[str, Tuple[str, ...]] = {
    "utility": ("libnvidia-ml.so.1",),
    "compute": ("libcuda.so.1",),
}
# The utility + compute sets, as they were before capabilities (kept for callers of these names).
LIBRARIES: Tuple[str, ...] = CAPABILITY_LIBRARIES["utility"] + CAPABILITY_LIBRARIES["compute"]
REQUIRED_LIBRARIES: Tuple[str, ...] = CAPABILITY_REQUIRED["utility"] + CAPABILITY_REQUIRED["compute"]
VERSIONED_LIBRARIES: Tuple[str, ...] = CAPABILITY_VERSIONED["compute"]

CAPABILITY_BINARIES: Dict[str, Tuple[str, ...]] = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}
BINARIES: Tuple[str, ...] = CAPABILITY_BINARIES["utility"] + CAPABILITY_BINARIES["compute"]
BINARY_DIRS: Tuple[str, ...] = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")
CONTAINER_BIN_DIR = "/usr/bin"
FIRMWARE_DIRS: Tuple[str, ...] = ("/lib/firmware/nvidia", "/usr/lib/firmware/nvidia")
FIRMWARE_RE = re.compile(r"^gsp.*\.bin$")
SOCKETS: Tuple[str, ...] = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket")
CAPABILITY_SOCKETS: Dict[str, Tuple[str, ...]] = {"utility": SOCKETS}

# Config files, by capability: each entry is its candidate names below CONFIG_DIRS ({arch} is uname -m:
# NVIDIA's RPMs name the Vulkan ICD nvidia_icd.x86_64.json); the first that exists is mounted read-only
# at the same path, where the Vulkan loader and libglvnd look.
CONFIG_DIRS: Tuple[str, ...] = ("/etc", "/usr/share")
CAPABILITY_CONFIGS: Dict[str, Tuple[Tuple[str, ...], ...]] = {
    "graphics": (
        ("glvnd/egl_vendor.d/10_nvidia.json",),
        ("vulkan/icd.d/nvidia_icd.json", "vulkan/icd.d/nvidia_icd.{arch}.json"),
        ("vulkan/implicit_layer.d/nvidia_layers.json",),
        ("egl/egl_external_platform.d/09_nvidia_wayland2.json",),
        ("egl/egl_external_platform.d/10_nvidia_wayland.json",),
        ("egl/egl_external_platform.d/15_nvidia_gbm.json",),
        ("egl/egl_external_platform.d/20_nvidia_xcb.json",),
        ("egl/egl_external_platform.d/20_nvidia_xlib.json",),
        ("nvidia/nvoptix.bin",),
    ),
}
# graphics also gives each GPU device its DRM nodes (/dev/dri/card*, renderD*), found through sysfs.
PCI_DEVICES = "/sys/bus/pci/devices"
DRM_NODE_RE = re.compile(r"^(card|renderD)[0-9]+$")

# Where libraries appear inside the container: every library is mounted twice, in the arch's multiarch
# directory, which Debian and Ubuntu images (all of NVIDIA's CUDA images among them) search by default, and
# in /usr/lib64, which the loaders of the Red Hat family, UBI, Amazon Linux and SUSE search by default. No
# linker-cache update is needed (the spec runs no hook), and an image whose /usr/lib64 is a link to
# /usr/lib (Arch) gets them where its loader looks too. Option container_lib_dir: one directory instead.
CONTAINER_LIB64 = "/usr/lib64"
MULTIARCH: Dict[str, str] = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
}
# ld.so.cache entry flags of a 64-bit libc6 library, by uname -m.
LDCACHE_FLAGS: Dict[str, int] = {"x86_64": 0x0303, "aarch64": 0x0A03, "ppc64le": 0x0503}
LDCONFIG_ARCH: Dict[str, str] = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit"}

MOUNT_OPTIONS: Tuple[str, ...] = ("ro", "nosuid", "nodev", "bind")
SOCKET_OPTIONS: Tuple[str, ...] = ("ro", "nosuid", "nodev", "bind", "noexec")
ENV: Tuple[str, ...] = ("NVIDIA_VISIBLE_DEVICES=void",)  # the legacy runtime hook must not act as well
# Where libcuda is, for programs that look for its directory rather than dlopen("libcuda.so.1"): set (to the
# first container library directory) whenever libcuda.so.1 is mounted. NVIDIA's generator sets
# NVIDIA_CTK_LIBCUDA_DIR (pkg/nvcdi/driver-nvml.go); Triton reads TRITON_LIBCUDA_PATH before it asks
# `ldconfig -p`, whose cache (the image's) does not list a mounted libcuda (libcuda_dirs() in
# triton-lang/triton third_party/nvidia/backend/driver.py).
LIBCUDA_ENV: Tuple[str, ...] = ("NVIDIA_CTK_LIBCUDA_DIR", "TRITON_LIBCUDA_PATH")
# Development names that NVIDIA's create-symlinks hook makes whatever the host has (getLinksForMount in
# internal/discover/symlinks.go): "Many applications wrongly assume that libcuda.so exists (e.g. with
# dlopen)"; GLVND's indirect GLX needs libGLX_indirect.so.0. CDI cannot make a symlink without a hook
# binary, so the same host file is bind-mounted under each name. Besides these, a library's plain ``.so``
# name is given where the host has that link beside it (getDotSoSymlinks, same file).
DEV_NAMES: Dict[str, Tuple[str, ...]] = {
    "libcuda.so.1": ("libcuda.so",),
    "libnvidia-opticalflow.so.1": ("libnvidia-opticalflow.so",),
    "libGLX_nvidia.so.0": ("libGLX_indirect.so.0",),
}

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"


class CdiError(errors.Failure):
    """A spec cannot be made (or written): its exit class and one sentence."""


# ---------------------------------------------------------------------------
# The linker cache
# ---------------------------------------------------------------------------
def _cstr(data: bytes, offset: int) -> Optional[str]:
    if offset < 0 or offset >= len(data):
        return None
    end = data.find(b"\0", offset)
    if end < 0:
        return None
    return data[offset:end].decode("utf-8", errors="replace")


def parse_ld_so_cache(data: bytes) -> List[Tuple[str, int, str]]:
    """(soname, flags, path) of each entry of an ld.so.cache (glibc's old, new or combined format).

    Malformed or truncated input gives what could be read, never an exception.
    """
    entries: List[Tuple[str, int, str]] = []
    start = data.find(NEW_MAGIC)
    if start >= 0 and len(data) >= start + 48:
        nlibs, _strings = struct.unpack_from("<II", data, start + 20)
        base = start + 48
        for i in range(nlibs):
            at = base + 24 * i
            if at + 24 > len(data):
                break
            flags, key, value = struct.unpack_from("<iII", data, at)
            soname, path = _cstr(data, start + key), _cstr(data, start + value)
            if soname and path:
                entries.append((soname, flags, path))
        return entries
    if data.startswith(OLD_MAGIC) and len(data) >= 16:
        (nlibs,) = struct.unpack_from("<I", data, 12)
        strings = 16 + 12 * nlibs
        for i in range(nlibs):
            at = 16 + 12 * i
            if at + 12 > len(data):
                break
            flags, key, value = struct.unpack_from("<iII", data, at)
            soname, path = _cstr(data, strings + key), _cstr(data, strings + value)
            if soname and path:
                entries.append((soname, flags, path))
    return entries


_LDCONFIG_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S.*?)\s*$")


def parse_ldconfig_p(text: str) -> List[Tuple[str, str, str]]:
    """(soname, description, path) of each line of ``ldconfig -p``, e.g. ('libcuda.so.1', 'libc6,x86-64', ...)."""
    out: List[Tuple[str, str, str]] = []
    for line in text.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if match:
            out.append((match.group(1), match.group(2), match.group(3)))
    return out


def _ldconfig_p() -> str:
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "/sbin/ldconfig.real"):
        if os.path.exists(ldconfig):
            try:
                proc = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=False)
            except (OSError, subprocess.SubprocessError):
                continue
            if proc.returncode == 0:
                return proc.stdout
    return ""


def linker_cache(host: gpu_detect.Host, arch: Optional[str]) -> Dict[str, str]:
    """soname -> path for the host's 64-bit libraries in the linker cache (first entry wins)."""
    found: Dict[str, str] = {}
    data = host.read_bytes(LD_SO_CACHE, 64 << 20)
    if data:
        want = LDCACHE_FLAGS.get(arch or "")
        for soname, flags, path in parse_ld_so_cache(data):
            if want is not None and flags != want:
                continue
            if want is None and not flags & 0xFF00:  # unknown arch: any 64-bit entry
                continue
            found.setdefault(soname, path)
        return found
    if host.live:  # no readable cache file: ask ldconfig itself
        tag = LDCONFIG_ARCH.get(arch or "", "")
        for soname, desc, path in parse_ldconfig_p(_ldconfig_p()):
            if tag and tag not in desc.split(","):
                continue
            found.setdefault(soname, path)
    return found


# ---------------------------------------------------------------------------
# An image's own libcuda (a CUDA forward-compatibility library baked into its linker cache)
# ---------------------------------------------------------------------------
_LIBCUDA_VERSION = re.compile(r"^libcuda\.so\.([0-9]+(?:\.[0-9]+)+)$")


def libcuda_version(path: Optional[str]) -> Optional[str]:
    """The driver version a libcuda file's name carries (``.../libcuda.so.535.104.05`` -> ``535.104.05``);
    None for ``libcuda.so.1`` and anything else."""
    match = _LIBCUDA_VERSION.match(os.path.basename(path or ""))
    return match.group(1) if match else None


def _same_dirs(directories: Sequence[str]) -> Set[str]:
    """The directories and their merged-/usr spellings (/lib/<multiarch> for /usr/lib/<multiarch>, /lib64 for
    /usr/lib64): ldconfig lists a merged-/usr image's libraries under whichever the configuration names first."""
    out: Set[str] = set()
    for given in directories:
        directory = given.rstrip("/") or "/"
        out.add(directory)
        if directory.startswith("/usr/lib"):
            out.add(directory[len("/usr") :])
    return out


def image_libcuda(cache: bytes, arch: Optional[str], lib_dirs: Sequence[str]) -> Optional[str]:
    """The path of the libcuda.so.1 that an image's linker cache gives its loader, when that is not one of
    ``lib_dirs`` (where the spec mounts the host's); None when the cache lists none or one there.

    The loader takes the first entry of the cache for a name (entries are in the order of ldconfig's
    directories) and tries the default directories only without one, so a libcuda.so.1 that the image's
    cache lists elsewhere (a CUDA compat directory in /etc/ld.so.conf.d) wins over every mount.
    """
    want = LDCACHE_FLAGS.get(arch or "")
    for soname, flags, path in parse_ld_so_cache(cache):
        if soname != "libcuda.so.1":
            continue
        if (want is not None and flags != want) or (want is None and not flags & 0xFF00):
            continue
        return None if os.path.dirname(path) in _same_dirs(lib_dirs) else path
    return None


def version_order(left: str, right: str) -> int:
    """-1, 0 or 1 as driver version ``left`` is older than, the same as or newer than ``right`` (numeric fields)."""
    a = [int(p) if p.isascii() and p.isdigit() else 0 for p in left.split(".")]
    b = [int(p) if p.isascii() and p.isdigit() else 0 for p in right.split(".")]
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------
class Gpu:
    """One GPU: ``index`` (nvidia-smi's, PCI bus order), ``uuid``, ``minor``, ``pci_address``, ``name``.

    ``drm_nodes`` (its ``/dev/dri/card*`` and ``renderD*``) is filled in when graphics is asked for.
    """

    def __init__(self, index: int, uuid: str, minor: int, pci_address: str, name: Optional[str]) -> None:
        self.index = index
        self.uuid = uuid
        self.minor = minor
        self.pci_address = pci_address
        self.name = name
        self.drm_nodes: List[str] = []

    @property
    def node(self) -> str:
        return f"/dev/nvidia{self.minor}"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "minor": self.minor,
            "pci_address": self.pci_address,
            "name": self.name,
            "device_node": self.node,
            "drm_nodes": list(self.drm_nodes),
        }


class Discovery:
    """What ``discover`` found; every path is a host path (as seen without ``root``).

    ``libraries`` maps the name a library has below the container's library directory (its SONAME, or
    ``vdpau/<soname>`` and ``gbm/<name>`` for the two that live in a subdirectory) to its host path;
    ``configs`` maps a config file's name below /etc or /usr/share to its host path.
    """

    def __init__(self) -> None:
        self.capabilities: List[str] = list(DEFAULT_CAPABILITIES)
        self.gpus: List[Gpu] = []
        self.driver_version: Optional[str] = None
        self.arch: Optional[str] = None
        self.control_nodes: List[str] = []
        self.caps_nodes: List[str] = []
        self.libraries: Dict[str, str] = {}  # name in the container's library dir -> host path
        self.binaries: Dict[str, str] = {}  # name -> host path
        self.configs: Dict[str, str] = {}  # name below /etc or /usr/share -> host path
        self.firmware: List[str] = []
        self.sockets: List[str] = []
        self.missing: List[str] = []  # optional parts not found
        # development names (libcuda.so, ...) in the container's library dir -> the key of the library they name
        self.dev_names: Dict[str, str] = {}

    def as_dict(self) -> Dict[str, Any]:
        return {
            "capabilities": list(self.capabilities),
            "gpus": [gpu.as_dict() for gpu in self.gpus],
            "driver_version": self.driver_version,
            "arch": self.arch,
            "control_nodes": list(self.control_nodes),
            "caps_nodes": list(self.caps_nodes),
            "libraries": dict(sorted(self.libraries.items())),
            "binaries": dict(sorted(self.binaries.items())),
            "configs": dict(sorted(self.configs.items())),
            "firmware": list(self.firmware),
            "sockets": list(self.sockets),
            "missing": list(self.missing),
            "dev_names": dict(sorted(self.dev_names.items())),
        }


def normalize_capabilities(capabilities: Any = None) -> Tuple[str, ...]:
    """The capabilities asked for, with those they imply, in canonical order; CdiError for bad names.

    ``None`` is the default (utility and compute); a string is read as NVIDIA_DRIVER_CAPABILITIES is
    (comma-separated); ``all`` is every capability this generator supports.
    """
    if capabilities is None:
        capabilities = DEFAULT_CAPABILITIES
    if isinstance(capabilities, str):
        capabilities = capabilities.split(",")
    names = []
    for item in capabilities:
        name = str(item).strip().lower()
        if name:
            names.append(name)
    supported = ", ".join(CAPABILITIES)
    if not names:
        raise CdiError(
            errors.INVALID_INPUT,
            f"No driver capability was given: name at least one of {supported} (or all).",
        )
    wanted: Set[str] = set()
    for name in names:
        if name == "all":
            wanted.update(CAPABILITIES)
        elif name in CAPABILITIES:
            wanted.add(name)
        elif name in UNSUPPORTED_CAPABILITIES:
            raise CdiError(
                errors.UNSUPPORTED,
                f"The driver capability {name} ({UNSUPPORTED_CAPABILITIES[name]}) is not supported in CDI mode: "
                f"gpu-install's spec gives {supported}; the runtime mode (the NVIDIA Container Toolkit) has it.",
            )
        else:
            shown = gpu_detect._clean(name, 40)
            raise CdiError(
                errors.INVALID_INPUT,
                f"Unknown driver capability {shown!r}: the CDI spec supports {supported} (or all).",
            )
    for name in list(wanted):
        wanted.update(IMPLIES.get(name, ()))
    return tuple(c for c in CAPABILITIES if c in wanted)


def _pick(table: Dict[str, Tuple[Any, ...]], capabilities: Sequence[str]) -> List[Any]:
    """The entries of a per-capability table for ``capabilities``, in table order, each once."""
    out: List[Any] = []
    for capability in capabilities:
        for entry in table.get(capability, ()):
            if entry not in out:
                out.append(entry)
    return out


def _library_names(capabilities: Sequence[str], version: Optional[str]) -> List[str]:
    names = _pick(CAPABILITY_LIBRARIES, capabilities)
    if version:
        names += [pattern.format(version=version) for pattern in _pick(CAPABILITY_VERSIONED, capabilities)]
    return names


def _gpus_from_proc(host: gpu_detect.Host) -> List[Tuple[str, Optional[str], Optional[int], Optional[str]]]:
    proc = gpu_detect._nvidia_proc_gpus(host)
    return [(address, info.get("uuid"), info.get("minor"), info.get("name")) for address, info in proc.items()]


def parse_nvidia_smi_q(text: str) -> List[Tuple[str, Optional[str], Optional[int], Optional[str]]]:
    """(pci address, uuid, minor, name) of each GPU section of ``nvidia-smi -q``."""
    sections: List[Dict[str, Any]] = []
    for line in text.splitlines():
        head = re.match(r"^GPU\s+(\S+)\s*$", line)
        if head:
            sections.append({"address": gpu_detect._pci_address(head.group(1)) or head.group(1).lower()})
            continue
        key, sep, value = line.partition(":")
        if not sections or not sep:
            continue
        field = {"GPU UUID": "uuid", "Minor Number": "minor", "Product Name": "name"}.get(key.strip())
        if field and field not in sections[-1]:
            sections[-1][field] = value.strip()
    out: List[Tuple[str, Optional[str], Optional[int], Optional[str]]] = []
    for sec in sections:
        minor = sec.get("minor", "")
        out.append(
            (
                sec["address"],
                sec.get("uuid"),
                int(minor) if minor.isascii() and minor.isdigit() else None,
                sec.get("name"),
            )
        )
    return out


def _gpus_from_nvidia_smi(smi: Optional[str]) -> List[Tuple[str, Optional[str], Optional[int], Optional[str]]]:
    if not smi:
        return []
    try:
        proc = subprocess.run([smi, "-q"], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_q(proc.stdout) if proc.returncode == 0 else []


def _find_file(host: gpu_detect.Host, name: str, dirs: Sequence[str], elf: bool = False) -> Optional[str]:
    """The first ``dir/name`` that is a file (with ``elf``, an ELF file: wrapper scripts are passed over)."""
    for directory in dirs:
        path = f"{directory.rstrip('/')}/{name}"
        if not host.exists(path) or host.isdir(path):
            continue
        if elf and host.read_bytes(path, 4) != b"\x7fELF":
            continue
        return path
    return None


def _arch(host: gpu_detect.Host) -> Optional[str]:
    if host.live:
        try:
            return os.uname().machine
        except (AttributeError, OSError):
            return None
    return gpu_detect.detect_arch(host, {})


def _standard_lib_dirs(arch: Optional[str]) -> List[str]:
    multiarch = MULTIARCH.get(arch or "")
    return ([f"/usr/lib/{multiarch}", f"/lib/{multiarch}"] if multiarch else []) + ["/usr/lib64", "/lib64", "/usr/lib"]


def _find_library(
    host: gpu_detect.Host, key: str, cache: Dict[str, str], dirs: Sequence[str], lib_dirs: Sequence[str]
) -> Optional[str]:
    """A library's host path: the linker cache, then (for vdpau/ and gbm/ ones) that subdirectory of the
    library directories, then the driver directories in ``search_paths``."""
    subdir, _, name = key.rpartition("/")
    path = cache.get(name)
    if path is not None and host.exists(path):
        return path
    candidates = [f"{d.rstrip('/')}/{subdir}" for d in lib_dirs] if subdir else []
    candidates += list(dirs) + ([f"{d.rstrip('/')}/{subdir}" for d in dirs] if subdir else [])
    return _find_file(host, name, candidates)


def so_link(name: str) -> str:
    """A library's plain development name: ``libcuda.so.580.95.05`` -> ``libcuda.so`` ('' when not a .so)."""
    head, sep, _tail = name.partition(".so")
    return head + sep if sep and head else ""


def _dev_names(host: gpu_detect.Host, libraries: Dict[str, str]) -> Dict[str, str]:
    """Development name -> library key: NVIDIA's fixed ones (DEV_NAMES) for every library found, and a
    library's ``.so`` name where the host has that link in the directory the library was found in."""
    out: Dict[str, str] = {}
    for key in sorted(libraries):
        if "/" in key:  # vdpau/ and gbm/ drivers are dlopen()ed by their SONAME
            continue
        names = list(DEV_NAMES.get(key, ()))
        plain = so_link(key)
        if plain and plain != key and plain not in names:
            link = f"{os.path.dirname(libraries[key])}/{plain}"
            if host.readlink(link) is not None and host.exists(link):
                names.append(plain)
        for name in names:
            if name not in libraries:
                out.setdefault(name, key)
    return out


def _find_config(host: gpu_detect.Host, names: Sequence[str], arch: Optional[str]) -> Optional[str]:
    for base in CONFIG_DIRS:
        for pattern in names:
            if "{arch}" in pattern and not arch:
                continue
            path = f"{base}/{pattern.format(arch=arch)}"
            if host.exists(path) and not host.isdir(path):
                return path
    return None


def _drm_nodes(host: gpu_detect.Host, pci_address: str) -> List[str]:
    names = [n for n in host.listdir(f"{PCI_DEVICES}/{pci_address}/drm") if DRM_NODE_RE.match(n)]
    return sorted(f"/dev/dri/{n}" for n in names if host.exists(f"/dev/dri/{n}"))


def discover(
    root: Optional[str] = None,
    search_paths: Optional[Sequence[str]] = None,
    caps: bool = False,
    use_nvidia_smi: bool = True,
    capabilities: Optional[Sequence[str]] = None,
) -> Discovery:
    """Find what a GPU container needs on the host (or below ``root``); raises CdiError when no spec can be made.

    ``capabilities`` (NVIDIA_DRIVER_CAPABILITIES names; default utility and compute) decides what is looked
    for; what a capability needs is required only where its absence makes the capability useless
    (``libnvidia-ml.so.1`` for utility, ``libcuda.so.1`` for compute), the rest is reported in ``missing``.
    """
    wanted = normalize_capabilities(capabilities)
    host = gpu_detect.Host(root)
    dirs = list(DEFAULT_SEARCH_PATHS if search_paths is None else search_paths)
    found = Discovery()
    found.capabilities = list(wanted)
    found.arch = _arch(host)
    driver, _nouveau, _problems = gpu_detect.detect_driver(host, {})
    found.driver_version = driver.get("version")

    binaries_dirs = list(BINARY_DIRS) + dirs
    for name in _pick(CAPABILITY_BINARIES, wanted):
        binary = _find_file(host, name, binaries_dirs, elf=True)
        if binary:
            found.binaries[name] = binary
        else:
            found.missing.append(name)

    raw = _gpus_from_proc(host)
    if not raw and host.live and use_nvidia_smi:
        smi = found.binaries.get("nvidia-smi") or _find_file(host, "nvidia-smi", binaries_dirs, elf=True)
        raw = _gpus_from_nvidia_smi(smi)
    if not raw:
        raise CdiError(
            errors.UNSUPPORTED,
            "No NVIDIA GPU was found in /proc/driver/nvidia/gpus (nor by nvidia-smi): a CDI spec needs the "
            "NVIDIA driver loaded with at least one GPU.",
        )
    for index, (address, uuid, minor, model) in enumerate(sorted(raw, key=lambda r: r[0])):
        if not uuid or minor is None:
            raise CdiError(
                errors.UNSUPPORTED,
                f"The GPU at {address} has no {'UUID' if not uuid else 'device minor'} in "
                "/proc/driver/nvidia/gpus: the loaded driver does not describe it.",
            )
        found.gpus.append(Gpu(index, uuid, minor, address, model))

    control = set(REQUIRED_NODES) | set(_pick(CAPABILITY_NODES, wanted))
    for node in [f"/dev/nvidia{gpu.minor}" for gpu in found.gpus] + [n for n in CONTROL_NODES if n in control]:
        if not host.exists(node):
            if node in REQUIRED_NODES or node not in CONTROL_NODES:
                raise CdiError(
                    errors.UNSUPPORTED,
                    f"The device node {node} is missing: the NVIDIA driver is not loaded (or its nodes were "
                    "not created), so no GPU can be injected.",
                )
            found.missing.append(node)
        elif node in CONTROL_NODES:
            found.control_nodes.append(node)
    if caps:
        found.caps_nodes = [f"{CAPS_DIR}/{n}" for n in host.listdir(CAPS_DIR) if n.startswith("nvidia-cap")]

    cache = linker_cache(host, found.arch)
    required = _pick(CAPABILITY_REQUIRED, wanted)
    names = _library_names(wanted, found.driver_version)
    lib_dirs: List[str] = []
    for key in sorted(names, key=lambda k: "/" in k):  # vdpau/ and gbm/ ones last: they look beside the rest
        library = _find_library(host, key, cache, dirs, lib_dirs + _standard_lib_dirs(found.arch))
        if library:
            found.libraries[key] = library
            if "/" not in key and os.path.dirname(library) not in lib_dirs:
                lib_dirs.append(os.path.dirname(library))
        elif key in required:
            where = ", ".join([LD_SO_CACHE] + dirs)
            raise CdiError(
                errors.UNSUPPORTED,
                f"The driver library {key} was not found in {where}: install the NVIDIA driver's "
                "libraries, or name their directory in search_paths.",
            )
        else:
            found.missing.append(key)

    found.dev_names = _dev_names(host, found.libraries)

    for candidates in _pick(CAPABILITY_CONFIGS, wanted):
        config = _find_config(host, candidates, found.arch)
        if config:
            found.configs[candidates[0]] = config
        else:
            found.missing.append(candidates[0])

    if "graphics" in wanted:
        for gpu in found.gpus:
            gpu.drm_nodes = _drm_nodes(host, gpu.pci_address)
            if not gpu.drm_nodes:
                found.missing.append(f"/dev/dri (GPU {gpu.pci_address})")

    if found.driver_version:
        for base in FIRMWARE_DIRS:
            directory = f"{base}/{found.driver_version}"
            files = [f"{directory}/{n}" for n in host.listdir(directory) if FIRMWARE_RE.match(n)]
            if files:
                found.firmware = files
                break
    found.sockets = [s for s in _pick(CAPABILITY_SOCKETS, wanted) if host.exists(s)]
    return found


# ---------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------
def container_lib_dirs_for(arch: Optional[str]) -> Tuple[str, ...]:
    """Where every library is mounted in containers: the arch's multiarch directory (when it has one), then
    /usr/lib64."""
    multiarch = MULTIARCH.get(arch or "")
    return (f"/usr/lib/{multiarch}", CONTAINER_LIB64) if multiarch else (CONTAINER_LIB64,)


def container_lib_dir_for(arch: Optional[str]) -> str:
    """The first of ``container_lib_dirs_for``: where the libcuda environment variables point."""
    return container_lib_dirs_for(arch)[0]


def _lib_dirs(found: Discovery, container_lib_dir: Any) -> Tuple[str, ...]:
    if not container_lib_dir:
        return container_lib_dirs_for(found.arch)
    given = [container_lib_dir] if isinstance(container_lib_dir, str) else list(container_lib_dir)
    out: List[str] = []
    for item in given:
        directory = str(item).rstrip("/") or "/"
        if directory not in out:
            out.append(directory)
    return tuple(out)


def _mount(host_path: str, container_path: str, options: Sequence[str] = MOUNT_OPTIONS) -> Dict[str, Any]:
    return {"hostPath": host_path, "containerPath": container_path, "options": list(options)}


def build_spec(
    found: Discovery,
    container_lib_dir: Any = None,
    capabilities: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """The CDI spec (a dict) for what ``discover`` found; the same input always gives the same spec.

    ``container_lib_dir`` (a directory or a list of them; default ``container_lib_dirs_for(arch)``): where
    each library, and each development name, is mounted. ``capabilities`` (default: those ``discover``
    looked for) may narrow the spec to fewer; asking for one that ``discover`` did not look for is an error.
    """
    wanted = tuple(found.capabilities) if capabilities is None else normalize_capabilities(capabilities)
    extra = [c for c in wanted if c not in found.capabilities]
    if extra:
        raise CdiError(
            errors.INTERNAL,
            f"The spec was asked for {', '.join(extra)}, which discovery did not look for "
            f"(it looked for {', '.join(found.capabilities)}).",
        )
    lib_dirs = _lib_dirs(found, container_lib_dir)
    libraries = set(_library_names(wanted, found.driver_version))
    binaries = set(_pick(CAPABILITY_BINARIES, wanted))
    configs = {candidates[0] for candidates in _pick(CAPABILITY_CONFIGS, wanted)}
    sockets = set(_pick(CAPABILITY_SOCKETS, wanted))
    control = set(REQUIRED_NODES) | set(_pick(CAPABILITY_NODES, wanted))
    graphics = "graphics" in wanted

    names = {key: path for key, path in found.libraries.items() if key in libraries}
    names.update({name: names[key] for name, key in found.dev_names.items() if key in names})
    mounts = [_mount(path, f"{lib_dir}/{name}") for name, path in names.items() for lib_dir in lib_dirs]
    mounts += [_mount(path, f"{CONTAINER_BIN_DIR}/{name}") for name, path in found.binaries.items() if name in binaries]
    mounts += [_mount(path, path) for name, path in found.configs.items() if name in configs]
    mounts += [_mount(path, path) for path in found.firmware]
    mounts += [_mount(path, path, SOCKET_OPTIONS) for path in found.sockets if path in sockets]
    mounts.sort(key=lambda m: (m["containerPath"], m["hostPath"]))
    nodes = sorted({n for n in found.control_nodes if n in control} | set(found.caps_nodes))
    gpus = sorted(found.gpus, key=lambda g: g.index)

    def gpu_nodes(gpu: Gpu) -> List[str]:
        return [gpu.node] + (sorted(gpu.drm_nodes) if graphics else [])

    devices: List[Dict[str, Any]] = []
    for gpu in gpus:
        devices.append(
            {"name": str(gpu.index), "containerEdits": {"deviceNodes": [{"path": p} for p in gpu_nodes(gpu)]}}
        )
    for gpu in sorted(gpus, key=lambda g: g.uuid):
        devices.append({"name": gpu.uuid, "containerEdits": {"deviceNodes": [{"path": p} for p in gpu_nodes(gpu)]}})
    every = sorted({p for gpu in gpus for p in gpu_nodes(gpu)})
    devices.append({"name": "all", "containerEdits": {"deviceNodes": [{"path": p} for p in every]}})
    env = list(ENV)
    if "libcuda.so.1" in names:
        env += [f"{name}={lib_dirs[0]}" for name in LIBCUDA_ENV]
    edits: Dict[str, Any] = {"env": env, "deviceNodes": [{"path": p} for p in nodes], "mounts": mounts}
    return {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices, "containerEdits": edits}


def dumps(spec: Dict[str, Any]) -> bytes:
    """The spec as the bytes written: JSON, 2-space indent, key order as built, final newline."""
    return (json.dumps(spec, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def generate(
    root: Optional[str] = None,
    search_paths: Optional[Sequence[str]] = None,
    caps: bool = False,
    container_lib_dir: Any = None,
    capabilities: Optional[Sequence[str]] = None,
) -> Tuple[Dict[str, Any], Discovery]:
    """(spec, discovery) for the host or the tree below ``root``; the spec is validated before it is returned.

    ``capabilities``: NVIDIA_DRIVER_CAPABILITIES names (utility, compute, video, graphics, display, or all);
    default utility and compute.
    """
    found = discover(root=root, search_paths=search_paths, caps=caps, capabilities=capabilities)
    spec = build_spec(found, container_lib_dir=container_lib_dir)
    problems = validate(spec)
    if problems:
        raise CdiError(errors.INTERNAL, "The generated CDI spec is invalid: " + "; ".join(problems) + ".")
    return spec, found


def stale_paths(spec: Any, root: Optional[str] = None) -> List[str]:
    """Host paths a spec names that no longer exist (after a driver upgrade, say)."""
    host = gpu_detect.Host(root)
    paths: List[str] = []
    if not isinstance(spec, dict):
        return paths
    devices = [d for d in spec.get("devices") or [] if isinstance(d, dict)]
    edits = [spec.get("containerEdits")] + [d.get("containerEdits") for d in devices]
    for edit in edits:
        if not isinstance(edit, dict):
            continue
        for node in edit.get("deviceNodes") or []:
            if isinstance(node, dict) and isinstance(node.get("path"), str):
                paths.append(node.get("hostPath") or node["path"])
        for mount in edit.get("mounts") or []:
            if isinstance(mount, dict) and isinstance(mount.get("hostPath"), str):
                paths.append(mount["hostPath"])
    return sorted({p for p in paths if not host.exists(p)})


# ---------------------------------------------------------------------------
# Validation (the CDI format, as the container-device-interface parser checks it)
# ---------------------------------------------------------------------------
_VENDOR_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_CLASS_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$")
_DEVICE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_VERSION_RE = re.compile(r"^0\.(\d+)\.(\d+)$")
KNOWN_VERSIONS: Tuple[str, ...] = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")
_ENV_RE = re.compile(r"^[^=\0]+=")
_DEVICE_TYPES: Tuple[str, ...] = ("b", "c", "u", "p")


def _check_edits(edits: Any, where: str, problems: List[str]) -> None:
    if edits is None:
        return
    if not isinstance(edits, dict):
        problems.append(f"{where} is not an object")
        return
    unknown = sorted(set(edits) - {"env", "deviceNodes", "hooks", "mounts", "intelRdt", "additionalGids"})
    if unknown:
        problems.append(f"{where} has unknown keys {', '.join(unknown)}")
    env = edits.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and _ENV_RE.match(e) for e in env):
        problems.append(f"{where}.env must be a list of NAME=VALUE strings")
    nodes = _list_of(edits, "deviceNodes", where, problems)
    for i, node in enumerate(nodes):
        at = f"{where}.deviceNodes[{i}]"
        if not isinstance(node, dict) or not isinstance(node.get("path"), str):
            problems.append(f"{at} needs a path")
            continue
        for key in ("path", "hostPath"):
            value = node.get(key)
            if value is not None and not (isinstance(value, str) and value.startswith("/")):
                problems.append(f"{at}.{key} {value!r} is not an absolute path")
        if node.get("type") is not None and node.get("type") not in _DEVICE_TYPES:
            problems.append(f"{at}.type {node.get('type')!r} is not one of b, c, u, p")
    mounts = _list_of(edits, "mounts", where, problems)
    for i, mount in enumerate(mounts):
        at = f"{where}.mounts[{i}]"
        if not isinstance(mount, dict):
            problems.append(f"{at} is not an object")
            continue
        for key in ("hostPath", "containerPath"):
            value = mount.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"{at} needs {key}")
            elif not value.startswith("/"):
                problems.append(f"{at}.{key} {value!r} is not an absolute path")
        options = mount.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            problems.append(f"{at}.options must be a list of strings")
    hooks = _list_of(edits, "hooks", where, problems)
    for i, hook in enumerate(hooks):
        at = f"{where}.hooks[{i}]"
        if not isinstance(hook, dict) or not isinstance(hook.get("hookName"), str):
            problems.append(f"{at} needs a hookName")
        elif not isinstance(hook.get("path"), str) or not hook["path"].startswith("/"):
            problems.append(f"{at}.path must be an absolute path")


def _list_of(edits: Dict[str, Any], key: str, where: str, problems: List[str]) -> List[Any]:
    """edits[key] when it is a list (absent: empty); anything else is a problem, read as empty."""
    value = edits.get(key, [])
    if isinstance(value, list):
        return value
    problems.append(f"{where}.{key} is not a list")
    return []


def validate(spec: Any) -> List[str]:
    """Problems with ``spec`` as a CDI spec, one short phrase each; empty when it is valid."""
    problems: List[str] = []
    if not isinstance(spec, dict):
        return ["the spec is not an object"]
    version = spec.get("cdiVersion")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        problems.append(f"cdiVersion {version!r} is not a CDI version")
    elif version not in KNOWN_VERSIONS:
        problems.append(f"cdiVersion {version} is not a released CDI version")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind.count("/") != 1:
        problems.append(f"kind {kind!r} is not vendor/class")
    else:
        vendor, klass = kind.split("/")
        if not _VENDOR_RE.match(vendor):
            problems.append(f"kind's vendor {vendor!r} is malformed")
        if not _CLASS_RE.match(klass):
            problems.append(f"kind's class {klass!r} is malformed")
    unknown = sorted(set(spec) - {"cdiVersion", "kind", "devices", "containerEdits", "annotations"})
    if unknown:
        problems.append(f"unknown top-level keys {', '.join(unknown)}")
    devices = spec.get("devices")
    if not isinstance(devices, list) or not devices:
        problems.append("devices must be a non-empty list")
        devices = []
    seen: Dict[str, int] = {}
    for i, device in enumerate(devices):
        at = f"devices[{i}]"
        if not isinstance(device, dict):
            problems.append(f"{at} is not an object")
            continue
        name = device.get("name")
        if not isinstance(name, str) or not _DEVICE_RE.match(name):
            problems.append(f"{at}.name {name!r} is not a valid device name")
        elif name in seen:
            problems.append(f"{at}.name {name!r} duplicates devices[{seen[name]}]")
        else:
            seen[name] = i
        edits = device.get("containerEdits")
        if not isinstance(edits, dict) or not any(edits.get(k) for k in ("env", "deviceNodes", "mounts", "hooks")):
            problems.append(f"{at} has no containerEdits")
        else:
            _check_edits(edits, f"{at}.containerEdits", problems)
    _check_edits(spec.get("containerEdits"), "containerEdits", problems)
    return problems


# ---------------------------------------------------------------------------
# Writing (used by the module)
# ---------------------------------------------------------------------------
def read_current(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read(16 << 20)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CdiError(errors.HOST_ERROR, f"Could not read {path}: {exc.strerror or exc}.") from exc


def write(path: str, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (0644, root-owned when run as root), creating its directory."""
    target = os.path.realpath(path)
    try:
        os.makedirs(os.path.dirname(target) or ".", mode=0o755, exist_ok=True)
        fileio.write_atomic(target, data, 0o644, os.geteuid(), os.getegid())
    except OSError as exc:
        raise CdiError(errors.HOST_ERROR, f"Could not write {path}: {exc.strerror or exc}; it is unchanged.") from exc


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CdiError(errors.HOST_ERROR, f"Could not remove {path}: {exc.strerror or exc}.") from exc
