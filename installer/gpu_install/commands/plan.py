"""gpu-install plan: the site playbook in check+diff mode; changes nothing."""

from __future__ import annotations

import argparse

from .. import engine
from ..collection import FQCN
from ..output import emit_json
from ..progress import Progress, expected_tasks
from ._common import print_changes, print_engines, print_fast_path, result_json, run_settings


def run(args: argparse.Namespace) -> int:
    values = run_settings(args)
    playbook = f"{FQCN}.site"
    with Progress("plan", expected_tasks(playbook), enabled=not args.json) as prog:
        result = engine.run_playbook(playbook, values, check=True, progress=prog)
    err = result.error()
    if args.json:
        emit_json(result_json(result))
    else:
        from ..output import console
        from ..report import host_line

        con = console()
        con.print(host_line(result.facts), markup=False)
        print_fast_path(result)
        print_engines(result, "Plan:")
        print_changes(result, "Plan")
        if result.blockers and not result.failures:
            con.print("Apply would stop before changing anything:")
            for blocker in result.blockers:
                con.print(f"  - {blocker['reason']} (exit {blocker['code']})", markup=False)
        elif err is not None:
            from ..output import emit_error

            emit_error(err, False)
    return err.code if err is not None else 0
