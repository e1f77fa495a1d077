"""Unit-test helpers (no fixtures): make the source checkout's ``gpu_install`` importable.

Tests import target-side code the way the CLI does::

    from gpu_install.collection import module_utils
    gpu_detect = module_utils("gpu_detect")
"""

from __future__ import annotations

import sys
from pathlib import Path

INSTALLER = Path(__file__).resolve().parents[2] / "installer"
if str(INSTALLER) not in sys.path:
    sys.path.insert(0, str(INSTALLER))

from gpu_install.collection import module_utils  # noqa: E402

__all__ = ["module_utils"]
