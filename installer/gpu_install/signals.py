"""SIGINT/SIGTERM: stop cleanly and exit 130/143."""

from __future__ import annotations

import signal
from types import FrameType


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.code = 128 + signum
        name = signal.Signals(signum).name
        self.reason = f"interrupted by {name}"
        super().__init__(self.reason)


_received: list[int] = []


def received() -> int | None:
    """The first signal received while a run was under way, if any."""
    return _received[0] if _received else None


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if first and _deferred:
        return  # a playbook run is under way: its cancel callback stops it
    raise Interrupted(signum)


_deferred: list[bool] = []


class deferred:
    """Within this block a signal is recorded, not raised: the run engine stops the playbook."""

    def __enter__(self) -> deferred:
        _deferred.append(True)
        return self

    def __exit__(self, *exc: object) -> None:
        _deferred.pop()


def install_handlers() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
