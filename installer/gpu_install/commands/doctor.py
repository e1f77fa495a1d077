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
    if args.json:
        emit_json({"facts": facts, "nvml": view, "problems": problems, "healthy": not problems})
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
    refusal = gpu_detect.refusal(facts)
    return refusal[0] if refusal else 0
