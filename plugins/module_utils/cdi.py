# Copyright: gpu-install contributors
# Apache License 2.0
"""CDI spec generation for NVIDIA GPUs: one implementation, stdlib only.

Docker 25+ injects devices named in a Container Device Interface (CDI) spec
(``docker run --device nvidia.com/gpu=all``).  gpu-install writes that spec
itself, so CDI mode needs no NVIDIA Container Toolkit.  Imported by the
``gpu_install.nvidia.cdi_spec`` module on managed hosts (Python >= 3.8) and by
the CLI.  Public API:

* ``discover(root=None, search_paths=None, ...) -> Discovery``: GPUs, device
  nodes, libraries, binaries, firmware and sockets of the host (or of a tree
  below ``root``: a captured tree, a mounted image).
* ``build_spec(discovery, ...) -> dict``: the spec, deterministic (sorted).
* ``generate(...) -> dict`` and ``dumps(spec) -> bytes``: both in one.
* ``validate(spec) -> list of problems``: the CDI format's rules, checked
  with the stdlib (required fields, name syntax, absolute paths, no duplicate
  device names).
* ``parse_ld_so_cache(data)`` / ``parse_ldconfig_p(text)``: the linker cache.

Libraries are found by their stable SONAME (``libcuda.so.1``, not
``libcuda.so.580.95.05``), first in the linker cache, then in the driver
directories given in ``search_paths``; a driver upgrade then keeps the spec
valid.  Libraries whose SONAME carries the driver version (``libnvidia-gpucomp``)
and the GSP firmware are versioned by nature: the spec must be regenerated
after a driver change (the module reports it in ``stale``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

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

# Control device nodes every GPU container gets (those missing are left out, except nvidiactl).
CONTROL_NODES: Tuple[str, ...] = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
REQUIRED_NODES: Tuple[str, ...] = ("/dev/nvidiactl",)
CAPS_DIR = "/dev/nvidia-caps"

# Driver libraries by stable SONAME (utility + compute, as the toolkit's capabilities name them).
LIBRARIES: Tuple[str, ...] = (
    "libnvidia-ml.so.1",
    "libnvidia-cfg.so.1",
    "libcuda.so.1",
    "libcudadebugger.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so.4",
    "libnvidia-opencl.so.1",
)
REQUIRED_LIBRARIES: Tuple[str, ...] = ("libnvidia-ml.so.1", "libcuda.so.1")
# Libraries whose SONAME is the driver version itself ({version} is filled in).
VERSIONED_LIBRARIES: Tuple[str, ...] = ("libnvidia-gpucomp.so.{version}",)

BINARIES: Tuple[str, ...] = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
BINARY_DIRS: Tuple[str, ...] = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")
CONTAINER_BIN_DIR = "/usr/bin"
FIRMWARE_DIRS: Tuple[str, ...] = ("/lib/firmware/nvidia", "/usr/lib/firmware/nvidia")
FIRMWARE_RE = re.compile(r"^gsp.*\.bin$")
SOCKETS: Tuple[str, ...] = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket")

# Where libraries appear inside the container: the multiarch directory that Debian and Ubuntu
# images (all of NVIDIA's CUDA images among them) search by default. Images of the Red Hat
# family want "/usr/lib64" (option container_lib_dir).
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
# Discovery
# ---------------------------------------------------------------------------
class Gpu:
    """One GPU: ``index`` (nvidia-smi's, PCI bus order), ``uuid``, ``minor``, ``pci_address``, ``name``."""

    def __init__(self, index: int, uuid: str, minor: int, pci_address: str, name: Optional[str]) -> None:
        self.index = index
        self.uuid = uuid
        self.minor = minor
        self.pci_address = pci_address
        self.name = name

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
        }


class Discovery:
    """What ``discover`` found; every path is a host path (as seen without ``root``)."""

    def __init__(self) -> None:
        self.gpus: List[Gpu] = []
        self.driver_version: Optional[str] = None
        self.arch: Optional[str] = None
        self.control_nodes: List[str] = []
        self.caps_nodes: List[str] = []
        self.libraries: Dict[str, str] = {}  # soname -> host path
        self.binaries: Dict[str, str] = {}  # name -> host path
        self.firmware: List[str] = []
        self.sockets: List[str] = []
        self.missing: List[str] = []  # optional parts not found

    def as_dict(self) -> Dict[str, Any]:
        return {
            "gpus": [gpu.as_dict() for gpu in self.gpus],
            "driver_version": self.driver_version,
            "arch": self.arch,
            "control_nodes": list(self.control_nodes),
            "caps_nodes": list(self.caps_nodes),
            "libraries": dict(sorted(self.libraries.items())),
            "binaries": dict(sorted(self.binaries.items())),
            "firmware": list(self.firmware),
            "sockets": list(self.sockets),
            "missing": list(self.missing),
        }


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
        out.append((sec["address"], sec.get("uuid"), int(minor) if minor.isdigit() else None, sec.get("name")))
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


def discover(
    root: Optional[str] = None,
    search_paths: Optional[Sequence[str]] = None,
    caps: bool = False,
    use_nvidia_smi: bool = True,
) -> Discovery:
    """Find what a GPU container needs on the host (or below ``root``); raises CdiError when no spec can be made."""
    host = gpu_detect.Host(root)
    dirs = list(DEFAULT_SEARCH_PATHS if search_paths is None else search_paths)
    found = Discovery()
    found.arch = _arch(host)
    driver, _nouveau, _problems = gpu_detect.detect_driver(host, {})
    found.driver_version = driver.get("version")

    binaries_dirs = list(BINARY_DIRS) + dirs
    for name in BINARIES:
        binary = _find_file(host, name, binaries_dirs, elf=True)
        if binary:
            found.binaries[name] = binary
        else:
            found.missing.append(name)

    raw = _gpus_from_proc(host)
    if not raw and host.live and use_nvidia_smi:
        raw = _gpus_from_nvidia_smi(found.binaries.get("nvidia-smi"))
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

    for node in [f"/dev/nvidia{gpu.minor}" for gpu in found.gpus] + list(CONTROL_NODES):
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
    names = list(LIBRARIES)
    if found.driver_version:
        names += [pattern.format(version=found.driver_version) for pattern in VERSIONED_LIBRARIES]
    for soname in names:
        library = cache.get(soname)
        if library is None or not host.exists(library):
            library = _find_file(host, soname, dirs)
        if library:
            found.libraries[soname] = library
        elif soname in REQUIRED_LIBRARIES:
            where = ", ".join([LD_SO_CACHE] + dirs)
            raise CdiError(
                errors.UNSUPPORTED,
                f"The driver library {soname} was not found in {where}: install the NVIDIA driver's "
                "libraries, or name their directory in search_paths.",
            )
        else:
            found.missing.append(soname)

    if found.driver_version:
        for base in FIRMWARE_DIRS:
            directory = f"{base}/{found.driver_version}"
            files = [f"{directory}/{n}" for n in host.listdir(directory) if FIRMWARE_RE.match(n)]
            if files:
                found.firmware = files
                break
    found.sockets = [s for s in SOCKETS if host.exists(s)]
    return found


# ---------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------
def container_lib_dir_for(arch: Optional[str]) -> str:
    multiarch = MULTIARCH.get(arch or "")
    return f"/usr/lib/{multiarch}" if multiarch else "/usr/lib64"


def _mount(host_path: str, container_path: str, options: Sequence[str] = MOUNT_OPTIONS) -> Dict[str, Any]:
    return {"hostPath": host_path, "containerPath": container_path, "options": list(options)}


def build_spec(found: Discovery, container_lib_dir: Optional[str] = None) -> Dict[str, Any]:
    """The CDI spec (a dict) for what ``discover`` found; the same input always gives the same spec."""
    lib_dir = (container_lib_dir or container_lib_dir_for(found.arch)).rstrip("/") or "/"
    mounts = [_mount(path, f"{lib_dir}/{soname}") for soname, path in found.libraries.items()]
    mounts += [_mount(path, f"{CONTAINER_BIN_DIR}/{name}") for name, path in found.binaries.items()]
    mounts += [_mount(path, path) for path in found.firmware]
    mounts += [_mount(path, path, SOCKET_OPTIONS) for path in found.sockets]
    mounts.sort(key=lambda m: (m["containerPath"], m["hostPath"]))
    nodes = sorted(set(found.control_nodes) | set(found.caps_nodes))
    gpus = sorted(found.gpus, key=lambda g: g.index)
    devices: List[Dict[str, Any]] = []
    for gpu in gpus:
        devices.append({"name": str(gpu.index), "containerEdits": {"deviceNodes": [{"path": gpu.node}]}})
    for gpu in sorted(gpus, key=lambda g: g.uuid):
        devices.append({"name": gpu.uuid, "containerEdits": {"deviceNodes": [{"path": gpu.node}]}})
    every = sorted({gpu.node for gpu in gpus})
    devices.append({"name": "all", "containerEdits": {"deviceNodes": [{"path": p} for p in every]}})
    edits: Dict[str, Any] = {"env": list(ENV), "deviceNodes": [{"path": p} for p in nodes], "mounts": mounts}
    return {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices, "containerEdits": edits}


def dumps(spec: Dict[str, Any]) -> bytes:
    """The spec as the bytes written: JSON, 2-space indent, key order as built, final newline."""
    return (json.dumps(spec, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def generate(
    root: Optional[str] = None,
    search_paths: Optional[Sequence[str]] = None,
    caps: bool = False,
    container_lib_dir: Optional[str] = None,
) -> Tuple[Dict[str, Any], Discovery]:
    """(spec, discovery) for the host or the tree below ``root``; the spec is validated before it is returned."""
    found = discover(root=root, search_paths=search_paths, caps=caps)
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
