# Copyright: gpu-install contributors
# Apache License 2.0
"""Exit codes and the error record every failure carries (stdlib only).

One table, used by the modules on managed hosts, by the CLI and by the fleet
report: a failing task returns ``gpu_install_error: {code, reason}`` and the
doors read only that.
"""

from __future__ import annotations

OK = 0
INTERNAL = 1
USAGE = 2
UNSUPPORTED = 3
INVALID_INPUT = 4
PACKAGE_SOURCE = 5
BUSY = 6
ENGINE_ROLLED_BACK = 7
VERIFY_FAILED = 8
REBOOT_REQUIRED = 9
HOST_ERROR = 10
INTERRUPTED_SIGINT = 130
INTERRUPTED_SIGTERM = 143

# code -> short name, as README documents them.
EXIT_CODES = {
    OK: "ok",
    INTERNAL: "internal error",
    USAGE: "usage",
    UNSUPPORTED: "unsupported platform or setting",
    INVALID_INPUT: "invalid input (settings, malformed files)",
    PACKAGE_SOURCE: "package source error",
    BUSY: "busy (package manager lock, or another gpu-install run)",
    ENGINE_ROLLED_BACK: (
        "a container engine (Docker or containerd) failed to come back with the new configuration (rolled back)"
    ),
    VERIFY_FAILED: "verification failed",
    REBOOT_REQUIRED: "reboot required to finish",
    HOST_ERROR: "host error (not root, disk full, read-only filesystem)",
    INTERRUPTED_SIGINT: "interrupted by SIGINT",
    INTERRUPTED_SIGTERM: "interrupted by SIGTERM",
}


# The sentence of exit 9 (apply's, and the fleet report's for a host waiting for a reboot).
REBOOT_REASON = "the driver change needs a reboot to finish: reboot, then run gpu-install apply again."


def classified(record: object) -> bool:
    """Whether a task's ``gpu_install_error`` is a record of one of the exit codes above."""
    return isinstance(record, dict) and record.get("code") in EXIT_CODES


def task_failure(task_name: object, result: object) -> dict:
    """The class of a failed task, as every door gives it: its ``gpu_install_error``, else exit 1 naming the task
    with Ansible's message (``msg``, else ``stderr``, else ``reason``)."""
    found = result if isinstance(result, dict) else {}
    record = found.get("gpu_install_error")
    if isinstance(record, dict) and classified(record):
        return {"code": int(record["code"]), "reason": str(record.get("reason"))}
    msg = found.get("msg") or found.get("stderr") or found.get("reason") or "a task failed"
    return {"code": INTERNAL, "reason": f"task '{task_name}' failed: {msg}"}


def error_record(code, reason):
    # type: (int, str) -> dict
    """The ``gpu_install_error`` value a failing task returns."""
    if code not in EXIT_CODES or code == OK:
        code = INTERNAL
    return {"code": int(code), "reason": str(reason)}


class Failure(Exception):
    """A classified failure: ``code`` is one of the exit codes above, ``reason`` one sentence."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def record(self) -> dict:
        return error_record(self.code, self.reason)
