# Copyright: gpu-install contributors
# Apache License 2.0
"""The GPUs as NVML sees them, through ctypes and the driver's libnvidia-ml.so.1 (stdlib only, read-only).

Managed hosts have no nvidia-ml-py: this reader calls the handful of NVML
functions gpu-install needs straight from the driver's library.  It only
reads (init, queries, shutdown); it never changes a GPU setting.

``read(library=None) -> dict`` never raises::

    {"available": True, "error": None, "library": "libnvidia-ml.so.1",
     "driver_version": "580.159.04", "cuda_driver_version": "13.0",
     "gpus": [{"index": 0, "uuid": "GPU-...", "name": "NVIDIA H100 80GB HBM3",
               "pci_bus_id": "00000000:00:06.0", "persistence_mode": True, "error": None}]}

With no library, no loaded driver or any NVML failure: ``available`` is False
and ``error`` is one sentence naming what failed (NVML's own error string).
A GPU that NVML lists but cannot describe keeps its index, with ``uuid``
None and its ``error``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

SONAME = "libnvidia-ml.so.1"
# Tried in order after the linker's own search: the nvidia-docker 1.0 layout (the lent H100), the
# multiarch and lib64 directories (a host whose linker cache was not refreshed), WSL.
FALLBACK_DIRS: Sequence[str] = (
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/lib/wsl/lib",
)

NVML_SUCCESS = 0
NVML_ERROR_FUNCTION_NOT_FOUND = 13
# Buffer sizes from nvml.h (the _V2 sizes are the larger, current ones).
DRIVER_VERSION_SIZE = 80
UUID_SIZE = 96
NAME_SIZE = 96
PCI_BUS_ID_LEGACY_SIZE = 16
PCI_BUS_ID_SIZE = 32

# NVML's error strings, for when nvmlErrorString itself cannot be called.
_ERRORS = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
    9: "Driver Not Loaded",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    18: "RM has detected an NVML/RM version mismatch",
    999: "Unknown Error",
}


class _PciInfo(ctypes.Structure):
    """nvmlPciInfo_t as nvmlDeviceGetPciInfo_v3 fills it."""

    _fields_ = [
        ("busIdLegacy", ctypes.c_char * PCI_BUS_ID_LEGACY_SIZE),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * PCI_BUS_ID_SIZE),
    ]


class NvmlCallError(Exception):
    def __init__(self, function: str, code: int, text: str) -> None:
        super().__init__(f"{function}: {text}")
        self.function = function
        self.code = code
        self.text = text


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def cuda_version(value: int) -> Optional[str]:
    """NVML's CUDA driver version integer as "major.minor" (12080 -> "12.8"); None for 0 or less."""
    if value <= 0:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def load_library(library: Optional[str] = None) -> Tuple[Optional[ctypes.CDLL], str, Optional[str]]:
    """(library, the name it was loaded by, None) or (None, the first name tried, why it failed)."""
    names = [library] if library else [SONAME] + [os.path.join(d, SONAME) for d in FALLBACK_DIRS]
    first_error: Optional[str] = None
    for name in names:
        if not library and os.sep in name and not os.path.exists(name):
            continue  # a fallback directory this host does not have
        try:
            return ctypes.CDLL(name), name, None
        except OSError as exc:
            if first_error is None:
                first_error = str(exc)
    return None, names[0], first_error or f"{names[0]}: cannot open shared object file"


class _Nvml:
    """The few NVML calls gpu-install makes, each with its ctypes signature set before it is called."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def _fn(self, name: str, argtypes: List[Any]) -> Optional[Any]:
        try:
            fn = getattr(self.lib, name)
        except AttributeError:
            return None
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
        return fn

    def error_string(self, code: int) -> str:
        try:
            fn = self.lib.nvmlErrorString
            fn.argtypes = [ctypes.c_int]
            fn.restype = ctypes.c_char_p
            raw = fn(code)
            if raw:
                return raw.decode("utf-8", errors="replace")
        except (AttributeError, OSError, ValueError):
            pass
        return _ERRORS.get(code, f"NVML error {code}")

    def call(self, names: Sequence[str], argtypes: List[Any], *args: Any) -> None:
        """Call the first of ``names`` the library exports (newest first); raise NvmlCallError on failure."""
        for name in names:
            fn = self._fn(name, argtypes)
            if fn is None:
                continue
            code = int(fn(*args))
            if code != NVML_SUCCESS:
                raise NvmlCallError(name, code, self.error_string(code))
            return
        raise NvmlCallError(names[0], NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found")

    def string(self, names: Sequence[str], size: int, *prefix: Any) -> str:
        buf = ctypes.create_string_buffer(size)
        argtypes: List[Any] = [type(p) for p in prefix] + [ctypes.c_char_p, ctypes.c_uint]
        self.call(names, argtypes, *prefix, buf, ctypes.c_uint(size))
        return _text(buf.raw)


def _device(nvml: _Nvml, index: int) -> Dict[str, Any]:
    gpu: Dict[str, Any] = {
        "index": index,
        "uuid": None,
        "name": None,
        "pci_bus_id": None,
        "persistence_mode": None,
        "error": None,
    }
    handle = ctypes.c_void_p()
    try:
        nvml.call(
            ("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
            [ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)],
            ctypes.c_uint(index),
            ctypes.byref(handle),
        )
        gpu["uuid"] = nvml.string(("nvmlDeviceGetUUID",), UUID_SIZE, handle)
    except NvmlCallError as exc:
        gpu["error"] = str(exc)
        return gpu
    try:
        gpu["name"] = nvml.string(("nvmlDeviceGetName",), NAME_SIZE, handle)
    except NvmlCallError:
        pass
    try:
        pci = _PciInfo()
        nvml.call(("nvmlDeviceGetPciInfo_v3",), [ctypes.c_void_p, ctypes.POINTER(_PciInfo)], handle, ctypes.byref(pci))
        gpu["pci_bus_id"] = _text(pci.busId) or None
    except NvmlCallError:
        pass
    try:
        state = ctypes.c_int()
        nvml.call(
            ("nvmlDeviceGetPersistenceMode",),
            [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)],
            handle,
            ctypes.byref(state),
        )
        gpu["persistence_mode"] = bool(state.value)
    except NvmlCallError:
        pass
    return gpu


def _unavailable(library: str, error: str) -> Dict[str, Any]:
    return {
        "available": False,
        "error": error,
        "library": library,
        "driver_version": None,
        "cuda_driver_version": None,
        "gpus": [],
    }


def read(library: Optional[str] = None) -> Dict[str, Any]:
    """What NVML says about the driver and every GPU; never raises, never changes a setting.

    ``library`` names the NVML library (default: libnvidia-ml.so.1 through the linker, then FALLBACK_DIRS).
    """
    try:
        lib, name, why = load_library(library)
        if lib is None:
            return _unavailable(name, f"{name} cannot be loaded ({why})")
        nvml = _Nvml(lib)
        try:
            nvml.call(("nvmlInit_v2", "nvmlInit"), [])
        except NvmlCallError as exc:
            return _unavailable(name, f"NVML cannot start ({exc.function}: {exc.text})")
        try:
            out: Dict[str, Any] = {
                "available": True,
                "error": None,
                "library": name,
                "driver_version": None,
                "cuda_driver_version": None,
                "gpus": [],
            }
            out["driver_version"] = nvml.string(("nvmlSystemGetDriverVersion",), DRIVER_VERSION_SIZE)
            cuda = ctypes.c_int()
            try:
                nvml.call(
                    ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"),
                    [ctypes.POINTER(ctypes.c_int)],
                    ctypes.byref(cuda),
                )
                out["cuda_driver_version"] = cuda_version(cuda.value)
            except NvmlCallError:
                pass
            count = ctypes.c_uint()
            nvml.call(
                ("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"), [ctypes.POINTER(ctypes.c_uint)], ctypes.byref(count)
            )
            out["gpus"] = [_device(nvml, index) for index in range(count.value)]
            return out
        except NvmlCallError as exc:
            return _unavailable(name, f"NVML cannot be read ({exc.function}: {exc.text})")
        finally:
            try:
                nvml.call(("nvmlShutdown",), [])
            except NvmlCallError:
                pass
    except Exception as exc:  # a reader that must never raise: any surprise is reported
        return _unavailable(library or SONAME, f"NVML cannot be read ({type(exc).__name__}: {exc})")
