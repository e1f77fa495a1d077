"""Live progress of a playbook run: task N of M, elapsed time, current step."""

from __future__ import annotations

import glob
import json
import os
import sys
import threading
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


# Long steps write logs as they go: dpkg's terminal log while packages unpack and configure, and DKMS's
# make.log while a kernel module builds. The newest line of the file written last is the live detail.
ACTIVITY_LOGS = ("/var/lib/dkms/*/*/build/make.log", "/var/log/apt/term.log")
# apt downloads into partial/ first: the file growing there is the download under way.
DOWNLOADS = "/var/cache/apt/archives/partial/*.deb"


def activity(since: float, patterns: tuple[str, ...] = ACTIVITY_LOGS, downloads: str = DOWNLOADS) -> str:
    """The last line of the log written most recently after ``since``, or the download under way."""
    newest, newest_mtime = None, since
    for path in glob.glob(downloads):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_mtime > newest_mtime:
            newest, newest_mtime = path, st.st_mtime
            size = st.st_size
    if newest is not None:
        name = os.path.basename(newest).split("_")[0]
        return f"download: {name} {size / 1e6:.1f} MB"
    for pattern in patterns:
        for path in glob.glob(pattern):
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if mtime > newest_mtime:
                newest, newest_mtime = path, mtime
    if newest is None:
        return ""
    try:
        with open(newest, "rb") as fh:
            fh.seek(max(0, os.path.getsize(newest) - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith("Log ")]
    label = "dkms" if "/dkms/" in newest else "dpkg"
    return f"{label}: {lines[-1][:100]}" if lines else ""


class Progress:
    """Renders runner events; a live line on a terminal, plain lines otherwise."""

    def __init__(self, title: str, total: int | None, enabled: bool = True) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled
        self.n = 0
        self.start = time.monotonic()
        self.started_at = time.time()  # wall clock, to compare with the logs' modification times
        self.current = ""
        self._live: Any = None
        self._tty = sys.stderr.isatty()
        self._detail = ""
        self._detail_shown = 0.0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.enabled and self._tty:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(self.title), console=Console(stderr=True), refresh_per_second=8, transient=True)
            self._live.__enter__()
        if self.enabled:
            self._watcher = threading.Thread(target=self._watch, name="gpu-install-progress", daemon=True)
            self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            detail = activity(self.started_at)
            if detail and detail != self._detail:
                self._detail = detail
                if self._live is not None:
                    self._show()
                elif time.monotonic() - self._detail_shown >= 5:
                    self._detail_shown = time.monotonic()
                    self._print(f"  ... {detail}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
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
            self._detail = ""
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

            line = self._line() + (f"\n  {self._detail}" if self._detail else "")
            with self._lock:
                self._live.update(Text(line))
        else:
            sys.stderr.write(self._line() + "\n")
            sys.stderr.flush()

    def _print(self, text: str) -> None:
        with self._lock:
            if self._live is not None:
                self._live.console.print(text, highlight=False, markup=False)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
