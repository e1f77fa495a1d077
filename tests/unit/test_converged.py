"""The fast path's receipt (module_utils converged, the converged module and the key of its action).

Real files in a scratch directory for what a tree's observation sees; the running machine for a whole
observation (two in a row must agree); the module run as Ansible runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import module_utils, run_module

converged = module_utils("converged")


def walk(top: Path) -> list[str]:
    out: list[str] = []
    converged._walk(str(top), out)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    top = tmp_path / "etc-docker"
    (top / "certs.d").mkdir(parents=True)
    (top / "daemon.json").write_text('{"default-runtime": "nvidia"}\n')
    (top / "certs.d" / "ca.crt").write_text("cert")
    os.symlink("daemon.json", top / "link")
    return top


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: (t / "daemon.json").write_text('{"default-runtime": "runc"}\n'), id="content"),
        pytest.param(lambda t: os.chmod(t / "daemon.json", 0o600), id="mode"),
        pytest.param(lambda t: os.chown(t / "daemon.json", 1, 1), id="owner"),
        pytest.param(lambda t: (os.unlink(t / "link"), os.symlink("elsewhere", t / "link")), id="link-target"),
        pytest.param(lambda t: (t / "certs.d" / "new.crt").write_text("x"), id="file-added"),
        pytest.param(lambda t: os.unlink(t / "certs.d" / "ca.crt"), id="file-removed"),
        pytest.param(lambda t: (t / "empty-dir").mkdir(), id="directory-added"),
    ],
)
def test_every_kind_of_change_below_a_tree_changes_its_observation(tree, change):
    if os.geteuid() != 0:
        pytest.fail("chown needs root: run the unit tests as scripts/test does")
    before = walk(tree)
    assert walk(tree) == before
    change(tree)
    assert walk(tree) != before


def test_rewriting_a_file_with_the_same_bytes_is_no_change(tree):
    before = walk(tree)
    data = (tree / "daemon.json").read_bytes()
    (tree / "daemon.json").unlink()
    (tree / "daemon.json").write_bytes(data)
    os.utime(tree / "daemon.json", (1, 1))
    assert walk(tree) == before


def test_a_missing_tree_is_observed_as_missing_and_its_creation_is_a_change(tmp_path):
    assert walk(tmp_path / "nothing") == [f"{tmp_path / 'nothing'} missing"]
    (tmp_path / "nothing").mkdir()
    assert walk(tmp_path / "nothing") != [f"{tmp_path / 'nothing'} missing"]


def test_the_state_directory_leaves_out_the_run_logs_and_the_receipt(tmp_path):
    state = tmp_path / "state"
    (state / "runs").mkdir(parents=True)
    (state / "docker-daemon-json.json").write_text("{}")
    out: list[str] = []
    converged._walk(str(state), out, skip=converged.STATE_SKIP)
    (state / "runs" / "new-run").write_text("log")
    (state / "converged.json").write_text("{}")
    again: list[str] = []
    converged._walk(str(state), again, skip=converged.STATE_SKIP)
    assert again == out
    (state / "docker-daemon-json.json").write_text('{"a": 1}')
    third: list[str] = []
    converged._walk(str(state), third, skip=converged.STATE_SKIP)
    assert third != out


def test_this_machine_observed_twice_in_a_row_is_the_same():
    first = converged.observe()
    assert set(first) >= {"kernel", "devices", "packages", "units", "files:docker", "files:systemd"}
    assert converged.observe() == first


def test_compare_names_what_differs():
    parts = {"packages": "a", "files:docker": "b"}
    receipt = {"schema": 1, "key": "k", "parts": dict(parts), "written": "w"}
    assert converged.compare(receipt, "k", parts) == (True, [])
    ok, drift = converged.compare(receipt, "other", parts)
    assert not ok and drift == ["the settings or gpu-install itself changed"]
    ok, drift = converged.compare(receipt, "k", {**parts, "files:docker": "c"})
    assert not ok and len(drift) == 1 and "/etc/docker" in drift[0]
    ok, drift = converged.compare(receipt, "k", {**parts, "units": "u"})  # a part the receipt lacks
    assert not ok and "docker, containerd" in drift[0]
    assert converged.compare(None, "k", parts) == (False, ["no earlier run left the host converged"])


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"schema": 2, "key": "k", "parts": {}}', '{"schema": 1}'])
def test_a_receipt_that_is_not_one_is_no_receipt(tmp_path, text):
    path = tmp_path / "converged.json"
    path.write_text(text)
    assert converged.load(str(path)) is None


def test_check_after_record_is_converged_and_a_stale_receipt_is_removed_but_not_in_check_mode(tmp_path):
    path = str(tmp_path / "state" / "converged.json")
    state = str(tmp_path / "state")
    written = converged.record("k1", path, state_dir=state)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    result = converged.check("k1", True, path, state_dir=state)
    assert (result["converged"], result["drift"], result["written"]) == (True, [], written["written"])
    assert converged.check("k1", False, path, check_mode=True, state_dir=state)["converged"] is False
    assert os.path.exists(path)
    assert converged.check("k2", True, path, check_mode=True, state_dir=state)["converged"] is False
    assert os.path.exists(path)  # check mode changes nothing
    assert converged.check("k2", True, path, state_dir=state)["converged"] is False
    assert not os.path.exists(path)
    assert converged.record("k1", path, check_mode=True, state_dir=state) == {
        "changed": False, "converged": False, "key": "k1",
    }  # fmt: skip
    assert not os.path.exists(path)


def test_the_module_reports_converged_after_its_own_write_with_the_facts_it_kept(tmp_path):
    path = str(tmp_path / "converged.json")
    facts = {"schema": 1, "docker": {"flavour": "docker.io"}}
    args = {"state": "write", "key": "k", "path": path, "facts": facts}
    rc, out = run_module("converged", tmp_path / "args.json", args)
    assert rc == 0 and out["changed"] is False and out["written"], out
    rc, out = run_module("converged", tmp_path / "args.json", {"key": "k", "path": path})
    assert rc == 0 and out["converged"] is True and out["drift"] == [], out
    assert out["ansible_facts"]["gpu_install"] == facts
    rc, out = run_module("converged", tmp_path / "args.json", {"key": "k", "path": path, "enabled": False})
    assert rc == 0 and out["converged"] is False and "turned off" in out["drift"][0], out
    assert "ansible_facts" not in out  # a full run detects the host itself
    assert not os.path.exists(path)


def test_the_key_covers_the_collections_content_and_the_settings_that_shape_the_host(tmp_path):
    from gpu_install.collection import collection_dir, collections_path

    sys.path.insert(0, str(collections_path()))
    from ansible_collections.gpu_install.nvidia.plugins.action import converged as action

    names = action.setting_names(str(collection_dir()))
    assert {"nvidia_container_mode", "nvidia_driver_branch", "gpu_install_repositories"} <= set(names)
    assert not set(names) & {"gpu_install_serial", "gpu_install_report_dir", "gpu_install_fast_path"}
    # A copy of the collection: one byte more in a role's task file is another content digest.
    import shutil

    copy = tmp_path / "nvidia"
    for top in action.CONTENT_DIRS:
        shutil.copytree(collection_dir() / top, copy / top)
    first = action.content_digest(str(copy))
    assert action.content_digest(str(collection_dir())) == first
    task_file = copy / "roles" / "docker" / "tasks" / "main.yml"
    task_file.write_text(task_file.read_text() + "\n")
    assert action.content_digest(str(copy)) != first
