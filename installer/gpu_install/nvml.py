"""The GPUs as NVML sees them, through nvidia-ml-py (pynvml); read-only.

Used where the CLI runs on the GPU host itself (doctor, verify). It never
changes a GPU setting.
"""

from __future__ import annotations

from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot() -> dict[str, Any]:
    """{"available", "error", "driver_version", "cuda_driver_version", "gpus": [{index, name, uuid, pci_bus_id, minor,
    persistence_mode}]}; never raises."""
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        return {"available": False, "error": f"nvidia-ml-py is not installed ({exc})", "gpus": []}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "error": f"NVML: {exc}", "gpus": []}
    try:
        out: dict[str, Any] = {"available": True, "error": None, "gpus": []}
        out["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
            out["cuda_driver_version"] = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        except pynvml.NVMLError:
            out["cuda_driver_version"] = None
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu: dict[str, Any] = {
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "pci_bus_id": _text(pynvml.nvmlDeviceGetPciInfo(handle).busId).lower(),
            }
            for key, call in (
                ("minor", pynvml.nvmlDeviceGetMinorNumber),
                ("persistence_mode", pynvml.nvmlDeviceGetPersistenceMode),
            ):
                try:
                    value = call(handle)
                    gpu[key] = bool(value) if key == "persistence_mode" else int(value)
                except pynvml.NVMLError:
                    gpu[key] = None
            out["gpus"].append(gpu)
        return out
    except pynvml.NVMLError as exc:
        return {"available": False, "error": f"NVML: {exc}", "gpus": []}
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
