"""gpu-install apply: show the plan, ask, converge with live progress, summarise."""

from __future__ import annotations

import argparse
import sys

from .. import engine
from ..collection import FQCN
from ..errors import GpuInstallError, codes
from ..output import console, emit_json
from ..progress import Progress, expected_tasks, remember_tasks
from ._common import print_changes, print_engines, print_fast_path, require_root, result_json, run_lock, run_settings


def run(args: argparse.Namespace) -> int:
    require_root("apply")
    values = run_settings(args)
    playbook = f"{FQCN}.site"
    with run_lock():
        if not args.yes:
            if args.json or not sys.stdin.isatty():
                raise GpuInstallError(codes.USAGE, "apply needs --yes when it cannot ask (no terminal, or --json).")
            with Progress("plan", expected_tasks(playbook)) as prog:
                plan = engine.run_playbook(playbook, values, check=True, progress=prog)
            err = plan.error()
            print_fast_path(plan)
            print_engines(plan, "Plan:")
            print_changes(plan, "Plan")
            if err is not None:
                raise err
            if not plan.changes:
                console().print("Nothing to change.")
            answer = input("Apply these changes? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                console().print("Nothing was changed.")
                return 0
        with Progress("apply", expected_tasks(playbook), enabled=not args.json) as prog:
            result = engine.run_playbook(playbook, values, check=False, progress=prog)
    err = result.error()
    if err is None:
        remember_tasks(playbook, result.tasks_started)
        image_build = bool(values.get("gpu_install_image_build"))
        if result.reboot_required and not image_build:
            err = GpuInstallError(codes.REBOOT_REQUIRED, codes.REBOOT_REASON, log=str(result.log))
    if args.json:
        emit_json(result_json(result, {"error": err.record()} if err else None))
    else:
        print_fast_path(result)
        print_engines(result, "Configured")
        print_changes(result, "Applied")
        con = console()
        con.print(
            f"Summary: {result.changed} changed, {len(result.failures)} failed, "
            f"reboot required: {'yes' if result.reboot_required else 'no'}, {result.elapsed:.1f}s. Log: {result.log}",
            markup=False,
        )
        if err is not None:
            from ..output import emit_error

            emit_error(err, False)
    return err.code if err is not None else 0
