"""Shared steps of the subcommands that run playbooks."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..engine import RunResult
from ..errors import GpuInstallError, codes

LOCK_PATH = Path("/run/gpu-install.lock")


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise GpuInstallError(
            codes.HOST_ERROR, f"gpu-install {command} changes the host and must run as root: run it with sudo."
        )


@contextmanager
def run_lock() -> Iterator[None]:
    """One gpu-install run at a time on a host; a second is refused with the first one's PID."""
    path = LOCK_PATH if LOCK_PATH.parent.is_dir() else Path("/var/lock/gpu-install.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GpuInstallError(codes.HOST_ERROR, f"cannot open the run lock {path} ({exc.strerror}).") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise GpuInstallError(
                codes.BUSY,
                f"another gpu-install run (PID {holder}) is changing this host: wait for it to finish, then run again.",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def result_json(result: RunResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    failed = len(result.failures)
    out: dict[str, Any] = {
        "run_id": result.run_id,
        "check": result.check,
        "changed": result.changed,
        "failed": failed,
        "reboot_required": result.reboot_required,
        "changes": [c.as_dict() for c in result.changes],
        "blockers": result.blockers,
        "host": result.facts,
        "log": str(result.log),
        "artifacts": str(result.artifacts),
        "elapsed_s": round(result.elapsed, 3),
    }
    if result.fast_path:
        out["fast_path"] = result.fast_path
    if result.facts.get("engines"):
        from ..report import engine_changes

        out["engines"] = [
            {"name": name, "summary": summary, "changes": len(changes)}
            for name, summary, changes in engine_changes(result.facts, result.changes)
        ]
    err = result.error()
    if err is not None:
        out["error"] = {"code": err.code, "reason": err.reason}
    if extra:
        out.update(extra)
    return out


def run_settings(args: Any) -> dict[str, Any]:
    """The settings file's values, with what the command line overrides (--full: no fast path)."""
    from .. import settings

    values, _source = settings.load(args.config)
    if getattr(args, "full", False):
        values["gpu_install_fast_path"] = False
    return values


def print_fast_path(result: RunResult) -> None:
    """One line on whether the roles ran: skipped on a converged host (and how to run them), else why they ran."""
    from ..output import console

    fast = result.fast_path
    if not fast:
        return
    if fast["converged"]:
        line = (
            f"Converged: nothing apply depends on changed since the full run of {fast['receipt']}; "
            "the roles' checks were skipped (--full runs them)."
        )
    else:
        line = "Full run: " + "; ".join(fast["drift"]) + "."
    console().print(line, markup=False)


def print_engines(result: RunResult, heading: str) -> None:
    """The engines the run configures, each with what it found and how many of the run's changes are its own."""
    from ..output import console
    from ..report import engine_changes

    rows = engine_changes(result.facts, result.changes) if result.facts else []
    if not rows:
        return
    con = console()
    con.print(f"{heading} engines: {', '.join(name for name, _, _ in rows)}", markup=False)
    for name, summary, changes in rows:
        what = f"{len(changes)} change(s)" if changes else "no change"
        con.print(f"  - {name}: {summary}; {what}", markup=False)


def print_changes(result: RunResult, heading: str) -> None:
    import difflib

    from ..output import console

    con = console()
    if not result.changes:
        con.print(f"{heading}: nothing to change.")
        return
    con.print(f"{heading}: {result.changed} change(s)")
    for i, change in enumerate(result.changes, 1):
        where = f"{change.role}: " if change.role else ""
        con.print(f"  {i}. {where}{change.task}", markup=False)
        diffs = change.diff if isinstance(change.diff, list) else [change.diff] if change.diff else []
        for d in diffs:
            if not isinstance(d, dict):
                continue
            if "prepared" in d and d["prepared"]:
                con.print(str(d["prepared"]), markup=False)
                continue
            before, after = d.get("before"), d.get("after")
            if isinstance(before, str) and isinstance(after, str):
                lines = difflib.unified_diff(
                    before.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    fromfile=str(d.get("before_header") or "before"),
                    tofile=str(d.get("after_header") or "after"),
                )
                con.print("".join("     " + ln for ln in lines).rstrip(), markup=False)
