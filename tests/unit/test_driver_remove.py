"""What `gpu-install remove --driver` takes back of the driver role's doing (driver.removal_items, removal_probes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import module_utils

driver = module_utils("driver")

LOCKS = """\
# Added by 'versionlock add' command on Mon Dec  7 10:00:00 2026
nvidia-driver-3:580.105.08-1.el10.*
nvidia-driver-libs-3:580.105.08-1.el10.*
kmod-nvidia-open-dkms-3:580.105.08-1.el10.*
!nvidia-driver-3:590.44.01-1.el10.*
nvidia-container-toolkit-0:1.17.8-1.*
kernel-0:6.12.0-55.el10.*
"""


def kinds(items: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(i["kind"], i["target"], i["action"]) for i in items]


def test_a_host_the_driver_role_never_touched_gives_nothing_to_take_back():
    assert driver.removal_items({"manager": "apt"}) == []
    assert driver.removal_items({}) == []


def test_every_item_has_the_shared_shape():
    every = {
        "manager": "dnf", "blacklist": True, "hold": True, "module_hold": True, "versionlock": LOCKS, "runfile": True,
        "uninstaller": True, "drain_marker": True, "initramfs_tool": True,
    }  # fmt: skip
    items = driver.removal_items(every)
    assert items
    for item in items:
        assert set(item) == {"kind", "target", "action", "detail"}
        assert item["kind"] in ("file", "hold", "state", "driver")
        assert item["action"] in ("remove", "uninstall", "rebuild")
        assert item["detail"]


def test_the_blacklist_goes_with_an_initramfs_rebuild_by_the_hosts_tool():
    apt = driver.removal_items({"manager": "apt", "blacklist": True, "initramfs_tool": True})
    assert kinds(apt) == [("file", driver.BLACKLIST_PATH, "remove"), ("driver", "initramfs", "rebuild")]
    assert apt[1]["detail"].startswith("update-initramfs -u")
    dnf = driver.removal_items({"manager": "dnf", "blacklist": True, "initramfs_tool": True})
    assert dnf[1]["detail"].startswith("dracut -f")


def test_no_rebuild_is_planned_where_the_host_has_no_initramfs_tool():
    items = driver.removal_items({"manager": "apt", "blacklist": True, "initramfs_tool": False})
    assert kinds(items) == [("file", driver.BLACKLIST_PATH, "remove")]


def test_a_removal_stopped_before_its_rebuild_still_rebuilds_the_initramfs():
    items = driver.removal_items({"manager": "apt", "initramfs_pending": True, "initramfs_tool": True})
    assert kinds(items) == [("driver", "initramfs", "rebuild")]


def test_the_apt_pin_and_dnfs_module_stream_are_holds():
    assert kinds(driver.removal_items({"hold": True})) == [("hold", driver.HOLD_APT_PATH, "remove")]
    assert kinds(driver.removal_items({"manager": "dnf", "module_hold": True})) == [
        ("hold", driver.HOLD_DNF_PATH, "remove")
    ]


def test_only_the_versionlock_entries_nvidias_glob_adds_are_taken_back():
    items = driver.removal_items({"manager": "dnf", "versionlock": LOCKS})
    entries = [i["target"] for i in items]
    assert entries == [
        f"{driver.VERSIONLOCK_LIST} kmod-nvidia-open-dkms-3:580.105.08-1.el10.*",
        f"{driver.VERSIONLOCK_LIST} nvidia-driver-3:580.105.08-1.el10.*",
        f"{driver.VERSIONLOCK_LIST} nvidia-driver-libs-3:580.105.08-1.el10.*",
    ]  # the user's exclude (!), the toolkit's 1.17 and the kernel's lock stay
    assert all(i["kind"] == "hold" and i["action"] == "remove" for i in items)


def test_a_runfile_driver_leaves_through_nvidias_uninstaller_then_its_record():
    items = driver.removal_items({"runfile": True, "uninstaller": True})
    assert kinds(items) == [
        ("driver", driver.RUNFILE_UNINSTALLER, "uninstall"),
        ("state", driver.RUNFILE_STATE, "remove"),
    ]
    assert "nvidia-uninstall --silent" in items[0]["detail"]


def test_a_runfile_record_without_the_uninstaller_is_only_forgotten():
    assert kinds(driver.removal_items({"runfile": True, "uninstaller": False})) == [
        ("state", driver.RUNFILE_STATE, "remove")
    ]


def test_an_uninstaller_without_gpu_installs_record_is_the_users_driver():
    assert driver.removal_items({"uninstaller": True}) == []


def test_a_node_an_earlier_run_left_drained_is_undrained():
    items = driver.removal_items({"drain_marker": True})
    assert kinds(items) == [("state", driver.DRAIN_MARKER, "remove")]
    assert "gpu_install_undrain_command" in items[0]["detail"]


def test_items_come_in_the_order_they_are_taken_back():
    every = {
        "manager": "dnf", "blacklist": True, "hold": True, "module_hold": True, "versionlock": LOCKS, "runfile": True,
        "uninstaller": True, "drain_marker": True, "initramfs_tool": True,
    }  # fmt: skip
    order = [(i["kind"], i["action"]) for i in driver.removal_items(every)]
    assert order.index(("driver", "uninstall")) < order.index(("state", "remove"))  # the record goes after the driver
    assert order.index(("file", "remove")) < order.index(("driver", "rebuild"))
    assert order[-1] == ("state", "remove")  # the drain marker goes last, after the undrain


# -- probes of a host tree ---------------------------------------------------------------------------


def write(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_probes_of_a_bare_host_find_nothing(tmp_path: Path):
    probes = driver.removal_probes("apt", root=str(tmp_path))
    assert driver.removal_items(probes) == []
    assert probes["versionlock"] == ""


def test_probes_find_the_files_the_driver_role_wrote(tmp_path: Path):
    write(tmp_path, driver.BLACKLIST_PATH, driver.BLACKLIST_TEXT)
    write(tmp_path, driver.HOLD_APT_PATH, driver.apt_hold_text("535"))
    write(tmp_path, driver.DRAIN_MARKER, "# Written by gpu-install\n")
    write(tmp_path, driver.INITRAMFS_TOOL["apt"], "")
    probes = driver.removal_probes("apt", root=str(tmp_path))
    assert kinds(driver.removal_items(probes)) == [
        ("hold", driver.HOLD_APT_PATH, "remove"),
        ("file", driver.BLACKLIST_PATH, "remove"),
        ("driver", "initramfs", "rebuild"),
        ("state", driver.DRAIN_MARKER, "remove"),
    ]


def test_probes_leave_a_blacklist_or_pin_that_is_not_gpu_installs(tmp_path: Path):
    write(tmp_path, driver.BLACKLIST_PATH, "blacklist nouveau\n")
    write(tmp_path, driver.HOLD_APT_PATH, "Package: nvidia-*\nPin: version 535.*\nPin-Priority: 1000\n")
    assert driver.removal_items(driver.removal_probes("apt", root=str(tmp_path))) == []


def test_probes_read_dnfs_versionlock_list_and_module_stream(tmp_path: Path):
    write(tmp_path, driver.VERSIONLOCK_LIST, LOCKS)
    write(tmp_path, driver.HOLD_DNF_PATH, driver.dnf_hold_text("580-open"))
    write(tmp_path, driver.RUNFILE_STATE, "0" * 64)
    write(tmp_path, driver.RUNFILE_UNINSTALLER, "")
    probes = driver.removal_probes("dnf", root=str(tmp_path))
    assert probes["versionlock"] == LOCKS and probes["module_hold"] and probes["runfile"] and probes["uninstaller"]
    assert not probes["initramfs_tool"]
    assert ("hold", driver.HOLD_DNF_PATH, "remove") in kinds(driver.removal_items(probes))


def test_dnfs_module_file_is_no_hold_on_an_apt_host(tmp_path: Path):
    write(tmp_path, driver.HOLD_DNF_PATH, driver.dnf_hold_text("580-open"))
    assert driver.removal_probes("apt", root=str(tmp_path))["module_hold"] is False


@pytest.mark.parametrize("manager", ["apt", "dnf"])
def test_the_plan_carries_the_removal_paths_and_commands(manager: str):
    family = "redhat" if manager == "dnf" else "debian"
    facts: dict[str, Any] = {"os": {"id": "x", "version_id": "1", "family": family}, "gpus": [], "kernel": {}}
    result = driver.plan(facts, {"source": "none"})
    assert result["initramfs"] == driver.INITRAMFS[manager]
    assert os.path.basename(result["initramfs_tool"]) == result["initramfs"][0]
    assert result["initramfs_pending"] == driver.INITRAMFS_PENDING
    assert result["versionlock_delete"] == ["dnf", "-y", "versionlock", "delete"]
    assert os.path.dirname(result["initramfs_pending"]) == os.path.dirname(result["drain_marker"])


def test_the_files_left_to_the_playbook_are_gpu_installs_markers():
    assert set(driver.REMOVAL_KEEP) == {driver.DRAIN_MARKER, driver.INITRAMFS_PENDING}
    assert driver.BLACKLIST_PATH in driver.REMOVAL_FILES and driver.HOLD_APT_PATH in driver.REMOVAL_FILES
