"""gpu-install verify: prove that a container sees the GPU.

Runs the collection's verify playbook (the gpu_verify role) through the engine; the gpu_verify module's
result comes back in ``RunResult.results["verify"]``. Exit 0 verified, 8 not (the module's reason), 10 not
root; the JSON result carries it whole under ``verify``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import engine, settings
from ..collection import FQCN
from ..errors import GpuInstallError, codes
from ..output import console, emit_json
from ..progress import Progress
from ._common import require_root, result_json


def _uuids(value: Any) -> str:
    if value is None:
        return "?"
    return ", ".join(str(u) for u in value) if value else "no GPU"


def check_line(check: dict[str, Any]) -> str:
    """One line per check: ``ok    all: expected GPU-a, GPU-b; seen GPU-a, GPU-b``."""
    status = {True: "ok", False: "FAIL", None: "-"}.get(check.get("ok"), "?")
    expected, seen = _uuids(check.get("expected")), _uuids(check.get("seen"))
    line = f"  {status:<5} {check.get('name')}: expected {expected}; seen {seen}"
    if check.get("ok") is False and check.get("differs"):
        line += f" ({check['differs']})"
    elif check.get("ok") is False and check.get("rc") not in (0, None):
        line += f" (container exit code {check['rc']})"
    return line


def summary(verify: dict[str, Any]) -> str:
    """``Verified: ...`` naming the mode and the paths its checks proved, the GPUs, the driver and the image."""
    nvml = verify.get("nvml") or {}
    gpus = nvml.get("gpus") or []
    names = sorted({str(g.get("name")) for g in gpus if g.get("name")})
    what = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" + (f" ({', '.join(names)})" if names else "")
    paths = list(dict.fromkeys(str(c["path"]) for c in verify.get("checks") or [] if c.get("path")))
    how = f" ({', '.join(paths)})" if paths else ""
    return (
        f"Verified: containers see the GPU through {verify.get('mode')} mode{how}: {what}, driver "
        f"{nvml.get('driver_version')}, image {verify.get('image')}."
    )


def run(args: argparse.Namespace) -> int:
    require_root("verify")
    values, _source = settings.load(args.config)
    with Progress("verify", None, enabled=not args.json) as prog:
        result = engine.run_playbook(f"{FQCN}.verify", values, check=False, progress=prog)
    err = result.error()
    verify = result.results.get("verify")
    if err is None and (verify is None or verify.get("verified") is not True):
        err = GpuInstallError(
            codes.INTERNAL, "the verify task did not run, or ended without a verdict.", log=str(result.log)
        )
    if args.json:
        extra: dict[str, Any] = {"verified": err is None, "verify": verify}
        if err is not None:
            extra["error"] = err.record()
        emit_json(result_json(result, extra))
        return err.code if err is not None else 0
    con = console()
    for check in (verify or {}).get("checks") or []:
        con.print(check_line(check), markup=False)
    if err is None:
        con.print(summary(verify or {}), markup=False)
        return 0
    from ..output import emit_error

    emit_error(err, False)
    return err.code
