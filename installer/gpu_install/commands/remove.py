"""gpu-install remove: show what gpu-install would take back, ask, take it back with live progress, summarise.

One implementation with the fleet's door: the collection's playbook ``remove.yml`` (gpu_install.nvidia.remove)
runs here through ansible-runner as apply runs ``site.yml``. Its first step (the removal module with
``step: plan``) lists what would be taken back; its last (``step: take_back``) what was. The engine keeps them
as ``RunResult.results["removal_plan"]`` and ``results["removal"]``. Removal is never a setting: ``--driver``
reaches the playbook as the extra var ``gpu_install_remove_driver``, which no settings file can carry. The fast
path plays no part (the remove playbook has none).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import engine
from ..collection import FQCN, module_utils
from ..engine import RunResult
from ..errors import GpuInstallError, codes
from ..output import console, emit_json
from ..progress import Progress, expected_tasks, remember_tasks
from ._common import require_root, result_json, run_lock, run_settings

PLAYBOOK = f"{FQCN}.remove"
NOTHING = "Nothing to remove: gpu-install changed nothing on this host."
# The fleet report's sentence for the same outcome (one sentence, as apply's exit 9 shares errors.REBOOT_REASON).
DRIVER_REBOOT_REASON: str = module_utils("fleet_report").REMOVED_REBOOT_REASON


def render_item(item: dict[str, Any]) -> str:
    """One plan item as a line: "remove file /etc/cdi/gpu-install-nvidia.json (detail)"."""
    detail = item.get("detail")
    line = f"{item.get('action')} {item.get('kind')} {item.get('target')}"
    return line + (f" ({detail})" if detail else "")


def render_kept(entry: dict[str, Any]) -> str:
    """One thing that stays: "docker.io: Docker is never removed"."""
    why = entry.get("why")
    return f"{entry.get('target')}" + (f": {why}" if why else "")


def _items(result: RunResult, key: str) -> list[dict[str, Any]]:
    items = (result.results.get(key) or {}).get("items") or []
    return [i for i in items if isinstance(i, dict)]


def plan_items(result: RunResult) -> list[dict[str, Any]]:
    """What the run's plan step would take back, in the order the module gives."""
    return _items(result, "removal_plan")


def done_items(result: RunResult) -> list[dict[str, Any]]:
    """What the run's take-back step took back (empty in check mode and before that step)."""
    return [] if result.check else _items(result, "removal")


def kept(result: RunResult) -> list[dict[str, Any]]:
    """What stays and why: the take-back step's account when it ran, else the plan's."""
    for key in ("removal", "removal_plan"):
        res = result.results.get(key)
        if res and not (key == "removal" and result.check):
            return [k for k in res.get("kept") or [] if isinstance(k, dict)]
    return []


def blocking(result: RunResult) -> list[dict[str, Any]]:
    res = result.results.get("removal_plan") or {}
    return [c for c in res.get("blocking_containers") or [] if isinstance(c, dict)]


def plan_lines(result: RunResult) -> list[str]:
    """The plan as printed: each item, then what stays, then the containers that block removal."""
    items = plan_items(result)
    lines = []
    if items:
        lines.append(f"Plan: {len(items)} item(s) to take back")
    elif not (result.results.get("removal_plan") or {}).get("failed"):  # a refused plan lists nothing either
        lines.append(NOTHING)
    lines += [f"  - {render_item(i)}" for i in items]
    lines += stays_lines(kept(result))
    containers = blocking(result)
    if containers:
        lines.append("Blocking (running under the nvidia runtime; stop them first):")
        lines += [
            f"  - {c.get('name') or c.get('id')} ({c.get('image')}, runtime {c.get('runtime')})" for c in containers
        ]
    return lines


def stays_lines(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    return ["Stays:"] + [f"  - {render_kept(k)}" for k in entries]


def summary_lines(result: RunResult) -> list[str]:
    """After the real run: what was taken back, what stays, the reboot, time and log."""
    done = done_items(result)
    lines = [f"Removed: {len(done)} item(s)"]
    lines += [f"  - {render_item(i)}" for i in done]
    lines += stays_lines(kept(result))
    left = [i for i in (result.results.get("removal") or {}).get("left") or [] if isinstance(i, dict)]
    if left:
        lines.append("Still there (run remove again):")
        lines += [f"  - {render_item(i)}" for i in left]
    if result.reboot_required:
        lines.append("Reboot to finish: " + DRIVER_REBOOT_REASON)
    lines.append(
        f"Summary: {len(done)} removed, {len(result.failures)} failed, "
        f"reboot required: {'yes' if result.reboot_required else 'no'}, {result.elapsed:.1f}s. Log: {result.log}"
    )
    return lines


def removal_json(result: RunResult, plan: RunResult | None = None) -> dict[str, Any]:
    """``{"removal": {"plan", "done", "kept"}}``; the plan is the real run's, else the check run's (``plan``)."""
    source = result if plan is None or result.results.get("removal_plan") else plan
    return {"removal": {"plan": plan_items(source), "done": done_items(result), "kept": kept(result)}}


def _print(lines: list[str]) -> None:
    con = console()
    for line in lines:
        con.print(line, markup=False)


def _needs_answer(args: argparse.Namespace) -> bool:
    """A real removal asks first, unless --yes; where it cannot ask (--json, no terminal) that is a usage error."""
    if args.check or args.yes:
        return False
    if args.json or not sys.stdin.isatty():
        raise GpuInstallError(codes.USAGE, "remove needs --yes when it cannot ask (no terminal, or --json).")
    return True


def run(args: argparse.Namespace) -> int:
    ask = _needs_answer(args)
    require_root("remove")
    values = run_settings(args)
    values["gpu_install_remove_driver"] = bool(args.driver)
    plan: RunResult | None = None
    with run_lock():
        if args.check or ask:
            with Progress("plan", expected_tasks(PLAYBOOK), enabled=not args.json) as prog:
                plan = engine.run_playbook(PLAYBOOK, values, check=True, progress=prog)
            err = _interrupted_removal(plan.error())
            if args.check:
                return _finish_check(args, plan, err)
            _print(plan_lines(plan))
            if err is not None:
                raise err
            if not plan_items(plan):
                return 0
            answer = input("Remove these? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                console().print("Nothing was changed.")
                return 0
        with Progress("remove", expected_tasks(PLAYBOOK), enabled=not args.json) as prog:
            result = engine.run_playbook(PLAYBOOK, values, check=False, progress=prog)
    err = _interrupted_removal(result.error())
    if err is None:
        remember_tasks(PLAYBOOK, result.tasks_started)
        if result.reboot_required:
            err = GpuInstallError(codes.REBOOT_REQUIRED, DRIVER_REBOOT_REASON, log=str(result.log))
    if args.json:
        out = result_json(result, {"error": err.record()} if err else None)
        out.update(removal_json(result, plan))
        emit_json(out)
    elif err is None and not plan_items(result) and not done_items(result):
        _print([NOTHING])
    else:
        if err is not None and result.results.get("removal_plan") and not result.results.get("removal"):
            _print(plan_lines(result))  # stopped before taking anything back: what it would have
        _print(summary_lines(result))
        if err is not None and err.code != codes.REBOOT_REQUIRED:
            from ..output import emit_error

            emit_error(err, False)
    return err.code if err is not None else 0


def _interrupted_removal(err: GpuInstallError | None) -> GpuInstallError | None:
    """An interrupted removal is finished by running remove again: apply would put everything back."""
    if err is None or err.code not in (codes.INTERRUPTED_SIGINT, codes.INTERRUPTED_SIGTERM):
        return err
    reason = err.reason.replace("run apply again to finish.", "run remove again to finish.")
    return GpuInstallError(err.code, reason, log=err.log)


def _finish_check(args: argparse.Namespace, plan: RunResult, err: GpuInstallError | None) -> int:
    if args.json:
        out = result_json(plan, {"error": err.record()} if err else None)
        out.update(removal_json(plan))
        emit_json(out)
        return err.code if err is not None else 0
    _print(plan_lines(plan))
    if err is not None:
        raise err
    return 0
