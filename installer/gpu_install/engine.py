"""The run engine: the collection's playbooks run locally through ansible-runner.

One playbook process per run; its event stream feeds the progress display and
the result. Failures keep their class: a failing task's ``gpu_install_error``
gives the exit code, anything else is exit 1 with the log's path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import signals
from .collection import collections_path
from .errors import GpuInstallError, codes
from .settings import state_dir

KEEP_RUNS = 20

# Settings that make a local converge cheap: no fact gathering, no retry files,
# no warnings about the implicit localhost inventory.
ANSIBLE_ENV = {
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    "ANSIBLE_GATHERING": "explicit",
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_FORCE_COLOR": "False",
    "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
    "ANSIBLE_SYSTEM_WARNINGS": "False",
    "ANSIBLE_INJECT_FACT_VARS": "False",
}

# Modules whose whole result a subcommand reports (gpu-install verify, remove): action (FQCN) -> RunResult.results
# key, or, for a module run in steps, the step (its ``step`` option, returned as ``step``) -> key.
RESULT_ACTIONS: dict[str, str | dict[str, str]] = {
    "gpu_install.nvidia.gpu_verify": "verify",
    "gpu_install.nvidia.removal": {"plan": "removal_plan", "take_back": "removal"},
}
# The site playbook's first task: whether the host is as the last successful full run left it.
FAST_PATH_ACTION = "gpu_install.nvidia.converged"


@dataclass
class Change:
    host: str
    role: str
    task: str
    action: str
    handler: bool = False
    diff: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "role": self.role, "task": self.task, "action": self.action}
        if self.handler:
            out["handler"] = True
        if self.diff:
            out["diff"] = self.diff
        return out


@dataclass
class RunResult:
    check: bool
    run_id: str
    artifacts: Path
    log: Path
    changes: list[Change] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    blockers: list[dict[str, Any]] = field(default_factory=list)
    handler_tasks: set[str] = field(default_factory=set)
    tasks_started: int = 0
    current_task: str = ""  # "role: task" of the task started last and not finished yet ("" between tasks)
    reboot_required: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    # The fast path's check (gpu_install.nvidia.converged): converged, drift, receipt (when it was written).
    fast_path: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # RESULT_ACTIONS' results, ok or failed
    status: str = "unknown"
    rc: int = 0
    elapsed: float = 0.0

    @property
    def changed(self) -> int:
        return len(self.changes)

    def error(self) -> GpuInstallError | None:
        """The class of this run's failure, from the first failing task's gpu_install_error."""
        signum = signals.received()
        if signum is not None:
            return GpuInstallError(128 + signum, self._interrupted_reason(signum), log=str(self.log))
        if self.failures:
            # A classified failure wins over an earlier unclassified one.
            first = next(
                (f for f in self.failures if codes.classified(f["error"]["gpu_install_error"])), self.failures[0]
            )
            record = codes.task_failure(first.get("task"), first["error"])
            return GpuInstallError(record["code"], record["reason"], log=str(self.log))
        if self.check and self.blockers:  # a real run stops at its first failure instead
            first = self.blockers[0]
            return GpuInstallError(int(first["code"]), str(first["reason"]), log=str(self.log))
        if self.status not in ("successful",) or self.rc != 0:
            return GpuInstallError(
                codes.INTERNAL, f"the playbook ended with status {self.status} (rc {self.rc})", log=str(self.log)
            )
        return None

    def _interrupted_reason(self, signum: int) -> str:
        import signal as _signal

        done = "; ".join(f"{c.role}: {c.task}" if c.role else c.task for c in self.changes) or "nothing"
        where = f"in task '{self.current_task}' " if self.current_task else "between tasks "
        return (
            f"interrupted by {_signal.Signals(signum).name} {where}(task {self.tasks_started}), which was stopped; "
            f"changed so far ({self.changed}): {done}; the remaining steps were not run: run apply again to finish."
        )


ProgressFn = Callable[[dict[str, Any]], None]


def _bin_dir() -> str:
    # The interpreter running the CLI has its Ansible beside it (a venv that is
    # not on PATH, reached through a symlink, still works): do not resolve links.
    return str(Path(sys.executable).parent)


def _prune(runs_dir: Path) -> None:
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def run_playbook(
    playbook: str,
    settings: dict[str, Any],
    *,
    check: bool,
    progress: ProgressFn | None = None,
) -> RunResult:
    import ansible_runner

    base = state_dir()
    runs_dir = base / "runs"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GpuInstallError(
            codes.HOST_ERROR, f"cannot create the log directory {runs_dir} ({exc.strerror})."
        ) from None
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + ("plan" if check else "apply") + "-" + uuid.uuid4().hex[:6]
    pdd = runs_dir / run_id
    (pdd / "env").mkdir(parents=True)
    # Extra vars go in as a file, never as k=v strings.
    (pdd / "env" / "extravars").write_text(json.dumps(settings))
    os.chmod(pdd / "env" / "extravars", 0o600)
    _prune(runs_dir)

    env = dict(ANSIBLE_ENV)
    env["PATH"] = _bin_dir() + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_path())
    env["ANSIBLE_LOCAL_TEMP"] = str(pdd / "tmp")
    # Modules run locally: their temp files go with the run, not under a home directory (a system
    # user running plan may have none).
    env["ANSIBLE_REMOTE_TMP"] = str(pdd / "remote-tmp")
    env["ANSIBLE_HOME"] = str(base / "ansible")
    inventory = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    # gpu-install is installed on this host: boot-time units may run it (CDI refresh).
                    "__gpu_install_cli": [sys.executable, "-m", "gpu_install"],
                }
            }
        }
    }
    result = RunResult(
        check=check, run_id=run_id, artifacts=pdd / "artifacts" / run_id, log=pdd / "artifacts" / run_id / "stdout"
    )
    started = time.monotonic()

    def on_event(event: dict[str, Any]) -> bool:
        _collect(result, event, check)
        if progress is not None:
            progress(event)
        return True

    # The site playbook's fleet_report tasks (the version check, the record and the fleet report) serve a
    # fleet run; this run reports through its own events.
    cmdline = ("--check --diff" if check else "--diff") + " --skip-tags fleet_report"
    with signals.deferred():
        runner = ansible_runner.run(
            private_data_dir=str(pdd),
            ident=run_id,
            playbook=playbook,
            inventory=inventory,
            envvars=env,
            cmdline=cmdline,
            quiet=True,
            event_handler=on_event,
            cancel_callback=lambda: signals.received() is not None,
            settings={"suppress_ansible_output": True, "pexpect_timeout": 5},
        )
    result.elapsed = time.monotonic() - started
    result.status = str(runner.status)
    result.rc = int(runner.rc if runner.rc is not None else 1)
    return result


def _result_name(action: str, res: dict[str, Any]) -> str | None:
    """The RunResult.results key of this task's result, if a subcommand reports it (RESULT_ACTIONS)."""
    name = RESULT_ACTIONS.get(action)
    if not isinstance(name, dict):
        return name
    # The step the module returns; a failure it did not return from names it in its invocation only.
    step = res.get("step") or ((res.get("invocation") or {}).get("module_args") or {}).get("step")
    return name.get(str(step)) if step else None


def _collect(result: RunResult, event: dict[str, Any], check: bool) -> None:
    kind = event.get("event")
    data = event.get("event_data") or {}
    if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
        result.tasks_started += 1
        role, task = data.get("role"), str(data.get("task") or data.get("name") or "").strip()
        result.current_task = f"{role}: {task}" if role else task
        # ansible-runner reports a handler's start as a task start with is_conditional.
        if kind == "playbook_on_handler_task_start" or data.get("is_conditional"):
            result.handler_tasks.add(str(data.get("task_uuid")))
        return
    if kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
        result.current_task = ""
    raw = data.get("res")
    res: dict[str, Any] = raw if isinstance(raw, dict) else {}
    action = str(data.get("resolved_action") or data.get("task_action") or "")
    name = _result_name(action, res)
    if name is not None and kind in ("runner_on_ok", "runner_on_failed"):
        result.results[name] = {
            k: v for k, v in res.items() if not k.startswith("_") and k not in ("invocation", "exception")
        }
    if kind == "runner_on_ok":
        if action == FAST_PATH_ACTION and "drift" in res:
            result.fast_path = {
                "converged": bool(res.get("converged")),
                "drift": list(res.get("drift") or []),
                "receipt": res.get("written"),
            }
        facts = res.get("ansible_facts") or {}
        if isinstance(facts.get("gpu_install"), dict):
            result.facts = facts["gpu_install"]
        blocker = res.get("gpu_install_blocker")
        known = {(b["host"], b["reason"]) for b in result.blockers}
        if (
            isinstance(blocker, dict)
            and blocker.get("code") in codes.EXIT_CODES
            and (data.get("host"), blocker.get("reason")) not in known
        ):
            result.blockers.append(
                {"host": data.get("host"), "code": int(blocker["code"]), "reason": blocker.get("reason")}
            )
        if res.get("reboot_required") is True or facts.get("gpu_install_reboot_required") is True:
            result.reboot_required = True
        if res.get("changed"):
            result.changes.append(
                Change(
                    host=str(data.get("host", "")),
                    role=str(data.get("role") or ""),
                    task=str(data.get("task") or ""),
                    action=str(data.get("task_action") or ""),
                    handler=str(data.get("task_uuid")) in result.handler_tasks,
                    diff=res.get("diff"),
                )
            )
    elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
        result.failures.append(
            {
                "host": data.get("host"),
                "role": data.get("role"),
                "task": data.get("task"),
                "unreachable": kind == "runner_on_unreachable",
                # What errors.task_failure reads to classify it (the same as the fleet report reads).
                "error": {k: res.get(k) for k in ("gpu_install_error", "msg", "stderr", "reason")},
            }
        )
    elif kind == "runner_item_on_ok" and res.get("changed"):
        pass  # counted by the task's own runner_on_ok
