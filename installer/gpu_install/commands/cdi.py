"""gpu-install cdi: write the CDI spec of this host's NVIDIA GPUs (CDI mode), and their /dev/char links.

The oneshot unit gpu-install-cdi-refresh.service runs it at boot, so that the spec follows a driver upgrade
or a GPU swap; `apply` writes the same bytes through the cdi_spec module (one generator, in module_utils).
"""

from __future__ import annotations

import argparse
import json
import os

from ..collection import module_utils
from ..errors import GpuInstallError, codes
from ..output import console, emit_json


def run(args: argparse.Namespace) -> int:
    cdi = module_utils("cdi")
    devchar = module_utils("devchar")
    path = args.output or cdi.DEFAULT_PATH
    capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    try:
        spec, found = cdi.generate(capabilities=capabilities)
    except cdi.CdiError as exc:
        raise GpuInstallError(exc.code, exc.reason) from None
    after = cdi.dumps(spec)
    before = cdi.read_current(path)
    stale: list[str] = []
    if before is not None:
        try:
            stale = cdi.stale_paths(json.loads(before.decode("utf-8")))
        except ValueError:
            stale = []
    changed = before != after
    links = devchar.missing()
    if not args.check:
        try:
            if changed:
                os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
                cdi.write(path, after)
            devchar.ensure()
        except OSError as exc:
            raise GpuInstallError(codes.HOST_ERROR, f"cannot write {path} or the /dev/char links ({exc}).") from None
        except cdi.CdiError as exc:
            raise GpuInstallError(exc.code, exc.reason) from None
    devices = [f"{spec['kind']}={d['name']}" for d in spec["devices"]]
    if args.json:
        emit_json(
            {
                "path": path,
                "changed": changed,
                "check": bool(args.check),
                "devices": devices,
                "stale": stale,
                "links": [f"{link} -> {target}" for link, target in links],
                "discovery": found.as_dict(),
            }
        )
    elif not args.quiet or (changed and args.check):
        verb = ("would be rewritten" if args.check else "rewritten") if changed else "current"
        console().print(f"{path}: {verb}; devices {', '.join(devices)}", markup=False)
        if stale:
            console().print(f"  the previous spec named paths that are gone: {', '.join(stale)}", markup=False)
        for link, target in links:
            console().print(f"  {'would link' if args.check else 'linked'} {link} -> {target}", markup=False)
    return codes.VERIFY_FAILED if (args.check and changed) else 0
