"""Removal's plan items and the parts of module_utils/removal that are pure: how an item reads, what differs in
daemon.json, when a file counts as edited, and which files are gpu-install's (the same paths apply writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import module_utils

removal = module_utils("removal")
repos = module_utils("repos")
persistenced = module_utils("persistenced")
container_mode = module_utils("container_mode")


def test_an_item_reads_action_kind_target_and_its_detail():
    entry = removal.item("file", "/etc/cdi/gpu-install-nvidia.json", "remove", "gpu-install's CDI spec")
    assert removal.line(entry) == "remove file /etc/cdi/gpu-install-nvidia.json (gpu-install's CDI spec)"
    assert removal.line(removal.item("state", "/var/lib/gpu-install", "remove")) == "remove state /var/lib/gpu-install"


def test_an_item_is_identified_without_its_detail():
    a = removal.item("file", "/etc/x", "remove", "edited after apply")
    b = removal.item("file", "/etc/x", "remove", "")
    assert removal.key(a) == removal.key(b)
    assert removal.key(a) != removal.key(removal.item("file", "/etc/x", "move"))


def test_daemon_json_changes_name_the_keys_inside_objects_and_what_comes_back():
    before = {"runtimes": {"nvidia": {"path": "x"}, "runsc": {"path": "y"}}, "default-runtime": "nvidia", "a": 1}
    after = {"runtimes": {"runsc": {"path": "y"}}, "default-runtime": "runc", "a": 1}
    assert removal._changes(before, after) == [("runtimes.nvidia", None), ("default-runtime", "runc")]


def test_an_object_that_goes_whole_is_one_change():
    assert removal._changes({"runtimes": {"nvidia": {}}, "b": 2}, {"b": 2}) == [("runtimes", None)]


def test_a_file_as_apply_left_it_is_not_backed_up(tmp_path: Path):
    f = tmp_path / "rule"
    f.write_text("# Written by gpu-install\n")
    recorded = {str(f): removal.sha256(str(f))}
    assert removal._edited(str(f), recorded, "the rule") == "the rule"


@pytest.mark.parametrize("recorded", [{"other": "x"}, "edited"])
def test_an_edited_or_unrecorded_file_is_backed_up(tmp_path: Path, recorded):
    f = tmp_path / "rule"
    f.write_text("# Written by gpu-install\nedited\n")
    record = {str(f): "0" * 64} if recorded == "edited" else recorded
    detail = removal._edited(str(f), record, "the rule")
    assert removal.BACKUP_ROOT in detail
    assert ("edited after apply" in detail) == (recorded == "edited")


def test_owned_files_are_the_paths_apply_writes():
    apt = {o.path for o in removal.owned_files("apt")}
    assert {
        repos.source_path("nvidia_container_toolkit", "debian"),
        repos.keyring_path("cuda", "debian"),
        repos.APT_PROXY_PATH,
        persistenced.DROPIN,
        container_mode.OWN_SPEC,
        container_mode.UNIT_PATH,
        removal.UDEV_RULE,
    } <= apt
    dnf = {o.path for o in removal.owned_files("dnf")}
    assert repos.source_path("cuda", "redhat") in dnf and repos.APT_PROXY_PATH not in dnf


def test_removal_is_not_a_setting(tmp_path: Path):
    """An apply settings file cannot ask for the driver's removal: the key is no setting (exit 4)."""
    settings = __import__("gpu_install.settings", fromlist=["load"])
    errors = __import__("gpu_install.errors", fromlist=["GpuInstallError"])
    path = tmp_path / "config.yml"
    path.write_text("gpu_install_remove_driver: true\n")
    with pytest.raises(errors.GpuInstallError) as exc:
        settings.load(str(path))
    assert exc.value.code == 4


def test_a_malformed_daemon_json_refuses_the_plan_with_exit_4_naming_the_file(tmp_path: Path):
    config = tmp_path / "daemon.json"
    config.write_text('{"runtimes": {,}}\n')
    opts = removal.Options(docker_config_path=str(config), state_dir=str(tmp_path / "state"))
    with pytest.raises(removal.RemovalError) as exc:
        removal._daemon_json_plan(opts)
    assert exc.value.code == 4 and str(config) in exc.value.reason
    assert config.read_text() == '{"runtimes": {,}}\n'


def test_the_reload_says_what_daemon_json_keeps_else_dockerds_defaults():
    assert removal.reload_keys({}) == {"default-runtime": "runc", "runtimes": {}}
    kept = {"default-runtime": "runsc", "runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}
    assert removal.reload_keys(kept) == kept
