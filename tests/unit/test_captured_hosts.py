"""Trees captured on real machines replay to the facts detect gave live there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_install.collection import module_utils

CAPTURED = Path(__file__).resolve().parent / "captured"
CASES = sorted(p.name for p in CAPTURED.iterdir() if (p / "tree").is_dir())
# Facts that a captured tree cannot carry (sysfs driver links, kernel headers, live processes).
LIVE_ONLY = {"root", "kernel", "persistenced"}


@pytest.mark.parametrize("case", CASES)
def test_captured_tree_replays_to_the_live_facts(case):
    gpu_detect = module_utils("gpu_detect")
    live = json.loads((CAPTURED / case / "live-detect.json").read_text())
    replay = gpu_detect.detect(str(CAPTURED / case / "tree"))
    for key in sorted(set(live) - LIVE_ONLY):
        if key == "gpus":
            strip = ("kernel_driver",)
            assert [{k: v for k, v in g.items() if k not in strip} for g in replay[key]] == [
                {k: v for k, v in g.items() if k not in strip} for g in live[key]
            ]
        else:
            assert replay[key] == live[key], key
