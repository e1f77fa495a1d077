"""The one user-facing error class, mapped to the documented exit codes."""

from __future__ import annotations

from .collection import module_utils

codes = module_utils("errors")


class GpuInstallError(Exception):
    """A failure the user can act on: one sentence and an exit code."""

    def __init__(self, code: int, reason: str, *, log: str | None = None) -> None:
        super().__init__(reason)
        self.code = int(code)
        self.reason = reason
        self.log = log

    def record(self) -> dict:
        rec: dict = {"code": self.code, "reason": self.reason}
        if self.log:
            rec["log"] = self.log
        return rec
