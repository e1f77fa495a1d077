# Copyright: gpu-install contributors
# Apache License 2.0
"""Action gpu_install.nvidia.fleet_report: write report.json and report.html on the controller.

Reads each host's record (``__gpu_install_outcome``, registered by gpu_install.nvidia.fleet_record) from
hostvars, and the number of tasks and handlers that changed on each host from the running playbook's
statistics: the worker running this action is forked from ansible-playbook's main process, so the
statistics of every earlier task (the numbers PLAY RECAP prints) are in its memory. When they cannot be
found, ``changed`` is null and the action warns. The rows and pages are made in module_utils/fleet_report.py.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_install.nvidia.plugins.module_utils import fileio, fleet_report

RECORD_VAR = "__gpu_install_outcome"


def _running_playbook() -> Any:
    """The TaskQueueManager of the ansible-playbook process this worker was forked from, or None."""
    try:
        from ansible.executor.task_queue_manager import TaskQueueManager
    except ImportError:
        return None
    found = [obj for obj in gc.get_referrers(TaskQueueManager) if isinstance(obj, TaskQueueManager)]
    if len(found) != 1:
        return None
    tqm = found[0]
    stats = getattr(tqm, "_stats", None)
    if not isinstance(getattr(stats, "changed", None), dict):
        return None
    return tqm


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fileio.write_atomic(path, text.encode("utf-8"), mode=0o644, uid=os.geteuid(), gid=os.getegid())
    return path


def _plain(value: Any) -> Any:
    """Plain Python data (Ansible may hand out its own str and dict subclasses)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("hosts", "dest"))

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        if self._task.check_mode:
            result.update(changed=False, skipped=True, msg="check mode: the fleet report describes real runs only.")
            return result
        hosts = self._task.args.get("hosts") or []
        if not isinstance(hosts, list):
            raise AnsibleActionFail("hosts must be a list of inventory host names.")
        dest = os.environ.get("GPU_INSTALL_REPORT_DIR") or str(self._task.args.get("dest") or "./gpu-install-report")

        tqm = _running_playbook()
        stats = tqm._stats if tqm is not None else None
        unreachable = set(getattr(tqm, "_unreachable_hosts", {}) or {}) if tqm is not None else set()
        hostvars = task_vars.get("hostvars") or {}
        rows = []
        for host in (str(h) for h in hosts):
            changed = int(stats.changed.get(host, 0)) if stats is not None else None
            outcome = hostvars[host].get(RECORD_VAR) if host in hostvars else None
            record = _plain(outcome.get("record")) if isinstance(outcome, dict) else None
            if isinstance(record, dict):
                rows.append(fleet_report.host_row(host, record, changed))
            elif host in unreachable:
                rows.append(fleet_report.unreachable_row(host, changed))
            else:
                rows.append(fleet_report.not_run_row(host))
        data = fleet_report.report(rows)
        note = None
        if stats is None:
            note = (
                "The run's statistics were not found in the controller's memory: the changed counts are null "
                "(see PLAY RECAP), and a host that stopped answering cannot be told from one not run."
            )
            result.setdefault("warnings", []).append(note)
        try:
            os.makedirs(dest, exist_ok=True)
            json_path = _write(dest, "report.json", fleet_report.render_json(data))
            written = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            html_path = _write(dest, "report.html", fleet_report.render_html(data, note=note, written=written))
        except OSError as exc:
            raise AnsibleActionFail(
                f"cannot write the fleet report into {dest} ({exc.strerror or exc}): set GPU_INSTALL_REPORT_DIR or "
                "gpu_install_report_dir to a writable directory."
            ) from None
        tally = fleet_report.counts(data)
        summary = ", ".join(f"{tally[s]} {s}" for s in fleet_report.STATUSES)
        result.update(
            changed=False,
            report=json_path,
            html=html_path,
            counts=tally,
            msg=f"fleet report: {summary} -> {json_path}, {html_path}",
        )
        return result
