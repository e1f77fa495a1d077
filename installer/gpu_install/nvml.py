"""The GPUs as NVML sees them, through nvidia-ml-py (pynvml); read-only.

Used where the CLI runs on the GPU host itself (doctor, verify). It only
queries: it never changes a GPU setting (no persistence mode, no clocks, no
CPU affinity is set here, whatever a query reports).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

# NVML return codes -> a stable name for what went wrong (nvml.h's NVML_ERROR_*).
ERROR_KINDS: dict[int, str] = {
    1: "uninitialized",
    2: "invalid_argument",
    3: "not_supported",
    4: "no_permission",
    6: "not_found",
    9: "driver_not_loaded",
    12: "library_not_found",
    13: "function_not_found",
    15: "gpu_is_lost",
    17: "operating_system",
    18: "lib_rm_version_mismatch",  # "Driver/library version mismatch"
    999: "unknown",
}

# nvmlBrandType_t -> the brand word NVIDIA_REQUIRE_* expressions compare with (case-insensitively),
# as libnvidia-container names it; every other brand reads as "Unknown" there, which is why
# NVIDIA's CUDA images list `brand=unknown` beside the others.
BRANDS: dict[int, str] = {1: "Quadro", 2: "Tesla", 3: "NVS", 4: "GRID", 5: "GeForce", 6: "TITAN"}

# nvmlGpuTopologyLevel_t -> nvidia-smi topo's legend.
TOPOLOGY_LEVELS: dict[int, str] = {0: "BOARD", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}

NVLINK_SWITCH = 2  # NVML_NVLINK_DEVICE_TYPE_SWITCH
AFFINITY_SCOPE_NODE = 0  # NVML_AFFINITY_SCOPE_NODE


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def error_kind(code: Any) -> str:
    """The stable name of an NVML return code (``lib_rm_version_mismatch``, ...); ``error_<n>`` otherwise."""
    try:
        number = int(code)
    except (TypeError, ValueError):
        return "unknown"
    return ERROR_KINDS.get(number, f"error_{number}")


def bus_id(text: Any) -> str:
    """NVML's ``00000000:1B:00.0`` as ``0000:1b:00.0`` (lower case, 4-digit domain)."""
    parts = _text(text).strip().lower().split(":")
    if len(parts) == 3:
        try:
            return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
        except ValueError:
            pass
    return ":".join(parts)


def cpu_list(masks: Sequence[int], bits: int = 64) -> str:
    """The CPUs (or NUMA nodes) set in NVML's affinity bitmask words, as ``0-23,48-71`` (cpuset syntax)."""
    cpus = [n * bits + bit for n, word in enumerate(masks) for bit in range(bits) if int(word) >> bit & 1]
    ranges: list[str] = []
    start = prev = None
    for cpu in cpus:
        if start is None:
            start = prev = cpu
        elif prev is not None and cpu == prev + 1:
            prev = cpu
        else:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = cpu
    if start is not None:
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(ranges)


def _failure(exc: Any) -> dict[str, Any]:
    code = getattr(exc, "value", None)
    return {
        "available": False,
        "error": f"NVML: {exc}",
        "error_code": code,
        "error_kind": error_kind(code),
        "gpus": [],
    }


def _query(pynvml: Any, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def _nvlinks(pynvml: Any, handle: Any) -> dict[str, Any]:
    """Active NVLinks of one GPU: {active, remotes (bus ids of the far ends), switch (ends at an NVSwitch)}."""
    remotes: list[str] = []
    switch = False
    for link in range(int(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            if not pynvml.nvmlDeviceGetNvLinkState(handle, link):
                continue
        except pynvml.NVMLError as exc:
            if error_kind(getattr(exc, "value", None)) in ("not_supported", "function_not_found"):
                break  # no NVLink on this GPU (or this driver): nothing further to ask
            continue
        remote = _query(pynvml, pynvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
        remotes.append(bus_id(remote.busId) if remote is not None else "")
        if _query(pynvml, pynvml.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link) == NVLINK_SWITCH:
            switch = True
    return {"active": len(remotes), "remotes": remotes, "switch": switch}


def _device(pynvml: Any, index: int, handle: Any, cpu_words: int) -> dict[str, Any]:
    gpu: dict[str, Any] = {
        "index": index,
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "pci_bus_id": _text(pynvml.nvmlDeviceGetPciInfo(handle).busId).lower(),
    }
    minor = _query(pynvml, pynvml.nvmlDeviceGetMinorNumber, handle)
    gpu["minor"] = None if minor is None else int(minor)
    persistence = _query(pynvml, pynvml.nvmlDeviceGetPersistenceMode, handle)
    gpu["persistence_mode"] = None if persistence is None else bool(persistence)
    brand = _query(pynvml, pynvml.nvmlDeviceGetBrand, handle)
    gpu["brand_id"] = None if brand is None else int(brand)
    gpu["brand"] = None if brand is None else BRANDS.get(int(brand), "Unknown")
    capability = _query(pynvml, pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    gpu["compute_capability"] = None if capability is None else "{}.{}".format(*capability)
    affinity = _query(pynvml, pynvml.nvmlDeviceGetCpuAffinity, handle, cpu_words)
    gpu["cpu_affinity"] = None if affinity is None else (cpu_list([int(w) for w in affinity]) or None)
    # The NUMA node(s) whose CPUs and memory are nearest (nvidia-smi topo's "NUMA Affinity"); not
    # nvmlDeviceGetNumaNodeId, which names the GPU's own memory node on coherent systems only.
    nodes = _query(pynvml, pynvml.nvmlDeviceGetMemoryAffinity, handle, 1, AFFINITY_SCOPE_NODE)
    gpu["numa_affinity"] = None if nodes is None else (cpu_list([int(w) for w in nodes]) or None)
    gpu["nvlink"] = _nvlinks(pynvml, handle)
    return gpu


def snapshot() -> dict[str, Any]:
    """What NVML reports, never raising::

        {"available", "error", "error_code", "error_kind", "driver_version", "cuda_driver_version",
         "gpus": [{index, name, uuid, pci_bus_id, minor, persistence_mode, brand, brand_id,
                   compute_capability, cpu_affinity, numa_affinity, nvlink: {active, remotes, switch}}],
         "topology": [{"gpus": [i, j], "level": "PIX"|"PXB"|"PHB"|"NODE"|"SYS"|"BOARD"|None}]}

    ``error_kind`` names a failed init (``lib_rm_version_mismatch`` for "Driver/library version
    mismatch", ``driver_not_loaded``, ``library_not_found``, ``no_permission``, ...).
    """
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        return {
            "available": False,
            "error": f"nvidia-ml-py is not installed ({exc})",
            "error_code": None,
            "error_kind": "pynvml_missing",
            "gpus": [],
        }
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return _failure(exc)
    try:
        out: dict[str, Any] = {"available": True, "error": None, "error_code": None, "error_kind": None, "gpus": []}
        out["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _query(pynvml, pynvml.nvmlSystemGetCudaDriverVersion)
        out["cuda_driver_version"] = None if cuda is None else f"{int(cuda) // 1000}.{(int(cuda) % 1000) // 10}"
        cpu_words = max(1, ((os.cpu_count() or 1) + 63) // 64)
        handles = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            handles.append(handle)
            out["gpus"].append(_device(pynvml, index, handle, cpu_words))
        topology = []
        for i in range(len(handles)):
            for j in range(i + 1, len(handles)):
                level = _query(pynvml, pynvml.nvmlDeviceGetTopologyCommonAncestor, handles[i], handles[j])
                name = None if level is None else TOPOLOGY_LEVELS.get(int(level), str(level))
                topology.append({"gpus": [i, j], "level": name})
        out["topology"] = topology
        return out
    except pynvml.NVMLError as exc:
        return _failure(exc)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
