"""gpu-install detect: the host's facts, read-only."""

from __future__ import annotations

import os

from ..collection import module_utils
from ..output import emit_json

TYPE_CHECKING = False  # typing for the type checker only: `gpu-install detect` does not import argparse
if TYPE_CHECKING:
    from ..cli import Args


def run(args: Args) -> int:
    gpu_detect = module_utils("gpu_detect")
    root = args.root
    if root is not None and not os.path.isdir(root):
        from ..errors import GpuInstallError, codes

        raise GpuInstallError(codes.INVALID_INPUT, f"--root {root} is not a directory: give a captured host tree.")
    facts = gpu_detect.detect(root)
    refusal = gpu_detect.refusal(facts)
    if args.json:
        emit_json(facts)
    else:
        from ..report import print_facts

        print_facts(facts)
    return refusal[0] if refusal else 0
