"""gpu-install doctor: what stands between this host and GPU containers, with fixes."""

from __future__ import annotations

import argparse
from typing import Any

from ..collection import module_utils
from ..output import emit_json


def run(args: argparse.Namespace) -> int:
    from .. import nvml

    gpu_detect = module_utils("gpu_detect")
    facts = gpu_detect.detect(None)
    view: dict[str, Any] = nvml.snapshot() if (facts.get("driver") or {}).get("loaded") else {"available": False}
    problems = list(facts.get("problems") or [])
    driver = module_utils("driver")
    kernels = driver.kernels_status()
    guard = driver.kernel_guard(kernels, (facts.get("kernel") or {}).get("release"))
    if guard:
        problems.append({"code": "kernel_without_nvidia_module", "message": guard, "refuses": False})
    if args.json:
        emit_json({"facts": facts, "nvml": view, "kernels": kernels, "problems": problems, "healthy": not problems})
    else:
        from ..output import console
        from ..report import print_facts

        print_facts(facts)
        con = console()
        if view.get("available"):
            con.print(f"\nNVML: driver {view.get('driver_version')}, CUDA {view.get('cuda_driver_version')}")
            for gpu in view.get("gpus") or []:
                pm = {True: "on", False: "off", None: "unknown"}[gpu.get("persistence_mode")]
                con.print(
                    f"  GPU {gpu['index']}: {gpu['name']} {gpu['uuid']} at {gpu['pci_bus_id']}, persistence {pm}",
                    markup=False,
                )
        elif view.get("error"):
            con.print(f"\nNVML: {view['error']}", markup=False)
        if kernels:
            con.print("\nInstalled kernels (newest first):")
            for k in kernels:
                module = "NVIDIA module built" if k["nvidia_module"] else "no NVIDIA module"
                headers = "headers" if k["headers"] else "no headers"
                con.print(f"  {k['release']}: {module}, {headers}", markup=False)
        if guard:
            con.print(f"[yellow]note[/yellow] {guard}")
    refusal = gpu_detect.refusal(facts)
    return refusal[0] if refusal else 0
