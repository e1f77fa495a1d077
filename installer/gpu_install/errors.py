"""The one user-facing error class, mapped to the documented exit codes."""

from __future__ import annotations

from .collection import module_utils

TYPE_CHECKING = False  # typing for the type checker only: every subcommand imports this module at start
if TYPE_CHECKING:
    from typing import Any

codes = module_utils("errors")


# The one classified failure of module_utils (imported at run time from the bundled collection).
_Failure: Any = codes.Failure


class GpuInstallError(_Failure):
    """A failure the user can act on: one sentence, an exit code and, for a run, its log."""

    def __init__(self, code: int, reason: str, *, log: str | None = None) -> None:
        super().__init__(int(code), reason)
        self.log = log

    def record(self) -> dict:
        rec: dict = {"code": self.code, "reason": self.reason}
        if self.log:
            rec["log"] = self.log
        return rec
