"""gpu-install verify: prove that a container sees the GPU."""

from __future__ import annotations

import argparse

from .. import engine, settings
from ..collection import FQCN
from ..output import console, emit_json
from ..progress import Progress
from ._common import require_root, result_json


def run(args: argparse.Namespace) -> int:
    require_root("verify")
    values, _source = settings.load(args.config)
    with Progress("verify", None, enabled=not args.json) as prog:
        result = engine.run_playbook(f"{FQCN}.verify", values, check=False, progress=prog)
    err = result.error()
    if args.json:
        emit_json(result_json(result, {"verified": err is None}))
    elif err is None:
        console().print("Verified: containers see the GPU.")
    else:
        from ..output import emit_error

        emit_error(err, False)
    return err.code if err is not None else 0
