# Copyright: gpu-install contributors
# Apache License 2.0
"""Action gpu_install.nvidia.converged: the fast path's key, computed on the controller, then the module.

The key names what a full run's outcome depends on besides the host itself: the collection's own content
(every role, plugin and playbook file) and the value of every public setting that shapes the host (the
options of the roles' meta/argument_specs.yml, as this host's variables give them, templated; one that is
not set counts as its role default, which the collection's content already covers). Settings that only
steer the run (batches, failure percentage, the report's directory, lock and readiness timeouts, drain
commands, what verify runs, the fast path itself) are left out: changing them does not make a converged
host unconverged. With O(state=check) the key is computed here; O(state=write) is given the check's key,
so that what the run's roles added to the variables cannot change it.

On a host reached through the local connection without become (the gpu-install CLI's run on its own host),
the controller is the host: the same module_utils code runs in this process instead of as a module, which
saves a module run (the fast path's largest cost). Elsewhere the module runs on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_install.nvidia.plugins.module_utils import argspecs, converged

# Settings that steer a run without shaping the host.
RUN_ONLY = frozenset(
    (
        "gpu_install_serial",
        "gpu_install_max_fail_percentage",
        "gpu_install_report_dir",
        "gpu_install_lock_timeout",
        "gpu_install_drain_command",
        "gpu_install_undrain_command",
        "gpu_install_drain_delegate_to",
        "gpu_install_fast_path",
        "docker_ready_timeout",
        "gpu_verify_image",
        "gpu_verify_pull",
        "gpu_verify_timeout",
    )
)
CONTENT_DIRS = ("meta", "playbooks", "plugins", "roles")


def collection_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def content_digest(root: str) -> str:
    """sha256 over the relative path and bytes of every file of the collection that runs."""
    digest = hashlib.sha256()
    for top in CONTENT_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, "rb") as fh:
                    data = fh.read()
                digest.update(b"%s\0%d\0" % (os.path.relpath(path, root).encode(), len(data)))
                digest.update(data)
    return digest.hexdigest()


def setting_names(root: str) -> list[str]:
    """Every public setting of the collection's roles that shapes the host."""
    names: set[str] = set()
    for options in argspecs.role_options(os.path.join(root, "roles")).values():
        names.update(options)
    return sorted(names - RUN_ONLY)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("state", "key", "enabled", "path", "facts"))

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        if args.get("state", "check") == "check":
            args["key"] = self.key(task_vars)
        elif not args.get("key"):
            result.update(failed=True, msg="converged with state=write needs the key its check returned.")
            return result
        if self._in_process():
            result.update(self._run_here(args))
        else:
            result.update(self._execute_module(module_name="gpu_install.nvidia.converged", module_args=args,
                                               task_vars=task_vars))  # fmt: skip
        return result

    def _in_process(self) -> bool:
        return self._connection.transport in ("local", "ansible.builtin.local") and not self._play_context.become

    def _run_here(self, args: dict) -> dict:
        return converged.run(
            str(args.get("state", "check")),
            args["key"],
            boolean(args.get("enabled", True)),
            args.get("path") or converged.RECEIPT_PATH,
            bool(self._play_context.check_mode),
            dict(args.get("facts") or {}),
        )

    def key(self, task_vars: dict) -> str:
        root = collection_root()
        settings = {}
        for name in setting_names(root):
            if name in task_vars:
                settings[name] = self._templar.template(task_vars[name])
        blob = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256((content_digest(root) + "\n" + blob).encode()).hexdigest()
