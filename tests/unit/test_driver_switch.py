"""Switching the driver's source or branch (driver.switch): what leaves before the new driver goes in.

The installed package sets are data, shaped as the sources install them (versions as their archives spell
them); every case names the installed driver, the target and exactly what is purged.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ansible_doc, module_utils

driver = module_utils("driver")
pkgmgr = module_utils("pkgmgr")

# Debian 12's own driver (nvidia-graphics-drivers 535), with packages that match the driver's globs but are
# not the driver: nvidia-settings has its own version (525), the container toolkit and Debian's CUDA toolkit
# carry no driver branch, nvidia-support is a date.
NOT_THE_DRIVER = {
    "nvidia-settings": "525.125-1~deb12u1",
    "nvidia-container-toolkit": "1.17.8-1",
    "libnvidia-container1": "1.17.8-1",
    "nvidia-cuda-toolkit": "12.0.140~12.0.1-4+b1",
    "nvidia-support": "20151021+15",
    "dkms": "3.0.10-8+deb12u1",
    "linux-headers-amd64": "6.1.158-1",
}
DEBIAN12_535 = {
    "nvidia-driver": "535.261.03-1~deb12u1",
    "nvidia-kernel-dkms": "535.261.03-1~deb12u1",
    "firmware-nvidia-gsp": "535.261.03-1~deb12u1",
    "libcuda1": "535.261.03-1~deb12u1",
    "libnvidia-ml1": "535.261.03-1~deb12u1",
    "nvidia-smi": "535.261.03-1~deb12u1",
    "nvidia-persistenced": "535.171.04-1~deb12u1",
    **NOT_THE_DRIVER,
}
CUDA_550 = {
    "nvidia-open-550": "550.163.01-1",
    "nvidia-driver": "550.163.01-1",
    "nvidia-kernel-open-dkms": "550.163.01-1",
    "libcuda1": "550.163.01-1",
    "nvidia-fabricmanager-550": "550.163.01-1",
    **NOT_THE_DRIVER,
}
CUDA_NEWEST = {"nvidia-open": "575.57.08-1", "nvidia-driver": "575.57.08-1", **NOT_THE_DRIVER}
UBUNTU_535_SERVER = {
    "nvidia-headless-no-dkms-535-server": "535.247.01-0ubuntu0.22.04.1",
    "nvidia-utils-535-server": "535.247.01-0ubuntu0.22.04.1",
    "libnvidia-compute-535-server": "535.247.01-0ubuntu0.22.04.1",
    "linux-modules-nvidia-535-server-generic": "5.15.0-151.161",
    "linux-modules-nvidia-535-server-5.15.0-151-generic": "5.15.0-151.161",
    "nvidia-container-toolkit": "1.17.8-1",
}
RHEL_550 = {
    "cuda-drivers": "550.163.01-1",
    "nvidia-driver": "3:550.163.01-1.el9",
    "kmod-nvidia-open-dkms": "3:550.163.01-1.el9",
}
OLD_535 = ["firmware-nvidia-gsp", "libcuda1", "libnvidia-ml1", "nvidia-driver", "nvidia-kernel-dkms",
           "nvidia-persistenced", "nvidia-smi"]  # fmt: skip
OLD_550 = ["libcuda1", "nvidia-driver", "nvidia-fabricmanager-550", "nvidia-kernel-open-dkms", "nvidia-open-550"]

# (case, manager, installed packages, runfile record, NVIDIA's uninstaller, target source, target branch,
#  installed {source, branch}, switch, purged, uninstall the runfile)
CASES: list[tuple[str, str, dict[str, str], bool, bool, str, str, dict[str, Any], bool, list[str], bool]] = [
    ("debian-535-to-cuda-550", "apt", DEBIAN12_535, False, False, "auto", "550",
     {"source": "distro", "branch": "535"}, True, OLD_535, False),
    ("debian-535-to-cuda-newest", "apt", DEBIAN12_535, False, False, "auto", "",
     {"source": "distro", "branch": "535"}, True, OLD_535, False),
    ("debian-535-stays", "apt", DEBIAN12_535, False, False, "distro", "535",
     {"source": "distro", "branch": "535"}, False, [], False),
    ("cuda-550-to-570", "apt", CUDA_550, False, False, "auto", "570",
     {"source": "auto", "branch": "550"}, True, OLD_550, False),
    ("cuda-550-stays", "apt", CUDA_550, False, False, "auto", "550",
     {"source": "auto", "branch": "550"}, False, [], False),
    ("cuda-550-with-no-branch-set-stays", "apt", CUDA_550, False, False, "auto", "",
     {"source": "auto", "branch": "550"}, False, [], False),
    ("cuda-newest-to-570", "apt", CUDA_NEWEST, False, False, "auto", "570",
     {"source": "auto", "branch": "575"}, True, ["nvidia-driver", "nvidia-open"], False),
    ("cuda-550-to-debian-535", "apt", CUDA_550, False, False, "distro", "535",
     {"source": "auto", "branch": "550"}, True, OLD_550, False),
    ("debian-535-to-runfile", "apt", DEBIAN12_535, False, False, "runfile", "",
     {"source": "distro", "branch": "535"}, True, OLD_535, False),
    ("runfile-to-cuda-550", "apt", NOT_THE_DRIVER, True, True, "auto", "550",
     {"source": "runfile", "branch": "550"}, True, [], True),
    ("runfile-not-ours-to-debian", "apt", NOT_THE_DRIVER, False, True, "distro", "535",
     {"source": "runfile", "branch": "550"}, True, [], True),
    ("runfile-to-newer-runfile", "apt", NOT_THE_DRIVER, True, True, "runfile", "",
     {"source": "runfile", "branch": "550"}, False, [], False),
    ("nothing-installed", "apt", NOT_THE_DRIVER, False, False, "auto", "550",
     {"source": None, "branch": ""}, False, [], False),
    ("ubuntu-535-server-to-570-server", "apt", UBUNTU_535_SERVER, False, False, "distro", "570",
     {"source": "distro", "branch": "535"}, True,
     ["libnvidia-compute-535-server", "linux-modules-nvidia-535-server-5.15.0-151-generic",
      "linux-modules-nvidia-535-server-generic", "nvidia-headless-no-dkms-535-server", "nvidia-utils-535-server"],
     False),
    ("rhel-cuda-550-to-570", "dnf", RHEL_550, False, False, "auto", "570",
     {"source": "auto", "branch": "550"}, True, ["cuda-drivers", "kmod-nvidia-open-dkms", "nvidia-driver"], False),
    ("source-none-touches-nothing", "apt", DEBIAN12_535, False, False, "none", "",
     {"source": "distro", "branch": "535"}, False, [], False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("manager", "installed", "record", "uninstaller", "source", "branch", "now", "switching", "purged", "uninstall"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_switch_purges_exactly_the_old_branchs_packages(
    manager, installed, record, uninstaller, source, branch, now, switching, purged, uninstall
):
    loaded = "550.163.01" if record or uninstaller else None
    got = driver.switch(
        {"manager": manager, "source": source, "branch": branch}, installed, record, uninstaller, loaded
    )
    assert got["refusal"] is None
    assert got["installed"] == now
    assert got["switch"] is switching
    assert got["remove"] == purged
    assert got["uninstall_runfile"] is uninstall
    assert got["removed_versions"] == [f"{name} {installed[name]}" for name in purged]
    assert not set(got["remove"]) & set(NOT_THE_DRIVER), "a package that is not the driver would be purged"


def test_a_runfile_driver_without_nvidias_uninstaller_is_refused_before_packages_go_in():
    got = driver.switch({"manager": "apt", "source": "auto", "branch": "550"}, NOT_THE_DRIVER, True, False)
    assert got["refusal"]["code"] == 3
    assert driver.RUNFILE_UNINSTALLER in got["refusal"]["reason"] and "by hand" in got["refusal"]["reason"]
    assert got["remove"] == [] and got["uninstall_runfile"] is False


@pytest.mark.parametrize(
    ("name", "version", "branch"),
    [
        ("nvidia-open-550", "550.163.01-1", "550"),
        ("linux-modules-nvidia-570-server-open-6.8.0-1015-aws", "6.8.0-1015.16", "570"),
        ("libnvidia-gl-535", "535.247.01-0ubuntu1", "535"),
        ("nvidia-driver", "1:550.163.01-1", "550"),
        ("nvidia-driver", "3:570.86.15-1.el9", "570"),
        ("libcuda1", "535.261.03-1~deb12u1", "535"),
        ("nvidia-container-toolkit", "1.17.8-1", None),
        ("libnvidia-container1", "1.17.8-1", None),
        ("nvidia-cuda-toolkit", "12.0.140~12.0.1-4+b1", None),
        ("nvidia-support", "20151021+15", None),
        ("docker.io", "20.10.24+dfsg1-1+b3", None),
        ("linux-headers-amd64", "6.1.158-1", None),
    ],
)
def test_a_packages_driver_branch_comes_from_its_name_else_its_version(name, version, branch):
    assert driver.package_branch(name, version) == branch


def test_the_plan_carries_the_switch_keys_on_every_path():
    facts = {
        "os": {"id": "debian", "version_id": "12", "family": "debian", "arch": "x86_64", "name": "Debian 12"},
        "gpus": [],
        "kernel": {"release": "6.1.0-40-amd64", "headers_installed": True},
    }
    for source in ("auto", "distro", "runfile", "none"):
        result = driver.plan(facts, {"source": source, "branch": "", "kernel_modules": "auto", "image_build": True})
        for key in ("installed", "switch", "remove", "removed_versions", "uninstall_runfile", "hold_path",
                    "runfile_uninstall", "runfile_state", "drain_marker"):  # fmt: skip
            assert key in result, (source, key)
        assert result["hold_path"] == driver.HOLD_APT_PATH


def test_the_plan_modules_documented_return_keys_match_what_it_returns():
    doc = ansible_doc("nvidia_driver_plan")
    facts = {"os": {"id": "debian", "version_id": "12", "family": "debian"}, "gpus": [], "kernel": {}}
    returned = set(driver.plan(facts, {"source": "auto", "image_build": True})) | {"reboot_needed"}
    assert set(doc["return"]) == returned


def test_purge_removes_the_configuration_too_and_remove_keeps_it(monkeypatch):
    calls: list[list[str]] = []

    def runner(argv, env):
        calls.append(list(argv))
        return 0, "", ""

    monkeypatch.setattr(pkgmgr, "wait_for_lock", lambda paths, timeout: [])  # no lock held in a unit test
    monkeypatch.setattr(pkgmgr, "recover_dpkg", lambda runner, env=None: False)
    pkgmgr.apt_remove(["nvidia-driver"], 5, runner, purge=True)
    pkgmgr.apt_remove(["nvidia-driver"], 5, runner)
    assert calls[0][:2] == ["apt-get", "purge"] and calls[0][-1] == "nvidia-driver"
    assert calls[1][:2] == ["apt-get", "remove"]
