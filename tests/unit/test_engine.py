"""The run engine drives real ansible-playbook runs through ansible-runner on this machine."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_install import engine
from gpu_install.errors import codes

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_INSTALL_LOG_DIR", str(tmp_path / "logs"))


def _playbook(tmp_path: Path, tasks: str, handlers: str = "") -> str:
    text = f"""---
- name: Test play
  hosts: all
  gather_facts: false
  tasks:
{tasks}
"""
    if handlers:
        text += f"  handlers:\n{handlers}\n"
    path = tmp_path / "play.yml"
    path.write_text(text)
    return str(path)


def test_task_error_class_becomes_the_exit_code(tmp_path):
    book = _playbook(
        tmp_path,
        """    - name: Refuse
      gpu_install.nvidia.error:
        code: 5
        reason: The mirror cannot be reached.""",
    )
    result = engine.run_playbook(book, {}, check=False)
    err = result.error()
    assert err is not None
    assert (err.code, err.reason) == (5, "The mirror cannot be reached.")


def test_unclassified_failure_is_exit_1_with_the_log(tmp_path):
    book = _playbook(
        tmp_path,
        """    - name: Break
      ansible.builtin.fail:
        msg: something odd""",
    )
    result = engine.run_playbook(book, {}, check=False)
    err = result.error()
    assert err is not None and err.code == codes.INTERNAL
    assert "something odd" in err.reason
    assert err.log and Path(err.log).is_file()


def test_changed_counts_tasks_and_handlers_of_the_real_run_only(tmp_path):
    target = tmp_path / "out.txt"
    book = _playbook(
        tmp_path,
        f"""    - name: Write a file
      ansible.builtin.copy:
        dest: {target}
        content: "hello\\n"
        mode: "0644"
      notify: Touched""",
        f"""    - name: Touch marker
      ansible.builtin.copy:
        dest: {target}.marker
        content: "x"
        mode: "0644"
      listen: Touched""",
    )
    check = engine.run_playbook(book, {}, check=True)
    assert check.error() is None
    assert [(c.task, c.handler) for c in check.changes] == [("Write a file", False), ("Touch marker", True)]
    assert not target.exists(), "check mode changed the host"
    real = engine.run_playbook(book, {}, check=False)
    assert real.error() is None
    assert real.changed == 2
    assert any(c.handler for c in real.changes)
    assert real.changes[0].diff, "diff of the real run was not recorded"
    again = engine.run_playbook(book, {}, check=False)
    assert again.changed == 0


def test_blocker_in_check_mode_lets_the_plan_go_on_and_sets_the_code(tmp_path):
    target = tmp_path / "later.txt"
    book = _playbook(
        tmp_path,
        f"""    - name: Refuse later
      gpu_install.nvidia.error:
        code: 3
        reason: No GPU here.
        defer_in_check_mode: true
    - name: Write a file
      ansible.builtin.copy:
        dest: {target}
        content: "x"
        mode: "0644\"""",
    )
    plan = engine.run_playbook(book, {}, check=True)
    assert [c.task for c in plan.changes] == ["Write a file"]
    err = plan.error()
    assert err is not None and err.code == 3
    real = engine.run_playbook(book, {}, check=False)
    assert real.error().code == 3
    assert not target.exists()


def test_settings_reach_the_playbook_as_an_extra_vars_file(tmp_path):
    book = _playbook(
        tmp_path,
        """    - name: Echo
      ansible.builtin.assert:
        that: gpu_install_proxy == "http://proxy:3128; rm -rf /"
        quiet: true""",
    )
    result = engine.run_playbook(book, {"gpu_install_proxy": "http://proxy:3128; rm -rf /"}, check=False)
    assert result.error() is None
    extravars = next((tmp_path / "logs" / "runs").glob("*/env/extravars"))
    assert json.loads(extravars.read_text()) == {"gpu_install_proxy": "http://proxy:3128; rm -rf /"}
    command = json.loads(next(result.artifacts.parent.glob("*/command")).read_text())["command"]
    assert all("rm -rf" not in arg for arg in command)


def test_second_apply_is_refused_with_the_first_ones_pid(tmp_path):
    from gpu_install.commands import _common

    lock = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time\n"
         f"fd=os.open({str(lock)!r},os.O_RDWR|os.O_CREAT)\n"
         "fcntl.flock(fd,fcntl.LOCK_EX); os.pwrite(fd,str(os.getpid()).encode(),0)\n"
         "print('held',flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        old = _common.LOCK_PATH
        _common.LOCK_PATH = lock
        try:
            with pytest.raises(Exception) as exc, _common.run_lock():
                pass
        finally:
            _common.LOCK_PATH = old
        assert exc.value.code == codes.BUSY
        assert f"PID {holder.pid}" in exc.value.reason
    finally:
        holder.kill()
        holder.wait()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once its holder is gone
    os.close(fd)


def test_cli_finds_its_ansible_beside_its_interpreter_through_a_symlink(tmp_path):
    link = tmp_path / "gpu-install"
    link.symlink_to(BIN / "gpu-install")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GPU_INSTALL_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run([str(link), "plan", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["schema"] == 1
    assert "changes" in result, proc.stderr
    # One playbook process ran: its artifacts are there, and the exit code is the plan's class.
    assert Path(result["artifacts"]).is_dir()
    expected = result["error"]["code"] if "error" in result else 0
    assert proc.returncode == expected
    assert proc.returncode != codes.INTERNAL, result
