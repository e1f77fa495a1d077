"""Host detection: distributions, architecture, GPUs, driver and platform, on captured trees.

The trees under corpus/ are captured or hand-written host files (see corpus/README.md); each test
reads one through ``detect(root)``, exactly as ``gpu-install detect --root`` does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_tree, module_utils

gpu_detect = module_utils("gpu_detect")
errors = module_utils("errors")

CORPUS = Path(__file__).resolve().parent / "corpus"
OS_RELEASE = CORPUS / "os-release"


def copy_case(case: str, dest: Path) -> Path:
    shutil.copytree(CORPUS / case, dest, symlinks=True)
    return dest


def os_tree(tmp_path: Path, name: str, arch: str = "x86_64") -> Path:
    return make_tree(
        tmp_path / name,
        {"etc/os-release": (OS_RELEASE / name).read_text(), "proc/sys/kernel/arch": arch + "\n"},
    )


def codes(facts: dict) -> list:
    return [p["code"] for p in facts["problems"]]


# --------------------------------------------------------------------------- distributions

SUPPORTED = [
    # file, id, version_id, family, codename, like
    ("ubuntu-20.04", "ubuntu", "20.04", "debian", "focal", ("ubuntu", "20.04")),
    ("ubuntu-22.04", "ubuntu", "22.04", "debian", "jammy", ("ubuntu", "22.04")),
    ("ubuntu-24.04", "ubuntu", "24.04", "debian", "noble", ("ubuntu", "24.04")),
    ("linuxmint-21.3", "linuxmint", "21.3", "debian", "jammy", ("ubuntu", "22.04")),
    ("linuxmint-22", "linuxmint", "22", "debian", "noble", ("ubuntu", "24.04")),
    ("pop-22.04", "pop", "22.04", "debian", "jammy", ("ubuntu", "22.04")),
    ("elementary-7", "elementary", "7", "debian", "jammy", ("ubuntu", "22.04")),
    ("zorin-17", "zorin", "17", "debian", "jammy", ("ubuntu", "22.04")),
    ("lmde-6", "linuxmint", "6", "debian", "bookworm", ("debian", "12")),
    ("debian-11", "debian", "11", "debian", "bullseye", ("debian", "11")),
    ("debian-12", "debian", "12", "debian", "bookworm", ("debian", "12")),
    ("debian-13", "debian", "13", "debian", "trixie", ("debian", "13")),
    ("rhel-8.10", "rhel", "8.10", "redhat", "rhel8", ("rhel", "8")),
    ("rhel-9.4", "rhel", "9.4", "redhat", "rhel9", ("rhel", "9")),
    ("rhel-10.0", "rhel", "10.0", "redhat", "rhel10", ("rhel", "10")),
    ("rocky-8.9", "rocky", "8.9", "redhat", "rhel8", ("rhel", "8")),
    ("rocky-9.4", "rocky", "9.4", "redhat", "rhel9", ("rhel", "9")),
    ("almalinux-9.4", "almalinux", "9.4", "redhat", "rhel9", ("rhel", "9")),
    ("ol-8.9", "ol", "8.9", "redhat", "rhel8", ("rhel", "8")),
    ("ol-9.4", "ol", "9.4", "redhat", "rhel9", ("rhel", "9")),
    ("centos-stream-9", "centos", "9", "redhat", "rhel9", ("rhel", "9")),
    ("amzn-2023", "amzn", "2023", "redhat", "amzn2023", ("amzn", "2023")),
]

UNSUPPORTED = [
    # file, family, the sentence's start
    ("ubuntu-18.04", "debian", "Ubuntu 18.04 is not supported"),
    ("ubuntu-23.10", "debian", "Ubuntu 23.10 is not supported"),
    ("linuxmint-19.3", "debian", "Linux Mint 19.3 (based on Ubuntu 18.04) is not supported"),
    ("debian-10", "debian", "Debian GNU/Linux 10 is not supported"),
    ("debian-sid", "debian", "Debian GNU/Linux trixie/sid is not supported"),
    ("kali-rolling", "debian", "Kali GNU/Linux 2024.2 is not supported"),
    ("centos-7", "redhat", "CentOS Linux 7 is not supported"),
    ("amzn-2", "redhat", "Amazon Linux 2 is not supported"),
    ("fedora-40", "redhat", "Fedora Linux 40 is not supported"),
    ("opensuse-leap-15.5", None, "openSUSE Leap 15.5 is not supported"),
    ("sles-15-sp5", None, "SLES 15.5 is not supported"),
    ("arch", None, "Arch Linux is not supported"),
    ("alpine-3.20", None, "Alpine Linux 3.20.3 is not supported"),
]


@pytest.mark.parametrize(("name", "os_id", "version_id", "family", "codename", "like"), SUPPORTED)
def test_supported_distribution_resolves_to_its_base(tmp_path, name, os_id, version_id, family, codename, like):
    facts = gpu_detect.detect(str(os_tree(tmp_path, name)))
    assert facts["os"]["id"] == os_id
    assert facts["os"]["version_id"] == version_id
    assert facts["os"]["family"] == family
    assert facts["os"]["codename"] == codename
    assert facts["os"]["like"] == {"id": like[0], "version_id": like[1]}
    assert facts["os"]["supported"] is True
    assert facts["os"]["name"]
    assert "unsupported_os" not in codes(facts)


@pytest.mark.parametrize(("name", "family", "start"), UNSUPPORTED)
def test_unsupported_distribution_is_refused_with_one_sentence(tmp_path, name, family, start):
    facts = gpu_detect.detect(str(os_tree(tmp_path, name)))
    assert facts["os"]["supported"] is False
    assert facts["os"]["family"] == family
    assert facts["supported"] is False
    code, reason = gpu_detect.refusal(facts)
    assert code == errors.UNSUPPORTED == 3
    assert reason.startswith(start), reason
    assert reason.endswith(
        "gpu-install supports Ubuntu 20.04, 22.04, 24.04 (and derivatives), Debian 11, 12, 13, "
        "RHEL 8, 9, 10 and rebuilds, Amazon Linux 2023."
    )
    assert "\n" not in reason


def test_every_os_release_in_the_corpus_has_an_expectation():
    expected = {row[0] for row in SUPPORTED} | {row[0] for row in UNSUPPORTED}
    assert {p.name for p in OS_RELEASE.iterdir()} == expected


def test_mint_resolves_to_ubuntu_jammy(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "linuxmint-21.3")))
    assert facts["os"]["codename"] == "jammy"
    assert facts["os"]["like"] == {"id": "ubuntu", "version_id": "22.04"}
    assert facts["os"]["name"] == "Linux Mint 21.3"


def test_lmde_resolves_to_debian_through_debian_codename(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "lmde-6")))
    assert facts["os"]["like"] == {"id": "debian", "version_id": "12"}
    assert facts["os"]["codename"] == "bookworm"


def test_rhel_rebuild_matches_on_major_version(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "rocky-9.4")))
    assert facts["os"]["like"]["version_id"] == "9"
    assert facts["os"]["codename"] == "rhel9"


def test_debian_sid_without_version_id_is_refused(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "debian-sid")))
    assert facts["os"]["version_id"] is None
    assert "unsupported_os" in codes(facts)


def test_os_release_falls_back_to_usr_lib(tmp_path):
    root = make_tree(tmp_path, {"usr/lib/os-release": (OS_RELEASE / "debian-12").read_text()})
    assert gpu_detect.detect(str(root))["os"]["id"] == "debian"


def test_etc_os_release_symlink_resolves_inside_root(tmp_path):
    root = make_tree(
        tmp_path,
        {
            "usr/lib/os-release": (OS_RELEASE / "rhel-9.4").read_text(),
            "etc/os-release": ("->", "/usr/lib/os-release"),  # absolute: must mean ROOT/usr/lib
        },
    )
    assert gpu_detect.detect(str(root))["os"]["id"] == "rhel"


def test_missing_os_release_refuses(tmp_path):
    facts = gpu_detect.detect(str(tmp_path))
    assert codes(facts)[0] == "os_release_missing"
    assert facts["os"]["id"] is None
    code, reason = gpu_detect.refusal(facts)
    assert code == 3
    assert "os-release" in reason


def test_os_release_parser_handles_shell_quoting_comments_and_garbage():
    text = (
        "# a comment\n"
        "\n"
        "NAME='Single Quoted'\n"
        'PRETTY_NAME="Double \\"quoted\\" \\$HOME \\\\ end"\n'
        "ID=plain # trailing comment\n"
        "VERSION_ID=escaped\\ space\n"
        "this line is garbage\n"
        "=novalue\n"
        "1BAD=x\n"
        'BROKEN="unterminated\n'
        "EMPTY=\n"
        "   INDENTED=yes\n"
    )
    parsed = gpu_detect.parse_os_release(text)
    assert parsed == {
        "NAME": "Single Quoted",
        "PRETTY_NAME": 'Double "quoted" $HOME \\ end',
        "ID": "plain",
        "VERSION_ID": "escaped space",
        "EMPTY": "",
        "INDENTED": "yes",
    }


def test_unsupported_message_strips_control_characters(tmp_path):
    root = make_tree(tmp_path, {"etc/os-release": 'NAME="Evil\\\x1b[31m OS"\nVERSION_ID="1\x07"\nID=evil\n'})
    reason = gpu_detect.refusal(gpu_detect.detect(str(root)))[1]
    assert "\x1b" not in reason and "\x07" not in reason


# --------------------------------------------------------------------------- architecture


def test_arch_comes_from_proc_sys_kernel_arch_under_root(tmp_path):
    assert gpu_detect.detect(str(os_tree(tmp_path, "debian-12", "aarch64")))["os"]["arch"] == "aarch64"


def test_arch_comes_from_the_elf_header_of_bin_sh_through_merged_usr_links():
    facts = gpu_detect.detect(str(CORPUS / "workstation-debian12-nouveau"))
    assert facts["os"]["arch"] == "x86_64"


def test_arch_from_this_machines_real_shell(tmp_path):
    real = os.path.realpath("/bin/sh")
    root = make_tree(tmp_path, {"bin/sh": Path(real).read_bytes()[:64]})
    assert gpu_detect.detect(str(root))["os"]["arch"] == os.uname().machine


@pytest.mark.parametrize(
    ("machine", "is64", "little", "expected"),
    [
        (62, True, True, "x86_64"),
        (183, True, True, "aarch64"),
        (40, False, True, "armv7l"),
        (21, True, True, "ppc64le"),
        (21, True, False, "ppc64"),
        (22, True, False, "s390x"),
        (243, True, True, "riscv64"),
        (3, False, True, "i686"),
        (9999, True, True, None),
    ],
)
def test_elf_machine_maps_to_uname_spelling(machine, is64, little, expected):
    endian = "little" if little else "big"
    header = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2]) + b"\0" * 12
    header += machine.to_bytes(2, endian) + b"\0" * 44
    assert gpu_detect.elf_arch(header) == expected


@pytest.mark.parametrize(("deb", "uname"), [("amd64", "x86_64"), ("arm64", "aarch64"), ("ppc64el", "ppc64le")])
def test_arch_falls_back_to_dpkg_arch(tmp_path, deb, uname):
    root = make_tree(tmp_path, {"etc/os-release": "ID=debian\nVERSION_ID=12\n", "var/lib/dpkg/arch": deb + "\n"})
    assert gpu_detect.detect(str(root))["os"]["arch"] == uname


def test_arch_falls_back_to_base_files_architecture():
    assert gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))["os"]["arch"] == "x86_64"


def test_arch_unknown_is_null_and_not_a_refusal(tmp_path):
    facts = gpu_detect.detect(str(make_tree(tmp_path, {"etc/os-release": (OS_RELEASE / "debian-12").read_text()})))
    assert facts["os"]["arch"] is None
    assert facts["supported"] is True


@pytest.mark.parametrize("arch", ["armv7l", "ppc64le", "s390x", "i686"])
def test_unsupported_arch_is_refused(tmp_path, arch):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "ubuntu-22.04", arch)))
    assert "unsupported_arch" in codes(facts)
    assert facts["os"]["supported"] is False
    assert gpu_detect.refusal(facts)[1] == (
        f"The {arch} architecture is not supported: gpu-install supports x86_64 and aarch64."
    )


# --------------------------------------------------------------------------- captured hosts


def test_captured_h100_host_matches_what_detect_saw_live_there():
    """corpus/h100-ubuntu2404 is the lent GPU machine's files; live detect() there gave these."""
    facts = gpu_detect.detect(str(CORPUS / "h100-ubuntu2404"))
    assert facts["supported"] is True
    assert facts["problems"] == []
    assert facts["gpus"] == [
        {
            "pci_address": "0000:00:06.0",
            "vendor_id": "0x10de",
            "device_id": "0x2330",
            "class": "0x030200",
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-8252b016-35e6-d6ac-bf17-873012d5922e",
            "minor": 0,
            "kernel_driver": "nvidia",
        }
    ]
    assert facts["driver"] == {"loaded": True, "version": "580.159.04", "flavour": "open", "package": None}
    assert facts["os"]["codename"] == "noble"
    assert facts["kernel"] == {"release": "6.18.44-fc-v657-gpu", "headers_installed": False}
    assert facts["secure_boot"] is False  # /sys/firmware without efi: BIOS boot
    assert facts["persistenced"]["installed"] is True  # the binary, no package
    json.dumps(facts)


def test_dgx_lists_gpus_with_uuids_and_nvswitches_need_fabric_manager():
    facts = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))
    assert [g["pci_address"] for g in facts["gpus"]] == ["0000:1b:00.0", "0000:43:00.0"]
    assert [g["minor"] for g in facts["gpus"]] == [0, 1]
    assert facts["gpus"][1]["uuid"] == "GPU-0c8e6f5a-1b2d-3e4f-5a6b-7c8d9e0f1a2b"  # bus location upper case
    assert facts["nvswitches"] == ["0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]
    problem = next(p for p in facts["problems"] if p["code"] == "fabric_manager_needed")
    assert problem["refuses"] is False
    assert facts["supported"] is True


def test_proprietary_driver_version_and_package_are_read():
    driver = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))["driver"]
    assert driver == {
        "loaded": True,
        "version": "535.183.01",
        "flavour": "proprietary",
        "package": {"name": "nvidia-driver-535-server", "version": "535.183.01-0ubuntu0.22.04.1"},
    }


def test_headers_found_through_an_absolute_build_link_inside_root():
    kernel = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))["kernel"]
    assert kernel == {"release": "5.15.0-105-generic", "headers_installed": True}


def test_dangling_build_link_means_no_headers():
    kernel = gpu_detect.detect(str(CORPUS / "workstation-debian12-nouveau"))["kernel"]
    assert kernel == {"release": "6.1.0-18-amd64", "headers_installed": False}


def test_persistenced_enabled_and_running_from_wants_link_and_live_pid():
    persistenced = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))["persistenced"]
    assert persistenced == {"installed": True, "version": None, "enabled": True, "running": True}


def test_persistenced_pid_file_without_proc_entry_is_unknown_under_root(tmp_path):
    root = copy_case("dgx-h100-ubuntu2204", tmp_path / "t")
    shutil.rmtree(root / "proc/2417")
    assert gpu_detect.detect(str(root))["persistenced"]["running"] is None


def test_persistenced_stale_pid_naming_another_process_is_not_running(tmp_path):
    root = copy_case("dgx-h100-ubuntu2204", tmp_path / "t")
    (root / "proc/2417/comm").write_text("bash\n")
    assert gpu_detect.detect(str(root))["persistenced"]["running"] is False


def test_nouveau_bound_gpu_is_listed_without_driver_facts():
    facts = gpu_detect.detect(str(CORPUS / "workstation-debian12-nouveau"))
    assert facts["gpus"] == [
        {
            "pci_address": "0000:01:00.0",
            "vendor_id": "0x10de",
            "device_id": "0x2684",
            "class": "0x030000",
            "name": None,
            "uuid": None,
            "minor": None,
            "kernel_driver": "nouveau",
        }
    ]  # the HDMI audio function (class 0x0403) is not a GPU
    assert facts["nouveau_loaded"] is True
    assert facts["driver"]["loaded"] is False
    nouveau = next(p for p in facts["problems"] if p["code"] == "nouveau_loaded")
    assert nouveau["refuses"] is False


def test_nouveau_in_proc_modules_alone_counts(tmp_path):
    root = make_tree(tmp_path, {"proc/modules": "nouveau 2904064 2 - Live 0x0\n"})
    assert gpu_detect.detect(str(root))["nouveau_loaded"] is True


def test_secure_boot_enabled_is_a_warning_about_signed_modules():
    facts = gpu_detect.detect(str(CORPUS / "workstation-debian12-nouveau"))
    assert facts["secure_boot"] is True
    problem = next(p for p in facts["problems"] if p["code"] == "secure_boot")
    assert problem["refuses"] is False
    assert "signed" in problem["message"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c": b"\x06\0\0\0\x01"}, True),
        ({"sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c": b"\x06\0\0\0\x00"}, False),
        ({"sys/firmware/efi/efivars/Boot0000-8be4df61-93ca-11d2-aa0d-00e098032b8c": b"\x07\0\0\0"}, False),
        ({"sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c": b"\x06\0"}, False),
        ({"sys/firmware/acpi/tables/DSDT": b"x"}, False),
        ({"sys/firmware/efi/systab": "ACPI20=0x7f\n"}, None),  # efivars not mounted: unknown
        ({}, None),
    ],
)
def test_secure_boot_states(tmp_path, files, expected):
    assert gpu_detect.detect(str(make_tree(tmp_path, files)))["secure_boot"] is expected


def test_wsl2_is_refused_with_the_windows_driver_sentence():
    facts = gpu_detect.detect(str(CORPUS / "wsl2-ubuntu2204"))
    assert facts["wsl"] is True
    code, reason = gpu_detect.refusal(facts)
    assert code == 3
    assert "install the NVIDIA driver on Windows, never a Linux driver inside WSL2" in reason


@pytest.mark.parametrize(
    "files",
    [
        {"proc/version": "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com)\n"},
        {"proc/sys/kernel/osrelease": "5.15.167.4-microsoft-standard-WSL2\n"},
        {"proc/sys/fs/binfmt_misc/WSLInterop": "enabled\n"},
    ],
)
def test_any_wsl_marker_is_enough(tmp_path, files):
    assert gpu_detect.detect(str(make_tree(tmp_path, files)))["wsl"] is True


def test_tegra_is_refused_before_the_distribution_is_judged():
    facts = gpu_detect.detect(str(CORPUS / "jetson-orin-l4t36"))
    assert facts["tegra"] is True
    assert facts["os"]["arch"] == "aarch64"
    assert codes(facts)[0] == "tegra"
    assert "JetPack" in gpu_detect.refusal(facts)[1]


def test_tegra_device_tree_alone_is_detected(tmp_path):
    root = copy_case("jetson-orin-l4t36", tmp_path / "t")
    (root / "etc/nv_tegra_release").unlink()
    assert gpu_detect.detect(str(root))["tegra"] is True


def test_server_aarch64_without_tegra_is_supported(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "ubuntu-24.04", "aarch64")))
    assert facts["tegra"] is False
    assert facts["supported"] is True


def test_gpus_listed_from_proc_when_sysfs_is_hidden(tmp_path):
    root = copy_case("h100-ubuntu2404", tmp_path / "t")
    shutil.rmtree(root / "sys/bus")
    gpus = gpu_detect.detect(str(root))["gpus"]
    assert [(g["pci_address"], g["name"], g["minor"]) for g in gpus] == [("0000:00:06.0", "NVIDIA H100 80GB HBM3", 0)]


def test_no_gpu_is_a_warning_not_a_refusal(tmp_path):
    facts = gpu_detect.detect(str(os_tree(tmp_path, "ubuntu-22.04")))
    assert facts["gpus"] == []
    assert codes(facts) == ["no_gpu"]
    assert facts["supported"] is True
    assert gpu_detect.refusal(facts) is None


def test_driver_version_falls_back_to_sys_module(tmp_path):
    root = make_tree(tmp_path, {"sys/module/nvidia/version": "550.127.05\n"})
    driver = gpu_detect.detect(str(root))["driver"]
    assert driver == {"loaded": True, "version": "550.127.05", "flavour": None, "package": None}


# --------------------------------------------------------------------------- contract


def test_facts_keep_the_documented_keys():
    facts = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))
    assert facts["schema"] == 1
    for key in (
        "supported problems os docker gpus nvswitches driver nouveau_loaded secure_boot tegra wsl kernel "
        "container_toolkit persistenced"
    ).split():
        assert key in facts
    assert set(facts["os"]) >= {"id", "version_id", "codename", "family", "arch", "supported", "name", "like"}
    assert set(facts["docker"]) >= {"flavour", "version", "package", "config_path", "rootless", "podman_shim"}
    assert set(facts["gpus"][0]) >= {"pci_address", "vendor_id", "device_id", "class", "name", "uuid", "minor"}
    assert set(facts["driver"]) >= {"loaded", "version", "flavour", "package"}
    assert set(facts["kernel"]) >= {"release", "headers_installed"}
    assert set(facts["container_toolkit"]) >= {"installed", "version"}
    assert set(facts["persistenced"]) >= {"installed", "version", "enabled", "running"}
    for problem in facts["problems"]:
        assert set(problem) == {"code", "message", "refuses"}


def test_every_problem_code_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "detect.md").read_text()
    for code, (refuses, description) in gpu_detect.PROBLEMS.items():
        assert f"`{code}`" in doc
        assert isinstance(refuses, bool) and description


def test_problems_refuse_exactly_as_the_table_says(tmp_path):
    for case in ("dgx-h100-ubuntu2204", "wsl2-ubuntu2204", "jetson-orin-l4t36", "workstation-debian12-nouveau"):
        for problem in gpu_detect.detect(str(CORPUS / case))["problems"]:
            assert problem["refuses"] is gpu_detect.PROBLEMS[problem["code"]][0]


def test_refusal_is_none_for_facts_without_problems():
    assert gpu_detect.refusal({"problems": []}) is None
    assert gpu_detect.refusal({}) is None


def test_root_never_consults_the_real_host(tmp_path):
    """An empty root reports nothing of this machine: no uname, no real /sys or /proc."""
    facts = gpu_detect.detect(str(tmp_path))
    assert facts["os"]["arch"] is None
    assert facts["kernel"] == {"release": None, "headers_installed": None}
    assert facts["docker"]["flavour"] is None
    assert facts["secure_boot"] is None
    assert facts["gpus"] == []


def test_live_host_detection_returns_json_and_never_raises():
    facts = gpu_detect.detect()
    json.dumps(facts)
    assert facts["os"]["arch"] == os.uname().machine
    assert facts["kernel"]["release"] == os.uname().release
