# Copyright: gpu-install contributors
# Apache License 2.0
"""Action gpu_install.nvidia.fleet_record: classify and return one host's outcome for the fleet report.

Runs on the controller (no connection to the host). The site playbook registers its result as
``__gpu_install_outcome`` at the end of a host's run, and in the rescue of a failed one, where
``fail_host: true`` then fails the host with the reason so that Ansible counts it. The remove playbook
(gpu_install.nvidia.remove) records a host whose removal went through with ``removed: true`` and ``removal``
(the removal module's take-back result): its row's status is ``removed``. What the record says is decided in
module_utils/fleet_report.py.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_install.nvidia.plugins.module_utils import fleet_report


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(
        (
            "facts",
            "verify_result",
            "image_build",
            "reboot_required",
            "failed_task",
            "failed_result",
            "unreachable",
            "fail_host",
            "removed",
            "removal",
        )
    )

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict:
        result = super().run(tmp, task_vars)
        args = self._task.args
        failed = bool(args.get("fail_host", False))
        record = fleet_report.host_record(
            facts=args.get("facts"),
            verify_result=args.get("verify_result"),
            image_build=bool(args.get("image_build", False)),
            reboot_required=bool(args.get("reboot_required", False)),
            failed_task=args.get("failed_task") if failed else None,
            failed_result=(args.get("failed_result") or {}) if failed else None,
            unreachable=args.get("unreachable"),
            removed=boolean(args.get("removed", False), strict=False) and not failed,
            removal=args.get("removal"),
        )
        result.update(changed=False, record=record)
        if failed:
            # Marks this failure as the rescue's re-raise of one already reported, not a second failure.
            result.update(failed=True, msg=record["reason"], gpu_install_rescue=True)
        return result
