"""SIGINT/SIGTERM: recorded while a playbook runs, raised otherwise; the reason names the task it stopped in."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gpu_install import engine, signals


@pytest.fixture(autouse=True)
def _handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals._received.clear()
    signals.install_handlers()
    yield
    signals._received.clear()
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_signal_outside_a_run_raises_interrupted_with_128_plus_signum():
    with pytest.raises(signals.Interrupted) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.code == 143
    assert signals.received() == signal.SIGTERM


def test_a_signal_during_a_run_is_recorded_for_the_engine_to_stop_the_playbook():
    with signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received() == signal.SIGINT
    assert signals.received() == signal.SIGINT


def _event(kind: str, role: str, task: str, changed: bool = False) -> dict:
    data = {"role": role, "task": task, "host": "localhost", "task_uuid": task}
    if kind != "playbook_on_task_start":
        data["res"] = {"changed": changed}
    return {"event": kind, "event_data": data}


def test_interrupted_reason_names_the_task_it_stopped_in_and_the_changes_so_far(tmp_path: Path):
    result = engine.RunResult(check=False, run_id="r", artifacts=tmp_path, log=tmp_path / "stdout")
    for event in (
        _event("playbook_on_task_start", "gpu_install", "Configure the repositories"),
        _event("runner_on_ok", "gpu_install", "Configure the repositories", changed=True),
        _event("playbook_on_task_start", "nvidia_container", "Install the NVIDIA Container Toolkit"),
    ):
        engine._collect(result, event, False)
    with signals.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
    err = result.error()
    assert err is not None and err.code == 143
    assert "in task 'nvidia_container: Install the NVIDIA Container Toolkit'" in err.reason
    assert "changed so far (1): gpu_install: Configure the repositories" in err.reason
    assert "run apply again" in err.reason


def test_interrupted_between_tasks_says_so(tmp_path: Path):
    result = engine.RunResult(check=False, run_id="r", artifacts=tmp_path, log=tmp_path / "stdout")
    engine._collect(result, _event("playbook_on_task_start", "docker", "Start Docker"), False)
    engine._collect(result, _event("runner_on_ok", "docker", "Start Docker"), False)
    with signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
    err = result.error()
    assert err is not None and err.code == 130
    assert "between tasks" in err.reason and "changed so far (0): nothing" in err.reason
