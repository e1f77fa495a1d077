"""gpu-install doctor: what stands between this host and GPU containers, with fixes."""

from __future__ import annotations

import argparse

from ..collection import module_utils
from ..output import emit_json


def run(args: argparse.Namespace) -> int:
    gpu_detect = module_utils("gpu_detect")
    facts = gpu_detect.detect(None)
    problems = facts.get("problems") or []
    if args.json:
        emit_json({"facts": facts, "problems": problems, "healthy": not problems})
    else:
        from ..report import print_facts

        print_facts(facts)
    refusal = gpu_detect.refusal(facts)
    return refusal[0] if refusal else 0
