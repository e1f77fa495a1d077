# Copyright: gpu-install contributors
# Apache License 2.0
"""Action gpu_install.nvidia.gpu_facts: the module, given the host's gpu_install_container_engines.

Every role detects the host again after it changed it (Docker installed, the driver loaded); each of those
calls must resolve the engines from the same setting, or a later detection would put ``auto``'s answer in
place of the user's list. A task that does not give ``container_engines`` gets the value of the variable
``gpu_install_container_engines`` (templated; ``auto`` when it is not set). The module does the rest.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase

SETTING = "gpu_install_container_engines"


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("container_engines") is None:
            value = task_vars.get(SETTING, "auto")
            args["container_engines"] = self._templar.template(value) if value is not None else "auto"
        result.update(
            self._execute_module(module_name="gpu_install.nvidia.gpu_facts", module_args=args, task_vars=task_vars)
        )
        return result
