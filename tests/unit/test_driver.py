"""The NVIDIA driver plan (plugins/module_utils/driver.py): tables and decisions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import module_utils

driver = module_utils("driver")

H100 = {"pci_address": "0000:01:00.0", "device_id": "0x2330", "name": "H100 80GB HBM3"}
B200 = {"pci_address": "0000:02:00.0", "device_id": "0x2901", "name": "B200"}
V100 = {"pci_address": "0000:03:00.0", "device_id": "0x1db4", "name": "Tesla V100"}
T4 = {"pci_address": "0000:04:00.0", "device_id": "0x1eb8", "name": "Tesla T4"}


def facts(os_id: str = "debian", version: str = "13", **extra: Any) -> dict[str, Any]:
    family = "redhat" if os_id in ("rhel", "amzn") else "debian"
    base: dict[str, Any] = {
        "os": {"id": os_id, "version_id": version, "family": family, "arch": "x86_64", "name": f"{os_id} {version}",
               "like": {"id": os_id, "version_id": version}},
        "gpus": [H100],
        "nvswitches": [],
        "driver": {"loaded": False, "version": None, "flavour": None, "package": None},
        "nouveau_loaded": False,
        "secure_boot": False,
        "kernel": {"release": "6.12.38+deb13-amd64", "headers_installed": False},
    }  # fmt: skip
    base.update(extra)
    return base


def settings(**kw: Any) -> dict[str, Any]:
    return {"source": "distro", "branch": "", "kernel_modules": "auto", "image_build": False, **kw}


def ubuntu_archive(flavour: str, *branches: str, images: dict[str, str] | None = None) -> dict[str, Any]:
    """What apt and dpkg say on an Ubuntu host whose archive offers these -server branches for one flavour."""
    names = []
    for b in branches:
        for suffix in ("", "-open"):
            names += [
                f"nvidia-headless-no-dkms-{b}-server{suffix}",
                f"linux-modules-nvidia-{b}-server{suffix}-{flavour}",
            ]
    return {"apt_names": names, "kernel_images": images or {}}


# -- architecture by device id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_id", "arch", "policy"),
    [
        ("0x1db4", "Maxwell, Pascal or Volta", "proprietary"),
        ("0x1eb8", "Turing", "open_recommended"),
        ("0x20b0", "Ampere", "open_recommended"),
        ("0x2330", "Hopper", "open_recommended"),
        ("0x26b9", "Ada Lovelace", "open_recommended"),
        ("0x2901", "Blackwell or newer", "open_required"),
        ("2b85", "Blackwell or newer", "open_required"),
        (0x2236, "Ampere", "open_recommended"),
    ],
)
def test_architecture_comes_from_the_device_id_table(device_id, arch, policy):
    assert driver.architecture(device_id) == (arch, policy)


def test_the_architecture_table_covers_every_device_id_without_overlap():
    edges = [(first, last) for first, last, _a, _p in driver.ARCHITECTURES]
    assert edges[0][0] == 0 and edges[-1][1] == 0xFFFF
    for (_f1, last), (first, _l2) in zip(edges, edges[1:]):
        assert first == last + 1


# -- open or proprietary ---------------------------------------------------------------------------------


def test_auto_picks_open_modules_for_hopper_when_the_source_offers_them():
    assert driver.choose_kernel_modules("auto", [H100], True, "proprietary") == ("open", None)


def test_auto_picks_proprietary_where_the_source_offers_no_open_modules():
    assert driver.choose_kernel_modules("auto", [T4], False, "proprietary") == ("proprietary", None)


def test_auto_picks_proprietary_for_gpus_before_turing():
    assert driver.choose_kernel_modules("auto", [V100], True, "open") == ("proprietary", None)


def test_blackwell_requires_open_modules_and_refuses_proprietary():
    assert driver.choose_kernel_modules("auto", [B200], True, "proprietary") == ("open", None)
    choice, reason = driver.choose_kernel_modules("proprietary", [B200], True, "open")
    assert choice is None and "nvidia_driver_kernel_modules: proprietary" in reason and "B200" in reason


def test_open_modules_on_volta_are_refused():
    choice, reason = driver.choose_kernel_modules("open", [V100], True, "open")
    assert choice is None and "Turing or newer" in reason


def test_blackwell_beside_volta_is_refused():
    choice, reason = driver.choose_kernel_modules("auto", [B200, V100], True, "open")
    assert choice is None and "B200" in reason and "V100" in reason


def test_no_gpu_takes_the_sources_default():
    assert driver.choose_kernel_modules("auto", [], True, "open") == ("open", None)
    assert driver.choose_kernel_modules("auto", [], False, "proprietary") == ("proprietary", None)


# -- package tables ---------------------------------------------------------------------------------------


def test_debian_13_distro_installs_nvidia_driver_with_dkms_headers_and_gsp_firmware():
    plan = driver.plan(facts(gpus=[]), settings())
    assert plan["refusal"] is None
    assert plan["kernel_modules"] == "proprietary"
    assert plan["branch"] == "550"
    assert plan["packages"] == ["nvidia-driver=550.*", "nvidia-kernel-dkms=550.*", "firmware-nvidia-gsp=550.*", "dkms"]
    assert plan["headers"] == ["linux-headers-6.12.38+deb13-amd64", "linux-headers-amd64"]
    assert plan["running_kernel_packages"] == ["linux-headers-6.12.38+deb13-amd64"]
    assert plan["dkms"] is True


def test_debian_13_distro_uses_the_open_dkms_package_for_hopper():
    plan = driver.plan(facts(), settings())
    assert plan["kernel_modules"] == "open"
    assert "nvidia-open-kernel-dkms=550.*" in plan["packages"]


def test_debian_12_distro_has_no_matching_open_modules_so_blackwell_is_refused():
    plan = driver.plan(facts(version="12", gpus=[B200]), settings())
    assert plan["refusal"]["code"] == 3 and "nvidia_driver_source: auto" in plan["refusal"]["reason"]


def test_an_image_build_plans_the_headers_metapackage_but_not_the_running_kernels():
    custom = facts(gpus=[], kernel={"release": "6.18.44-fc-v657", "headers_installed": False})
    plan = driver.plan(custom, settings(image_build=True))
    assert plan["headers"] == ["linux-headers-amd64"]
    assert plan["running_kernel_packages"] == []


def test_headers_already_in_place_are_used_as_they_are():
    plan = driver.plan(facts(kernel={"release": "6.18.44-custom", "headers_installed": True}), settings())
    assert plan["running_kernel_packages"] == [] and plan["headers"] == ["linux-headers-amd64"]


def test_a_custom_kernel_outside_image_builds_is_checked_for_its_headers():
    custom = facts(gpus=[], kernel={"release": "6.18.44-fc-v657", "headers_installed": False})
    plan = driver.plan(custom, settings())
    assert plan["running_kernel_packages"] == ["linux-headers-6.18.44-fc-v657"]


def test_debian_distro_refuses_a_branch_debian_does_not_ship():
    plan = driver.plan(facts(), settings(branch="570"))
    assert "Debian 13's driver branch (550)" in plan["refusal"]["reason"]


@pytest.mark.parametrize(
    ("release", "flavour"),
    [
        ("6.8.0-1015-aws", "aws"),
        ("5.15.0-91-generic", "generic"),
        ("6.5.0-1020-azure", "azure"),
        ("6.1.0-28-cloud-amd64", "cloud-amd64"),
        ("6.12.38+deb13-arm64", "arm64"),
        ("6.18.44-fc-v657", None),
    ],
)
def test_kernel_flavour_comes_from_the_release(release, flavour):
    assert driver.kernel_flavour(release) == flavour


def test_ubuntu_distro_uses_canonicals_signed_precompiled_modules_for_the_kernel_flavour():
    host = facts("ubuntu", "22.04", kernel={"release": "6.8.0-1015-aws", "headers_installed": False})
    plan = driver.plan(host, settings(branch="535", kernel_modules="proprietary"), probes=ubuntu_archive("aws", "535"))
    assert plan["packages"] == [
        "nvidia-headless-no-dkms-535-server",
        "nvidia-utils-535-server",
        "linux-modules-nvidia-535-server-aws",
        "linux-modules-nvidia-535-server-6.8.0-1015-aws",
    ]
    assert plan["headers"] == ["linux-headers-6.8.0-1015-aws", "linux-headers-aws"]
    assert plan["dkms"] is False and plan["signed_modules"] is True


def test_rhel_has_no_distribution_driver_and_is_refused():
    plan = driver.plan(facts("rhel", "9", kernel={"release": "5.14.0-427.el9.x86_64"}), settings())
    assert plan["refusal"]["code"] == 3
    assert "packages no NVIDIA driver of its own" in plan["refusal"]["reason"]


@pytest.mark.parametrize(
    ("os_id", "version", "branch", "modules", "expected"),
    [
        ("ubuntu", "22.04", "", "open", "nvidia-open"),
        ("ubuntu", "22.04", "", "proprietary", "cuda-drivers"),
        ("debian", "12", "550", "open", "nvidia-open-550"),
        ("debian", "12", "550", "proprietary", "cuda-drivers-550"),
        ("rhel", "9", "", "open", "nvidia-open"),
    ],
)
def test_cuda_repository_packages(os_id, version, branch, modules, expected):
    host = facts(os_id, version, kernel={"release": "6.1.0-28-amd64"})
    plan = driver.plan(host, settings(source="auto", branch=branch, kernel_modules=modules))
    assert plan["refusal"] is None
    assert plan["packages"][0] == expected


def test_rhel_auto_plans_kernel_devel_for_the_running_kernel_and_future_ones():
    plan = driver.plan(facts("rhel", "9", kernel={"release": "5.14.0-427.el9.x86_64"}), settings(source="auto"))
    assert plan["headers"] == ["kernel-devel-5.14.0-427.el9.x86_64", "kernel-devel"]
    assert plan["initramfs"] == ["dracut", "-f"]


def test_nvswitch_hosts_on_debian_distro_are_refused_for_want_of_fabric_manager():
    plan = driver.plan(facts(nvswitches=["0000:05:00.0"]), settings())
    assert "Fabric Manager" in plan["refusal"]["reason"]


# -- Secure Boot ----------------------------------------------------------------------------------------------


def test_secure_boot_with_dkms_modules_is_refused_with_the_mok_steps():
    plan = driver.plan(facts(secure_boot=True), settings())
    assert plan["refusal"]["code"] == 3 and "mokutil --import" in plan["refusal"]["reason"]


def test_secure_boot_with_an_enrolled_dkms_key_goes_on():
    assert driver.plan(facts(secure_boot=True), settings(), mok_enrolled=True)["refusal"] is None


def test_secure_boot_on_ubuntu_distro_uses_the_signed_modules():
    host = facts("ubuntu", "22.04", secure_boot=True, kernel={"release": "5.15.0-91-generic"})
    assert driver.plan(host, settings(), probes=ubuntu_archive("generic", "580"))["refusal"] is None


def test_secure_boot_on_ubuntu_auto_points_at_the_signed_distribution_modules():
    host = facts("ubuntu", "22.04", secure_boot=True, kernel={"release": "5.15.0-91-generic"})
    reason = driver.plan(host, settings(source="auto"))["refusal"]["reason"]
    assert "nvidia_driver_source: distro" in reason


# -- holding the branch -------------------------------------------------------------------------------------


def test_apt_preferences_hold_every_driver_package_on_the_branch():
    text = driver.apt_hold_text("550")
    lines = text.splitlines()
    assert all(line.startswith("#") for line in lines[:3])
    assert lines[3].startswith("Package: nvidia-* libnvidia-* ")
    assert "cuda-drivers*" in lines[3] and "firmware-nvidia-gsp*" in lines[3]
    assert lines[4:] == ["Pin: version 550.*", "Pin-Priority: 1000"]


def test_a_pinned_branch_on_apt_is_held_in_preferences_d():
    plan = driver.plan(facts("ubuntu", "22.04"), settings(source="auto", branch="550"))
    assert plan["hold"] == {"path": driver.HOLD_APT_PATH, "content": driver.apt_hold_text("550")}


def test_auto_without_a_branch_follows_the_newest_and_holds_nothing():
    assert driver.plan(facts("ubuntu", "22.04"), settings(source="auto"))["hold"] is None


def test_rhel_9_holds_the_branch_with_the_nvidia_driver_module_stream():
    host = facts("rhel", "9", kernel={"release": "5.14.0-427.el9.x86_64"})
    plan = driver.plan(host, settings(source="auto", branch="550"))
    assert plan["hold"]["path"] == "/etc/dnf/modules.d/nvidia-driver.module"
    assert "stream=550-open\n" in plan["hold"]["content"] and "state=enabled\n" in plan["hold"]["content"]


def test_a_branch_that_is_not_a_number_is_refused():
    assert "not a driver branch" in driver.plan(facts(), settings(branch="latest"))["refusal"]["reason"]


# -- none, reboot, runfile, DKMS --------------------------------------------------------------------------------


def test_source_none_plans_nothing():
    plan = driver.plan(facts(), settings(source="none"))
    assert plan["packages"] == [] and plan["headers"] == [] and plan["refusal"] is None


def test_the_nouveau_blacklist_names_nouveau_and_nova_core():
    plan = driver.plan(facts(), settings())
    assert plan["blacklist"]["path"].startswith("/etc/modprobe.d/")
    assert {"blacklist nouveau", "blacklist nova_core"} <= set(plan["blacklist"]["content"].splitlines())


@pytest.mark.parametrize(
    ("loaded", "installed", "fresh", "nouveau", "needed"),
    [
        ({"loaded": True, "version": "550.163.01"}, "550.163.01-2", False, False, False),
        ({"loaded": True, "version": "535.261.03"}, "550.163.01-2", True, False, True),
        ({"loaded": False, "version": None}, "550.163.01-2", True, False, True),
        ({"loaded": False, "version": None}, "550.163.01-2", False, False, False),
        ({"loaded": True, "version": "550.163.01"}, "1:550.163.01-1", True, False, False),
        ({"loaded": False, "version": None}, "550.163.01-2", True, True, True),
    ],
)
def test_reboot_is_required_when_the_installed_driver_cannot_run_in_the_running_kernel(
    loaded, installed, fresh, nouveau, needed
):
    assert driver.reboot_required(loaded, installed, fresh, nouveau) is needed


def test_runfile_version_and_command_line():
    url = "https://us.download.nvidia.com/tesla/550.163.01/NVIDIA-Linux-x86_64-550.163.01.run"
    assert driver.runfile_version(url) == "550.163.01"
    argv = driver.runfile_argv("/var/tmp/x.run", "proprietary")
    assert argv[:4] == ["sh", "/var/tmp/x.run", "--silent", "--dkms"]
    assert argv[-1] == "-m=kernel" and not any("xconfig" in a for a in argv)


def test_dkms_missing_lists_kernels_with_headers_but_no_built_module():
    status = "nvidia-current/550.163.01, 6.12.38+deb13-amd64, x86_64: installed\nnvidia-current/550.163.01: added\n"
    assert driver.dkms_missing(status, ["6.12.38+deb13-amd64", "6.12.41+deb13-amd64"]) == ["6.12.41+deb13-amd64"]
    assert driver.dkms_missing("nvidia, 535.1, 6.1.0-28-amd64, x86_64: installed", ["6.1.0-28-amd64"]) == []


def test_dkms_missing_is_empty_without_a_registered_nvidia_module():
    assert driver.dkms_missing("", ["6.12.38+deb13-amd64"]) == []


def test_plan_does_not_change_the_facts_it_reads():
    host = facts()
    before = copy.deepcopy(host)
    driver.plan(host, settings())
    assert host == before


def _kernel(tmp_path, release, module=None, headers=True):
    tree = tmp_path / release
    tree.mkdir(parents=True)
    if headers:
        (tree / "build").mkdir()
    if module:
        path = tree / module
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_kernel_guard_warns_when_the_newest_kernel_has_no_module(tmp_path):
    _kernel(tmp_path, "6.1.0-25-amd64", "updates/dkms/nvidia-current.ko.xz")
    _kernel(tmp_path, "6.1.0-28-amd64")
    kernels = driver.kernels_status(str(tmp_path))
    assert [k["release"] for k in kernels] == ["6.1.0-28-amd64", "6.1.0-25-amd64"]
    assert [k["nvidia_module"] for k in kernels] == [False, True]
    warning = driver.kernel_guard(kernels, "6.1.0-25-amd64")
    assert "6.1.0-28-amd64 has no NVIDIA module" in warning and "gpu-install apply" in warning


def test_kernel_guard_is_quiet_when_every_kernel_has_the_module_or_none_ever_had(tmp_path):
    _kernel(tmp_path, "6.8.0-45-generic", "kernel/nvidia-550srv/nvidia.ko")
    _kernel(tmp_path, "6.8.0-40-generic", "kernel/nvidia-550srv/nvidia.ko")
    assert driver.kernel_guard(driver.kernels_status(str(tmp_path)), "6.8.0-45-generic") is None
    assert driver.kernel_guard(driver.kernels_status(str(tmp_path / "absent")), None) is None
    bare = tmp_path / "bare"
    (bare / "6.1.0-1-amd64").mkdir(parents=True)
    assert driver.kernel_guard(driver.kernels_status(str(bare)), None) is None


def test_kernel_releases_of_mixed_shapes_sort_without_error(tmp_path):
    for release in ("6.1.0-13-amd64", "6.1.0-rc1", "6.1.0-²", "6.12.9+bpo-amd64", "6.1.0-9-amd64"):
        (tmp_path / release).mkdir()
    releases = [k["release"] for k in driver.kernels_status(str(tmp_path))]
    assert releases[0] == "6.12.9+bpo-amd64"
    assert releases.index("6.1.0-13-amd64") < releases.index("6.1.0-9-amd64")
    assert sorted(releases) == sorted(p.name for p in tmp_path.iterdir())


# -- Ubuntu's own driver: the kernel metapackage's flavour, the newest branch apt offers --------------------------

HWE_IMAGES = {
    "linux-image-generic-hwe-24.04": "linux-image-6.11.0-29-generic, linux-firmware",
    "linux-image-6.11.0-29-generic": "linux-modules-6.11.0-29-generic, linux-base",
    "linux-image-6.8.0-90-generic": "linux-modules-6.8.0-90-generic, linux-base",
}


def test_ubuntu_hwe_kernels_get_the_hwe_metapackages_modules_and_headers():
    host = facts("ubuntu", "24.04", kernel={"release": "6.11.0-29-generic", "headers_installed": True})
    plan = driver.plan(host, settings(), probes=ubuntu_archive("generic-hwe-24.04", "570", "580", images=HWE_IMAGES))
    assert plan["branch"] == "580"
    assert "linux-modules-nvidia-580-server-open-generic-hwe-24.04" in plan["packages"]
    assert "linux-modules-nvidia-580-server-open-6.11.0-29-generic" in plan["packages"]
    assert plan["headers"] == ["linux-headers-generic-hwe-24.04"]


def test_ubuntu_flavour_follows_the_newest_kernel_image_as_ubuntu_drivers_does():
    images = {**HWE_IMAGES, "linux-image-generic": "linux-image-6.8.0-90-generic"}
    assert driver.ubuntu_kernel_flavour(images, "6.8.0-90-generic") == "generic-hwe-24.04"
    assert driver.ubuntu_kernel_flavour({"linux-image-virtual": "linux-image-6.8.0-90-generic"}, None) == "generic"
    assert driver.ubuntu_kernel_flavour({"linux-image-6.8.0-90-generic": ""}, "6.8.0-90-generic") is None


def test_ubuntu_default_branch_is_the_newest_the_archive_offers_whole_for_the_flavour():
    archive = ubuntu_archive("aws", "570", "580")
    archive["apt_names"] += ["nvidia-headless-no-dkms-615-server-open"]  # userspace without modules for aws
    host = facts("ubuntu", "22.04", kernel={"release": "6.8.0-1015-aws"})
    plan = driver.plan(host, settings(), probes=archive)
    assert plan["branch"] == "580" and "linux-modules-nvidia-580-server-open-aws" in plan["packages"]


def test_ubuntu_branch_the_archive_does_not_offer_is_refused_naming_those_it_does():
    host = facts("ubuntu", "24.04", kernel={"release": "6.8.0-45-generic"})
    plan = driver.plan(host, settings(branch="535"), probes=ubuntu_archive("generic", "570", "580"))
    assert plan["refusal"]["code"] == 3 and "580, 570" in plan["refusal"]["reason"]


def test_ubuntu_archive_without_any_server_driver_is_a_package_source_error():
    host = facts("ubuntu", "24.04", kernel={"release": "6.8.0-45-generic"})
    plan = driver.plan(host, settings(), probes={"apt_names": [], "kernel_images": {}})
    assert plan["refusal"]["code"] == 5 and "apt-get update" in plan["refusal"]["reason"]


def test_the_apt_pin_leaves_out_the_kernel_versioned_precompiled_modules():
    import fnmatch

    globs = driver.apt_hold_text("580").split("Package: ", 1)[1].splitlines()[0].split()
    for name in ("linux-modules-nvidia-580-server-open-generic", "linux-objects-nvidia-580-server-6.8.0-90-generic"):
        assert not any(fnmatch.fnmatchcase(name, g) for g in globs)
    assert any(fnmatch.fnmatchcase("nvidia-headless-no-dkms-580-server-open", g) for g in globs)
    # ... and a switch still finds them as the old branch's packages.
    assert driver.package_branch("linux-modules-nvidia-570-server-open-generic", "6.8.0-90.91") == "570"


# -- NVIDIA's CUDA repository, per branch scheme ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "modules", "packages", "pinning", "pinned_by_gpu_install"),
    [
        ("575", "open", ["nvidia-open-575"], [], True),
        ("580", "proprietary", ["cuda-drivers-580"], [], True),
        ("590", "open", ["nvidia-open"], ["nvidia-driver-pinning-590"], False),
        ("595", "proprietary", ["cuda-drivers"], ["nvidia-driver-pinning-595"], False),
        ("", "open", ["nvidia-open"], [], False),
    ],
)
def test_cuda_apt_branches_before_590_are_pinned_by_gpu_install_and_from_590_by_nvidias_package(
    branch, modules, packages, pinning, pinned_by_gpu_install
):
    host = facts("ubuntu", "24.04", kernel={"release": "6.8.0-45-generic", "headers_installed": True})
    plan = driver.plan(host, settings(source="auto", branch=branch, kernel_modules=modules))
    assert plan["packages"] == [*packages, "dkms"] and plan["pinning"] == pinning
    assert (plan["hold"] is not None) == pinned_by_gpu_install
    assert plan["repository_packages"]["cuda"][: len(pinning)] == pinning  # the preflight checks the pin too


@pytest.mark.parametrize(
    ("os_id", "version", "branch", "expected"),
    [
        ("ubuntu", "24.04", "575", ["nvidia-fabricmanager-575", "libnvidia-nscq-575"]),
        ("ubuntu", "24.04", "580", ["nvidia-fabricmanager", "libnvidia-nscq"]),
        ("ubuntu", "24.04", "595", ["nvidia-fabricmanager", "libnvidia-nscq"]),
        ("rhel", "9", "575", ["nvidia-fabric-manager", "libnvidia-nscq-575"]),
        ("rhel", "9", "580", ["nvidia-fabricmanager", "libnvidia-nscq"]),
        ("amzn", "2023", "570", ["nvidia-fabric-manager", "libnvidia-nscq-570"]),
    ],
)
def test_fabric_manager_names_follow_the_branch_and_the_repository(os_id, version, branch, expected):
    host = facts(os_id, version, nvswitches=["0000:05:00.0"], kernel={"release": "6.8.0-45-generic"})
    plan = driver.plan(host, settings(source="auto", branch=branch))
    assert plan["refusal"] is None and plan["fabricmanager"] == expected
    assert set(expected) <= set(plan["repository_packages"]["cuda"])


def test_ubuntu_archive_fabric_manager_keeps_the_branch_in_both_names():
    host = facts("ubuntu", "24.04", nvswitches=["0000:05:00.0"], kernel={"release": "6.8.0-45-generic"})
    plan = driver.plan(host, settings(branch="580"), probes=ubuntu_archive("generic", "580"))
    assert plan["fabricmanager"] == ["nvidia-fabricmanager-580", "libnvidia-nscq-580"]


# -- dnf: module streams, versionlock, EPEL ---------------------------------------------------------------------


def el(os_id: str, version: str, arch: str = "x86_64", **extra: Any) -> dict[str, Any]:
    host = facts("rhel" if os_id != "amzn" else "amzn", version.split(".", maxsplit=1)[0], **extra)
    host["os"].update(id=os_id, version_id=version, arch=arch)
    host["kernel"] = {"release": f"5.14.0-427.el9.{arch}", "headers_installed": True}
    return host


@pytest.mark.parametrize(
    ("modules", "branch", "stream"),
    [("open", "", "open-dkms"), ("proprietary", "", "latest-dkms"), ("open", "580", "580-open"),
     ("proprietary", "575", "575-dkms")],
)  # fmt: skip
def test_el9_and_amazon_linux_pick_the_branch_with_nvidias_module_stream(modules, branch, stream):
    for host in (el("rocky", "9.4"), el("amzn", "2023")):
        plan = driver.plan(host, settings(source="auto", branch=branch, kernel_modules=modules))
        assert plan["module"] == f"nvidia-driver:{stream}" and plan["versionlock"] is None
        assert f"stream={stream}\n" in plan["hold"]["content"]
        assert plan["packages"][0] == ("nvidia-open" if modules == "open" else "cuda-drivers")


def test_el10_holds_a_branch_with_versionlock_on_nvidias_glob_and_releases_the_old_branch():
    locked = "nvidia-open-3:575.57.08-1.el10.*\nlibnvidia-ml-3:575.57.08-1.el10.*\nkernel-0:6.12.0-55.el10.*\n"
    plan = driver.plan(el("rhel", "10.0"), settings(source="auto", branch="580"), probes={"versionlock": locked})
    assert plan["refusal"] is None and plan["module"] is None and plan["hold"] is None
    lock = plan["versionlock"]
    assert lock["glob"] == "*nvidia*580*" and lock["plugin"] == "python3-dnf-plugin-versionlock"
    assert lock["held"] is False
    assert lock["stale"] == ["libnvidia-ml-3:575.57.08-1.el10.*", "nvidia-open-3:575.57.08-1.el10.*"]
    again = driver.plan(el("rhel", "10.0"), settings(source="auto", branch="580"),
                        probes={"versionlock": "nvidia-open-3:580.105.08-1.el10.*\n"})  # fmt: skip
    assert again["versionlock"]["held"] is True and again["versionlock"]["stale"] == []


def test_el10_newest_driver_needs_neither_stream_nor_lock():
    plan = driver.plan(el("rhel", "10.0"), settings(source="auto"))
    assert (plan["module"], plan["versionlock"], plan["hold"]) == (None, None, None)


@pytest.mark.parametrize(
    ("os_id", "version", "arch", "repositories", "groups"),
    [
        ("rhel", "9.4", "x86_64", ["epel"],
         [["codeready-builder-for-rhel-9-x86_64-rpms", "codeready-builder-for-rhel-9-rhui-rpms"]]),
        ("rhel", "10.0", "aarch64", ["epel"],
         [["codeready-builder-for-rhel-10-aarch64-rpms", "codeready-builder-for-rhel-10-rhui-rpms"]]),
        ("rocky", "9.4", "x86_64", ["epel"], [["crb"]]),
        ("almalinux", "8.10", "x86_64", ["epel"], [["powertools"]]),
        ("ol", "9.4", "x86_64", [], [["ol9_codeready_builder"], ["ol9_developer_EPEL"]]),
        ("amzn", "2023", "x86_64", [], []),
    ],
)  # fmt: skip
def test_dkms_on_the_rhel_family_comes_from_epel_with_codeready_builder(os_id, version, arch, repositories, groups):
    plan = driver.plan(el(os_id, version, arch), settings(source="auto"))
    assert plan["repositories"] == repositories
    assert [g["ids"] for g in plan["codeready"]] == groups
    assert "dkms" in plan["packages"]
    # NVIDIA's repository is checked for the driver; dkms is checked where it comes from.
    assert ("dkms" in plan["repository_packages"]["cuda"]) == (not repositories and not groups)
    assert plan["repository_packages"].get("epel", []) == (["dkms"] if repositories else [])
    for group in plan["codeready"]:
        assert all(group["enable"][rid][-1] == rid for rid in group["ids"])


def test_versionlock_entries_read_only_the_locks_of_nvidia_driver_packages():
    text = (
        "# comment\nnvidia-open-3:580.1-1.el10.*\nnvidia-container-toolkit-0:1.17.8-1.*\n!nvidia-driver-3:575.1-1.*\n"
    )
    assert driver.versionlock_entries(text) == {"nvidia-open-3:580.1-1.el10.*": "580"}


def test_ubuntu_arm64_64k_kernels_get_the_64k_flavours_modules():
    host = facts("ubuntu", "24.04", kernel={"release": "6.8.0-90-generic-64k", "headers_installed": True})
    host["os"]["arch"] = "aarch64"
    images = {"linux-image-generic-64k-hwe-24.04": "linux-image-6.8.0-90-generic-64k"}
    plan = driver.plan(host, settings(), probes=ubuntu_archive("generic-64k-hwe-24.04", "580", images=images))
    assert "linux-modules-nvidia-580-server-open-generic-64k-hwe-24.04" in plan["packages"]
    assert "linux-modules-nvidia-580-server-open-6.8.0-90-generic-64k" in plan["packages"]
    assert plan["headers"] == ["linux-headers-generic-64k-hwe-24.04"]
