"""The gpu_install.nvidia.docker_daemon_json module, run as Ansible runs it (args file, JSON out)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import (
    ansible_doc,
    module_utils,  # noqa: F401  (puts installer/ on sys.path)
)
from conftest import run_module as _run_module

MODULE = "plugins/modules/docker_daemon_json.py"
ORIGINAL = '{\n  "log-driver": "json-file",\n  "default-runtime": "runsc",\n  "runtimes": {\n    "runsc": {\n'
ORIGINAL += '      "path": "/usr/bin/runsc"\n    }\n  },\n  "labels": ["site=東京"]\n}\n'
KEYS = {
    "changed",
    "path",
    "backup_file",
    "previous_default_runtime",
    "default_runtime",
    "restart_needed",
    "reload_needed",
}


def run_module(tmp_path: Path, args: dict, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    args.setdefault("state_dir", str(tmp_path / "state"))
    return _run_module("docker_daemon_json", tmp_path.parent / (tmp_path.name + "-args.json"), args)


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def test_module_six_ways_check_diff_real_then_idempotent(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text(ORIGINAL)
    args = {"path": str(target), "cdi": True}

    rc, check = run_module(tmp_path, args, check=True)
    assert rc == 0 and check["changed"] is True and target.read_text() == ORIGINAL
    assert listing(tmp_path) == ["daemon.json"]
    rc, check_diff = run_module(tmp_path, args, check=True, diff=True)
    assert rc == 0 and check_diff["changed"] is True and target.read_text() == ORIGINAL
    assert check_diff["diff"]["before"] == ORIGINAL
    assert check_diff["diff"]["before_header"] == check_diff["diff"]["after_header"] == str(target)
    assert check_diff["restart_needed"] is True and check_diff["reload_needed"] is False  # features changed
    rc, real = run_module(tmp_path, args)
    assert rc == 0 and real["changed"] is True
    assert target.read_text() == check_diff["diff"]["after"]  # check mode showed the exact change
    assert real["previous_default_runtime"] == "runsc" and real["default_runtime"] == "nvidia"
    assert real["backup_file"] and Path(real["backup_file"]).read_text() == ORIGINAL
    written = target.read_bytes()

    for mode in ({"check": True}, {"check": True, "diff": True}, {}):
        rc, again = run_module(tmp_path, args, **mode)
        assert rc == 0 and again["changed"] is False, mode
        assert again["backup_file"] is None and again["diff"] == {}
        assert again["reload_needed"] is False and again["restart_needed"] is False
        assert target.read_bytes() == written
    assert KEYS <= set(real) and KEYS <= set(again)


def test_module_follows_a_symlink_and_keeps_mode_and_owner(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "daemon.json"
    target.write_text(ORIGINAL)
    os.chmod(target, 0o600)
    if os.geteuid() == 0:
        os.chown(target, 1234, 1234)
    link = tmp_path / "daemon.json"
    link.symlink_to(target)

    rc, result = run_module(tmp_path, {"path": str(link)})
    assert rc == 0 and result["changed"] is True
    assert result["path"] == str(target)
    assert link.is_symlink() and os.readlink(link) == str(target)
    st = target.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 1234)
        backup = os.stat(result["backup_file"])
        assert (backup.st_uid, stat.S_IMODE(backup.st_mode)) == (1234, 0o600)
    assert Path(result["backup_file"]).parent == real_dir
    assert json.loads(target.read_text())["default-runtime"] == "nvidia"


def test_module_backup_false_keeps_no_backup(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text(ORIGINAL)
    rc, result = run_module(tmp_path, {"path": str(target), "backup": False})
    assert rc == 0 and result["changed"] and result["backup_file"] is None
    assert listing(tmp_path) == ["daemon.json", "state"]


def test_module_absent_restores_the_recorded_previous_default(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text(ORIGINAL)
    assert run_module(tmp_path, {"path": str(target)})[1]["default_runtime"] == "nvidia"
    record = json.loads((tmp_path / "state" / "docker-daemon-json.json").read_text())
    assert record["files"][str(target)]["default-runtime"]["previous"] == "runsc"

    rc, result = run_module(tmp_path, {"path": str(target), "state": "absent"})
    assert rc == 0 and result["changed"] is True
    assert result["previous_default_runtime"] == "nvidia" and result["default_runtime"] == "runsc"
    assert result["reload_needed"] is True and result["restart_needed"] is False
    assert json.loads(target.read_text()) == json.loads(ORIGINAL)
    assert run_module(tmp_path, {"path": str(target), "state": "absent"})[1]["changed"] is False


def test_module_warns_when_it_moves_args(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": ["--debug"]}}}')
    rc, result = run_module(tmp_path, {"path": str(target)})
    assert rc == 0
    warned = json.dumps(result["warnings"])  # 2.19 returns structured warnings
    assert "--debug" in warned and "runtimeArgs" in warned
    assert json.loads(target.read_text())["runtimes"]["nvidia"]["runtimeArgs"] == ["--debug"]


def test_module_refuses_a_malformed_file_with_the_error_record(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_bytes(b'{\n  "debug": true,\n}\n')
    rc, result = run_module(tmp_path, {"path": str(target)})
    assert rc != 0 and result["failed"] is True
    assert result["gpu_install_error"] == {"code": 4, "reason": result["msg"]}
    assert "line 2, column 16" in result["msg"] and "fix or move it, then run again" in result["msg"]
    assert KEYS <= set(result) and result["changed"] is False
    assert target.read_bytes() == b'{\n  "debug": true,\n}\n'
    assert listing(tmp_path) == ["daemon.json"]


def test_module_without_path_uses_the_detected_one_in_check_mode(tmp_path):
    rc, result = run_module(tmp_path, {}, check=True)
    assert rc == 0 or result["gpu_install_error"]["code"] == 4  # this host's own file may be malformed
    assert result["path"].endswith("daemon.json")


def test_ansible_doc_renders_the_module():
    doc = ansible_doc("docker_daemon_json")
    assert set(doc["doc"]["options"]) == {
        "path",
        "runtime_name",
        "runtime_path",
        "default_runtime",
        "runtime",
        "cdi",
        "generic_resources",
        "state",
        "backup",
        "validate",
        "dockerd_path",
        "state_dir",
    }
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["doc"]["attributes"]["diff_mode"]["support"] == "full"
    assert KEYS - {"changed"} <= set(doc["return"])


# --- write failures on a real small or read-only filesystem --------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 16 KiB tmpfs (real ENOSPC, real EROFS); skipped where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.fail("cannot mount a tmpfs here (the test needs root): " + proc.stderr.decode(errors="replace").strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> None:
    """Take every free block of ``fs``."""
    with open(fs / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


def test_disk_full_fails_with_code_10_and_leaves_the_original(tmp_path, small_fs):
    target = small_fs / "daemon.json"
    target.write_text(ORIGINAL)
    fill(small_fs)
    before = listing(small_fs)
    rc, result = run_module(tmp_path, {"path": str(target), "backup": False})
    assert rc != 0
    assert result["gpu_install_error"]["code"] == 10
    assert str(target) in result["msg"] and "No space left on device" in result["msg"]
    assert target.read_text() == ORIGINAL
    assert listing(small_fs) == before  # no temp file left


def test_disk_full_while_backing_up_leaves_no_partial_backup(tmp_path, small_fs):
    target = small_fs / "daemon.json"
    target.write_text(ORIGINAL)
    fill(small_fs)
    before = listing(small_fs)
    rc, result = run_module(tmp_path, {"path": str(target)})
    assert rc != 0 and result["gpu_install_error"]["code"] == 10
    assert target.read_text() == ORIGINAL
    assert listing(small_fs) == before


def test_read_only_filesystem_fails_with_code_10_and_leaves_the_original(tmp_path, small_fs):
    target = small_fs / "daemon.json"
    target.write_text(ORIGINAL)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    rc, result = run_module(tmp_path, {"path": str(target)})
    assert rc != 0 and result["gpu_install_error"]["code"] == 10
    assert "Read-only file system" in result["msg"]
    assert target.read_text() == ORIGINAL
    assert listing(small_fs) == ["daemon.json"]
