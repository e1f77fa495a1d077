"""Live progress of a playbook run: task N of M, elapsed time, current step."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .settings import state_dir


def _counts_file() -> Path:
    return state_dir() / "task-counts.json"


def expected_tasks(playbook: str) -> int | None:
    """How many tasks the last full run of this playbook started (M in 'task N of M')."""
    try:
        return int(json.loads(_counts_file().read_text())[playbook])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_tasks(playbook: str, count: int) -> None:
    try:
        path = _counts_file()
        data = json.loads(path.read_text()) if path.exists() else {}
        data[playbook] = count
        path.write_text(json.dumps(data))
    except (OSError, ValueError):
        pass


class Progress:
    """Renders runner events; a live line on a terminal, plain lines otherwise."""

    def __init__(self, title: str, total: int | None, enabled: bool = True) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled
        self.n = 0
        self.start = time.monotonic()
        self.current = ""
        self._live: Any = None
        self._tty = sys.stderr.isatty()

    def __enter__(self) -> Progress:
        if self.enabled and self._tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(self.title), console=Console(stderr=True), refresh_per_second=8, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def _line(self) -> str:
        of = f" of {max(self.total, self.n)}" if self.total else ""
        elapsed = time.monotonic() - self.start
        return f"{self.title}: task {self.n}{of} [{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {self.current}"

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.n += 1
            role = data.get("role")
            task = str(data.get("task") or data.get("name") or "")
            if task.startswith("Validating arguments against arg spec"):
                task = "Validate the settings"
            self.current = f"{role}: {task}" if role else str(task)
            self._show()
        elif kind == "runner_on_ok" and (data.get("res") or {}).get("changed"):
            self._print(f"  changed: {self.current}")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self._print(f"  failed: {self.current}")

    def _show(self) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(self._line()))
        else:
            sys.stderr.write(self._line() + "\n")
            sys.stderr.flush()

    def _print(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            sys.stderr.write(text + "\n")
