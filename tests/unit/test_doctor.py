"""gpu-install doctor: NVIDIA's nvidia-docker FAQ as checks, each with its fix.

The checks (installer/gpu_install/doctor_checks.py) are pure functions of recorded inputs: the H100's
facts and NVML view as captured on the lent machine, `docker info` as Docker 20.10 (this machine) and
Docker 26 (on the H100) answered it, NVIDIA_REQUIRE_CUDA as NVIDIA's CUDA images set it. Inputs that no
machine here can produce (a second GPU, an unsigned module under Secure Boot, a split driver) are the
recorded ones changed in one named place, and say so. The last tests run the installed CLI itself.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import module_utils

from gpu_install import cli, doctor_checks, nvml
from gpu_install.commands import doctor as doctor_command

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CAPTURED = HERE / "captured" / "h100-ubuntu-24.04"
CDI_CORPUS = HERE / "cdi_corpus"
sys.path.insert(0, str(CDI_CORPUS))
import tree  # noqa: E402

cdi = module_utils("cdi")
driver = module_utils("driver")

# `gpu-install detect` on the lent H100 (Ubuntu 24.04, driver 580.159.04 from /usr/local/nvidia, no Docker).
H100_FACTS = json.loads((CAPTURED / "live-doctor.json").read_text())["facts"]

# gpu_install.nvml.snapshot() on the lent H100 (nvidia-ml-py, driver 580.159.04). NVML's brand there is
# NVML_BRAND_NVIDIA (14), which libnvidia-container calls "Unknown"; persistence was on with no
# nvidia-persistenced running; `nvidia-smi topo -m` showed CPU affinity 0-15 and NUMA affinity 0.
H100_NVML = {
    "available": True,
    "error": None,
    "error_code": None,
    "error_kind": None,
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-179f4fd9-b87e-fd05-c483-48768a0728f2",
            "pci_bus_id": "00000000:00:06.0",
            "minor": 0,
            "persistence_mode": True,
            "brand_id": 14,
            "brand": "Unknown",
            "compute_capability": "9.0",
            "cpu_affinity": "0-15",
            "numa_affinity": "0",
            "nvlink": {"active": 0, "remotes": [], "switch": False},
        }
    ],
    "driver_version": "580.159.04",
    "cuda_driver_version": "13.0",
    "topology": [],
}

# GET /info, the keys doctor reads: Debian 12's docker.io 20.10 on this machine (no CDISpecDirs in that
# API), and Debian 13's Docker 26.1.5 on the H100 started with {"features": {"cdi": true}}.
DOCKER_20_10 = {
    "ServerVersion": "20.10.24+dfsg1",
    "Runtimes": {
        "io.containerd.runc.v2": {"path": "runc"},
        "io.containerd.runtime.v1.linux": {"path": "runc"},
        "runc": {"path": "runc"},
    },
    "DefaultRuntime": "runc",
}
DOCKER_26_CDI = {
    "ServerVersion": "26.1.5+dfsg1",
    "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}},
    "DefaultRuntime": "runc",
    "CDISpecDirs": ["/etc/cdi", "/var/run/cdi"],
}
# What `gpu-install apply` makes of Docker 20.10 in runtime mode: the nvidia runtime, and it is the default.
DOCKER_20_10_NVIDIA = dict(
    DOCKER_20_10,
    Runtimes=dict(DOCKER_20_10["Runtimes"], nvidia={"path": "nvidia-container-runtime"}),
    DefaultRuntime="nvidia",
)

# NVIDIA_REQUIRE_CUDA as NVIDIA's CUDA images set it (docker image inspect / printenv of real images).
REQUIRE_12_6 = (  # nvidia/cuda 12.6.3 (seen running on L4 GPUs with driver 550.144.03, CUDA 12.4)
    "cuda>=12.6 brand=unknown,driver>=470,driver<471 brand=grid,driver>=470,driver<471 brand=tesla,driver>=470,"
    "driver<471 brand=nvidia,driver>=470,driver<471 brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,"
    "driver<471 brand=nvidiartx,driver>=470,driver<471 brand=vapps,driver>=470,driver<471 brand=vpc,driver>=470,"
    "driver<471 brand=vcs,driver>=470,driver<471 brand=vws,driver>=470,driver<471 brand=cloudgaming,driver>=470,"
    "driver<471 brand=unknown,driver>=535,driver<536 brand=grid,driver>=535,driver<536 brand=tesla,driver>=535,"
    "driver<536 brand=nvidia,driver>=535,driver<536 brand=quadro,driver>=535,driver<536 brand=quadrortx,driver>=535,"
    "driver<536 brand=nvidiartx,driver>=535,driver<536 brand=vapps,driver>=535,driver<536 brand=vpc,driver>=535,"
    "driver<536 brand=vcs,driver>=535,driver<536 brand=vws,driver>=535,driver<536 brand=cloudgaming,driver>=535,"
    "driver<536 brand=unknown,driver>=550,driver<551 brand=grid,driver>=550,driver<551 brand=tesla,driver>=550,"
    "driver<551 brand=nvidia,driver>=550,driver<551 brand=quadro,driver>=550,driver<551 brand=quadrortx,driver>=550,"
    "driver<551 brand=nvidiartx,driver>=550,driver<551 brand=vapps,driver>=550,driver<551 brand=vpc,driver>=550,"
    "driver<551 brand=vcs,driver>=550,driver<551 brand=vws,driver>=550,driver<551 brand=cloudgaming,driver>=550,"
    "driver<551"
)
REQUIRE_13_0 = "cuda>=13.0 " + " ".join(  # nvidia/cuda 13.0.2 (vllm/vllm-openai:v0.23.0's base)
    f"brand={brand},driver>={branch},driver<{int(branch) + 1}"
    for branch in ("535", "550", "565", "570", "575")
    for brand in (
        "unknown",
        "grid",
        "tesla",
        "nvidia",
        "quadro",
        "quadrortx",
        "nvidiartx",
        "vapps",
        "vpc",
        "vcs",
        "vws",
    )
    + ("cloudgaming",)
)
REQUIRE_11_8 = (  # nvidia/cuda 11.8.0
    "cuda>=11.8 brand=tesla,driver>=450,driver<451 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,"
    "driver<471 brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,driver<471 brand=quadrortx,"
    "driver>=470,driver<471 brand=unknown,driver>=510,driver<511 brand=nvidia,driver>=510,driver<511 brand=nvidiartx,"
    "driver>=510,driver<511 brand=quadrortx,driver>=510,driver<511 brand=unknown,driver>=515,driver<516 "
    "brand=nvidia,driver>=515,driver<516 brand=nvidiartx,driver>=515,driver<516 brand=quadrortx,driver>=515,driver<516"
)
REQUIRE_11_4 = "cuda>=11.4 brand=tesla,driver>=418,driver<419 brand=tesla,driver>=450,driver<451"  # nvidia/cuda 11.4.0


def view_with(driver_version: str, cuda: str, brand: str = "Unknown", **gpu: object) -> dict:
    """The H100's view with another driver (and brand): what NVML reports on that driver branch."""
    view = copy.deepcopy(H100_NVML)
    view.update(driver_version=driver_version, cuda_driver_version=cuda)
    view["gpus"][0].update(brand=brand, **gpu)
    return view


def facts_with(**changes: object) -> dict:
    facts = copy.deepcopy(H100_FACTS)
    facts.update(changes)
    return facts


def image(env: list[str], name: str = "nvidia/cuda:12.6.3-base-ubuntu24.04") -> dict:
    return {"name": name, "found": True, "env": env, "error": None}


def by_id(checks: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in checks}


# ---------------------------------------------------------------------------
# The check record
# ---------------------------------------------------------------------------
def test_every_check_is_id_status_message_and_a_fix_that_is_empty_only_on_pass():
    inputs = {
        "facts": facts_with(secure_boot=True, nouveau_loaded=True, gpus=[]),
        "nvml": {"available": False, "error": "NVML: Driver Not Loaded", "error_kind": "driver_not_loaded"},
        "kernels": [],
        "module": {"taint": "OE"},
        "docker": {"info": None, "error": "no_answer", "socket": "/var/run/docker.sock"},
        "settings": {},
        "cdi": {},
        "image": {"name": "x", "found": False, "env": [], "error": None},
    }
    for checks in (doctor_checks.run_checks(inputs), h100_checks()):
        for c in checks:
            assert set(c) <= {"id", "status", "message", "fix", "details"}
            assert c["status"] in doctor_checks.STATUSES
            assert c["message"].endswith(".") and "\n" not in c["message"]
            assert (c["fix"] == "") == (c["status"] == "pass"), c
    with pytest.raises(ValueError):
        doctor_checks.check("x", "ok", "A message.")


def h100_checks(**overrides: object) -> list[dict]:
    spec_state = {"path": cdi.DEFAULT_PATH, "exists": True, "error": None, "problems": [], "stale": []}
    inputs = {
        "facts": H100_FACTS,
        "nvml": H100_NVML,
        "kernels": [],
        "module": {},
        "docker": {"info": DOCKER_26_CDI, "error": None, "socket": "/var/run/docker.sock"},
        "settings": {"nvidia_container_mode": "cdi"},
        "cdi": spec_state,
        "image": image([f"NVIDIA_REQUIRE_CUDA={REQUIRE_12_6}", "CUDA_VERSION=12.6.3"]),
    }
    inputs.update(overrides)
    return doctor_checks.run_checks(inputs)


def test_the_h100_in_cdi_mode_with_a_cuda_12_6_image_is_healthy_in_faq_order():
    checks = h100_checks()
    assert [c["id"] for c in checks] == [
        "platform",
        "gpu",
        "driver",
        "nouveau",
        "nvml",
        "persistence",
        "secure_boot",
        "docker",
        "gpus_option",
        "docker_build",
        "image",
        "kernel_update",
        "container_processes",
    ]
    assert doctor_checks.healthy(checks), [c for c in checks if c["status"] == "fail"]
    assert {c["id"]: c["status"] for c in checks if c["status"] != "pass"} == {
        "gpus_option": "info",
        "docker_build": "info",
        "kernel_update": "skip",
        "container_processes": "info",
    }


# ---------------------------------------------------------------------------
# 1. The driver is loaded and nouveau is not
# ---------------------------------------------------------------------------
def test_driver_passes_when_loaded_and_names_version_and_flavour():
    c = doctor_checks.check_driver(H100_FACTS)
    assert c["status"] == "pass"
    assert c["message"] == "The NVIDIA driver 580.159.04 (open kernel module) is loaded."


def test_driver_installed_but_not_loaded_fails_with_apply_or_reboot():
    facts = facts_with(
        driver={
            "loaded": False,
            "version": None,
            "flavour": None,
            "package": {"name": "nvidia-driver", "version": "535.216.01-1"},
        }
    )
    c = doctor_checks.check_driver(facts)
    assert c["status"] == "fail"
    assert "nvidia-driver 535.216.01-1 is installed but its kernel module is not loaded" in c["message"]
    assert "gpu-install apply" in c["fix"] and "reboot" in c["fix"]


def test_driver_not_loaded_because_nouveau_holds_the_gpu_fails_with_blacklist_and_reboot():
    facts = facts_with(driver={"loaded": False, "version": None, "flavour": None, "package": None}, nouveau_loaded=True)
    c = doctor_checks.check_driver(facts)
    assert c["status"] == "fail" and "nouveau holds the GPU" in c["message"]
    assert "blacklists nouveau" in c["fix"] and "reboot" in c["fix"]
    nouveau = doctor_checks.check_nouveau(facts)
    assert nouveau["status"] == "fail"
    assert "blacklists nouveau and nova_core" in nouveau["fix"] and "reboot" in nouveau["fix"]
    assert doctor_checks.check_nouveau(H100_FACTS)["status"] == "pass"


def test_no_gpu_fails_gpu_and_driver_and_never_sends_the_user_to_apply_alone():
    facts = facts_with(gpus=[], driver={"loaded": False, "version": None, "flavour": None, "package": None})
    gpu, drv = doctor_checks.check_gpu(facts), doctor_checks.check_driver(facts)
    assert gpu["status"] == drv["status"] == "fail"
    assert "GPU instance type" in gpu["fix"]
    assert drv["fix"].startswith("On a host with an NVIDIA GPU")
    assert doctor_checks.check_gpu(H100_FACTS)["message"] == "Found 1 NVIDIA GPU: NVIDIA H100 80GB HBM3."


def test_a_refused_platform_fails_the_platform_check_with_the_refusal_sentence():
    wsl = {"code": "wsl", "message": "This is Windows Subsystem for Linux: use the Windows driver.", "refuses": True}
    c = doctor_checks.check_platform(facts_with(problems=[wsl], supported=False))
    assert c["status"] == "fail" and c["message"] == wsl["message"]
    assert doctor_checks.check_platform(H100_FACTS)["message"] == "Ubuntu 24.04.3 LTS on x86_64 is supported."


def test_exit_code_is_0_when_nothing_fails_8_when_a_check_fails_and_3_on_a_refused_platform():
    assert doctor_checks.exit_code(h100_checks(), H100_FACTS) == 0
    failing = h100_checks(image={"name": "x", "found": False})
    assert doctor_checks.exit_code(failing, H100_FACTS) == 8
    wsl = {"code": "wsl", "message": "This is Windows Subsystem for Linux.", "refuses": True}
    refused = facts_with(problems=[wsl], supported=False)
    assert doctor_checks.exit_code(h100_checks(facts=refused), refused) == 3


# ---------------------------------------------------------------------------
# 2. NVML is usable; "Driver/library version mismatch" means reboot
# ---------------------------------------------------------------------------
def test_nvml_passes_on_the_h100_view():
    c = doctor_checks.check_nvml(H100_FACTS, H100_NVML)
    assert c == {
        "id": "nvml",
        "status": "pass",
        "message": "NVML works: driver 580.159.04, 1 GPU, CUDA 13.0 supported.",
        "fix": "",
    }


def test_nvml_version_mismatch_from_pynvml_is_classified_and_fails_with_reboot():
    pynvml = pytest.importorskip("pynvml")
    # The exception pynvml raises when nvmlInit returns NVML_ERROR_LIB_RM_VERSION_MISMATCH (18).
    exc = pynvml.NVMLError(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    assert isinstance(exc, pynvml.NVMLError_LibRmVersionMismatch)
    view = nvml._failure(exc)
    assert view["error_kind"] == "lib_rm_version_mismatch" and view["error_code"] == 18
    assert view["error"].startswith("NVML: ") and "mismatch" in view["error"]
    # An unattended upgrade replaced 535.183.01's libraries with 535.216.01's under the running module.
    facts = facts_with(
        driver={
            "loaded": True,
            "version": "535.183.01",
            "flavour": "proprietary",
            "package": {"name": "nvidia-driver-535", "version": "535.216.01-0ubuntu1"},
        }
    )
    c = doctor_checks.check_nvml(facts, view)
    assert c["status"] == "fail"
    assert '"Driver/library version mismatch"' in c["message"]
    assert "535.183.01" in c["message"] and "535.216.01-0ubuntu1" in c["message"]
    assert c["fix"].startswith("Reboot") and "nvidia_driver_branch" in c["fix"]


def test_nvml_without_a_loaded_driver_is_skipped_not_failed_twice():
    pynvml = pytest.importorskip("pynvml")
    view = nvml._failure(pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert view["error_kind"] == "driver_not_loaded"
    facts = facts_with(driver={"loaded": False, "version": None, "flavour": None, "package": None})
    assert doctor_checks.check_nvml(facts, view)["status"] == "skip"
    # With the driver loaded, the same library error is a failure of its own.
    missing = {"available": False, "error": "NVML: NVML Shared Library Not Found", "error_kind": "library_not_found"}
    c = doctor_checks.check_nvml(H100_FACTS, missing)
    assert c["status"] == "fail" and "libnvidia-ml.so.1" in c["message"]
    lost = {"available": False, "error": "NVML: GPU is lost", "error_kind": "gpu_is_lost"}
    assert "dmesg" in doctor_checks.check_nvml(H100_FACTS, lost)["fix"]


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version"), reason="this host has an NVIDIA driver")
def test_nvml_snapshot_on_this_gpu_less_host_reports_why_and_never_raises():
    view = nvml.snapshot()
    assert view["available"] is False and view["gpus"] == []
    assert view["error_kind"] in ("library_not_found", "driver_not_loaded"), view


def test_nvml_module_only_queries_and_never_changes_a_gpu_setting():
    source = Path(nvml.__file__).read_text()
    calls = set(re.findall(r"\bnvml[A-Z]\w+", source))
    changing = {c for c in calls if any(verb in c for verb in ("Set", "Clear", "Reset", "Freeze", "Register"))}
    assert changing == set()
    assert "nvmlDeviceGetPersistenceMode" in calls


# ---------------------------------------------------------------------------
# 3. Persistence: on for every GPU, whoever turned it on
# ---------------------------------------------------------------------------
def test_persistence_passes_on_the_h100_where_no_persistenced_runs():
    assert H100_FACTS["persistenced"]["running"] is False
    c = doctor_checks.check_persistence(H100_FACTS, H100_NVML, {})
    assert c["status"] == "pass" and c["message"] == "Persistence mode is on for the GPU."


def test_persistence_off_fails_with_slow_starts_and_the_fix_that_fits():
    view = view_with("580.159.04", "13.0", persistence_mode=False)
    c = doctor_checks.check_persistence(H100_FACTS, view, {})
    assert c["status"] == "fail"
    assert "off on GPU 0" in c["message"] and "slowly" in c["message"]
    assert "nvidia-persistenced" in c["fix"] and "gpu-install apply" in c["fix"]
    running = facts_with(persistenced={"installed": True, "version": "535.171", "enabled": True, "running": True})
    assert "--no-persistence-mode" in doctor_checks.check_persistence(running, view, {})["fix"]
    off = doctor_checks.check_persistence(H100_FACTS, view, {"nvidia_persistenced_enabled": False})
    assert off["fix"].startswith("Set nvidia_persistenced_enabled: true")


def test_persistence_without_nvml_is_skipped_and_unknown_is_a_warning():
    assert doctor_checks.check_persistence(H100_FACTS, {"available": False}, {})["status"] == "skip"
    unknown = view_with("580.159.04", "13.0", persistence_mode=None)
    assert doctor_checks.check_persistence(H100_FACTS, unknown, {})["status"] == "warn"


# ---------------------------------------------------------------------------
# 4. The image's NVIDIA_REQUIRE_CUDA against the driver
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("13.0", ">=", "12.6", True),
        ("12.4", ">=", "12.6", False),
        ("470.256.02", "<", "471", True),
        ("470.256.02", ">=", "470", True),
        ("471.11", "<", "471", False),
        ("12", "=", "12.0", True),
        ("12.6.1", ">=", "12.6", True),
        ("12.6", ">=", "12.6.1", False),
        ("12.6", "!=", "12.6.0", False),
        ("9.0", ">", "8.9", True),
    ],
)
def test_versions_compare_as_libnvidia_container_compares_them(left, op, right, expected):
    assert doctor_checks.compare_version(left, op, right) is expected


def test_requirements_are_alternatives_of_factors_as_the_toolkit_reads_them():
    terms = doctor_checks.parse_requirement(REQUIRE_12_6)
    assert terms[0] == [("cuda", ">=", "12.6")]
    assert terms[1] == [("brand", "=", "unknown"), ("driver", ">=", "470"), ("driver", "<", "471")]
    assert len(terms) == 1 + 3 * 12
    assert len(doctor_checks.parse_requirement(REQUIRE_13_0)) == 1 + 5 * 12
    for bad in ("cuda~12.6", "cuda>=", "gpu>=1", "brand>=tesla", "cuda>=12.6b"):
        with pytest.raises(doctor_checks.RequirementError):
            doctor_checks.evaluate(bad, {"cuda": "13.0", "driver": "580.159.04"}, {"brand": "Tesla"})


@pytest.mark.parametrize(
    ("requirement", "driver_version", "cuda", "brand", "holds"),
    [
        (REQUIRE_12_6, "580.159.04", "13.0", "Unknown", True),  # the H100: CUDA 13.0 >= 12.6
        (REQUIRE_12_6, "560.35.03", "12.6", "Tesla", True),
        (REQUIRE_12_6, "550.144.03", "12.4", "Unknown", True),  # the L4 record: brand=unknown,driver 550.x
        (REQUIRE_12_6, "550.144.03", "12.4", "GeForce", False),  # GeForce has no 550 alternative
        (REQUIRE_12_6, "545.23.08", "12.3", "Tesla", False),  # no alternative names 545
        (REQUIRE_13_0, "580.159.04", "13.0", "Unknown", True),
        (REQUIRE_13_0, "575.57.08", "12.9", "Tesla", True),
        (REQUIRE_13_0, "560.35.03", "12.6", "Tesla", False),
        (REQUIRE_11_8, "470.256.02", "11.4", "Tesla", True),
        (REQUIRE_11_4, "450.248.02", "11.0", "Tesla", True),
        (REQUIRE_11_4, "450.248.02", "11.0", "GeForce", False),
    ],
)
def test_real_cuda_image_requirements_against_drivers(requirement, driver_version, cuda, brand, holds):
    props = {"cuda": cuda, "driver": driver_version}
    failing = doctor_checks.evaluate(requirement, props, {"brand": brand, "compute_capability": "9.0"})
    assert (failing is None) is holds
    if not holds:
        assert failing == ("cuda", ">=", requirement.split(" ")[0].split(">=")[1])


def test_image_check_passes_on_the_h100_and_names_the_forward_compatibility_alternative():
    env = [f"NVIDIA_REQUIRE_CUDA={REQUIRE_12_6}", "CUDA_VERSION=12.6.3"]
    c = doctor_checks.check_image(image(env), H100_NVML)
    assert c["status"] == "pass"
    assert c["message"] == (
        "nvidia/cuda:12.6.3-base-ubuntu24.04 requires cuda>=12.6, and the driver 580.159.04 (CUDA 13.0) meets it."
    )
    l4 = doctor_checks.check_image(image(env), view_with("550.144.03", "12.4"))
    assert l4["status"] == "pass"
    assert "brand=unknown,driver>=550,driver<551 holds (CUDA forward compatibility)" in l4["message"]


def test_image_check_fails_with_the_faq_error_and_names_the_branch_to_upgrade_to():
    env = [f"NVIDIA_REQUIRE_CUDA={REQUIRE_12_6}"]
    c = doctor_checks.check_image(image(env), view_with("545.23.08", "12.3", brand="Tesla"))
    assert c["status"] == "fail"
    assert c["message"].startswith("unsatisfied condition: cuda >= 12.6: ")
    assert "needs CUDA 12.6 and the driver 545.23.08 supports CUDA 12.3" in c["message"]
    assert 'branch 560 or newer (nvidia_driver_branch: "560"' in c["fix"]
    assert "image tag built for CUDA 12.3 or older" in c["fix"]
    newest = doctor_checks.check_image(image(["NVIDIA_REQUIRE_CUDA=cuda>=13.1"]), H100_NVML)
    assert newest["message"].startswith("unsatisfied condition: cuda >= 13.1")
    assert "supports CUDA 13.1" in newest["fix"]


def test_image_environment_rules_legacy_disable_and_extra_requirements():
    legacy = doctor_checks.image_requirements(["CUDA_VERSION=11.0.3", "PATH=/usr/bin"])
    assert legacy["requirements"] == ["cuda>=11.0"] and legacy["legacy"] == "cuda>=11.0"
    both = doctor_checks.image_requirements(
        [
            "NVIDIA_REQUIRE_ARCH=arch>=9.0",
            f"NVIDIA_REQUIRE_CUDA={REQUIRE_11_4}",
            "NVIDIA_REQUIRE_JETPACK=csv-mounts=all",
        ]
    )
    assert both["requirements"] == [REQUIRE_11_4, "arch>=9.0"] and both["legacy"] is None
    env = ["NVIDIA_REQUIRE_CUDA=cuda>=99.0", "NVIDIA_DISABLE_REQUIRE=true"]
    assert doctor_checks.check_image(image(env), H100_NVML)["status"] == "info"
    arch = doctor_checks.check_image(image(["NVIDIA_REQUIRE_ARCH=arch>=10.0"]), H100_NVML)
    assert arch["status"] == "fail" and "arch >= 10.0 on GPU 0" in arch["message"] and "9.0" in arch["message"]
    none = doctor_checks.check_image(image(["PATH=/bin"], name="busybox"), H100_NVML)
    assert none["status"] == "pass" and "no CUDA requirement" in none["message"]


def test_image_absent_unreadable_or_without_nvml():
    absent = doctor_checks.check_image({"name": "nvidia/cuda:12.6.3-base-ubuntu24.04", "found": False}, H100_NVML)
    assert absent["status"] == "fail"
    assert absent["fix"] == "Pull it: docker pull nvidia/cuda:12.6.3-base-ubuntu24.04."
    down = doctor_checks.check_image(
        {"name": "x", "error": "Docker is not answering on /var/run/docker.sock"}, H100_NVML
    )
    assert down["status"] == "fail" and "Start Docker" in down["fix"]
    invalid = doctor_checks.check_image(image(["NVIDIA_REQUIRE_CUDA=cuda=>12"]), H100_NVML)
    assert invalid["status"] == "fail" and "NVIDIA_DISABLE_REQUIRE" in invalid["fix"]
    blind = doctor_checks.check_image(image([f"NVIDIA_REQUIRE_CUDA={REQUIRE_12_6}"]), {"available": False})
    assert blind["status"] == "skip" and "requires cuda>=12.6" in blind["message"]


def test_oldest_branch_for_a_cuda_version():
    assert doctor_checks.branch_for_cuda("12.6") == "560"
    assert doctor_checks.branch_for_cuda("12.7") == "565"
    assert doctor_checks.branch_for_cuda("13.0") == "580"
    assert doctor_checks.branch_for_cuda("11.4") == "470"
    assert doctor_checks.branch_for_cuda("13.1") is None


def test_doctor_parser_takes_image():
    args = cli.parse_args(["doctor", "--json", "--image", "nvidia/cuda:12.6.3-base-ubuntu24.04"])
    assert args.image == "nvidia/cuda:12.6.3-base-ubuntu24.04" and args.json
    assert cli.parse_args(["doctor"]).image is None


# ---------------------------------------------------------------------------
# 5. Docker has the NVIDIA path: the nvidia runtime as default, or CDI
# ---------------------------------------------------------------------------
def docker(info: dict | None, error: str | None = None) -> dict:
    return {"info": info, "error": error, "socket": "/var/run/docker.sock"}


def test_runtime_mode_needs_the_nvidia_runtime_and_it_as_default():
    c = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_20_10), {}, {})
    assert c["status"] == "fail"
    assert c["message"] == (
        "Docker 20.10.24+dfsg1 has no nvidia runtime (runtimes: io.containerd.runc.v2, "
        "io.containerd.runtime.v1.linux, runc)."
    )
    not_default = dict(DOCKER_20_10_NVIDIA, DefaultRuntime="runc")
    c = doctor_checks.check_docker(H100_FACTS, docker(not_default), {"nvidia_container_mode": "runtime"}, {})
    assert c["status"] == "fail" and "docker build and Compose" in c["message"]
    assert "default-runtime" in c["fix"]
    c = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_20_10_NVIDIA), {}, {})
    assert c["status"] == "pass"


def test_cdi_mode_needs_docker_25_cdi_on_and_a_valid_current_spec():
    good = {"path": cdi.DEFAULT_PATH, "exists": True, "error": None, "problems": [], "stale": []}
    mode = {"nvidia_container_mode": "cdi"}
    old = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_20_10), mode, good)
    assert old["status"] == "fail" and "cannot read CDI specs" in old["message"]
    off = doctor_checks.check_docker(H100_FACTS, docker(dict(DOCKER_26_CDI, CDISpecDirs=[])), mode, good)
    assert off["status"] == "fail" and "features.cdi" in off["message"]
    on28 = dict(DOCKER_26_CDI, ServerVersion="28.0.1", CDISpecDirs=[])
    assert "features.cdi" not in doctor_checks.check_docker(H100_FACTS, docker(on28), mode, good)["message"]
    elsewhere = dict(DOCKER_26_CDI, CDISpecDirs=["/opt/cdi"])
    assert "not from /etc/cdi" in doctor_checks.check_docker(H100_FACTS, docker(elsewhere), mode, good)["message"]
    missing = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_26_CDI), mode, dict(good, exists=False))
    assert missing["status"] == "fail" and "does not exist" in missing["message"]
    broken = doctor_checks.check_docker(
        H100_FACTS, docker(DOCKER_26_CDI), mode, dict(good, problems=["kind None is not vendor/class"])
    )
    assert broken["status"] == "fail" and "kind None" in broken["message"]
    passed = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_26_CDI), mode, good)
    assert passed["status"] == "pass"


def test_cdi_spec_the_h100_ran_with_is_current_on_its_tree_and_stale_elsewhere(tmp_path):
    spec = json.loads((CDI_CORPUS / "h100" / "spec.json").read_text())
    assert cdi.validate(spec) == []
    root = str(tree.build(CDI_CORPUS / "h100", tmp_path / "h100"))
    current = {
        "path": cdi.DEFAULT_PATH,
        "exists": True,
        "error": None,
        "problems": [],
        "stale": cdi.stale_paths(spec, root),
    }
    mode = {"nvidia_container_mode": "cdi"}
    assert doctor_checks.check_docker(H100_FACTS, docker(DOCKER_26_CDI), mode, current)["status"] == "pass"
    # After a driver upgrade the versioned library is gone: every GPU container would fail to start.
    (Path(root) / "usr/local/nvidia/lib64/libnvidia-gpucomp.so.580.159.04").unlink()
    stale = dict(current, stale=cdi.stale_paths(spec, root))
    c = doctor_checks.check_docker(H100_FACTS, docker(DOCKER_26_CDI), mode, stale)
    assert c["status"] == "fail"
    assert "/usr/local/nvidia/lib64/libnvidia-gpucomp.so.580.159.04" in c["message"]
    assert "regenerates the spec" in c["fix"]


def test_gather_cdi_reads_the_spec_at_the_default_path(tmp_path, monkeypatch):
    path = tmp_path / "gpu-install-nvidia.json"
    monkeypatch.setattr(cdi, "DEFAULT_PATH", str(path))
    assert doctor_command.gather_cdi({}) == {}
    assert doctor_command.gather_cdi({"nvidia_container_mode": "cdi"})["exists"] is False
    path.write_text("{not json")
    assert "is not valid JSON" in doctor_command.gather_cdi({"nvidia_container_mode": "cdi"})["error"]
    shutil.copy(CDI_CORPUS / "h100" / "spec.json", path)
    state = doctor_command.gather_cdi({"nvidia_container_mode": "cdi"})
    assert state["exists"] and state["problems"] == []
    assert state["stale"] == cdi.stale_paths(json.loads(path.read_text()))
    if not Path("/usr/local/nvidia").exists():
        assert "/usr/local/nvidia/lib64/libcuda.so.1" in state["stale"]


def test_docker_not_running_not_installed_or_not_allowed_fails_with_its_fix():
    nodocker = facts_with(docker={"flavour": None, "version": None})
    c = doctor_checks.check_docker(nodocker, docker(None, "absent"), {}, {})
    assert c["status"] == "fail" and c["message"] == "Docker is not installed."
    stopped = facts_with(docker={"flavour": "docker.io", "version": "20.10.24"})
    c = doctor_checks.check_docker(stopped, docker(None, "no_answer"), {}, {})
    assert c["message"] == "docker.io 20.10.24 is not answering on /var/run/docker.sock."
    assert "systemctl start docker" in c["fix"]
    denied = doctor_checks.check_docker(stopped, docker(None, "denied"), {}, {})
    assert "docker group" in denied["fix"]


def test_gather_docker_over_a_socket_nobody_listens_on(tmp_path):
    state = doctor_command.gather_docker(str(tmp_path / "docker.sock"))
    assert state == {"socket": str(tmp_path / "docker.sock"), "info": None, "error": "absent"}


# ---------------------------------------------------------------------------
# 6. Secure Boot and the module's signature
# ---------------------------------------------------------------------------
def test_secure_boot_off_or_unknown():
    assert doctor_checks.check_secure_boot(H100_FACTS, {})["status"] == "pass"
    assert doctor_checks.check_secure_boot(facts_with(secure_boot=None), {})["status"] == "skip"


def test_secure_boot_on_with_the_loaded_module_signed_or_tainted():
    on = facts_with(secure_boot=True)
    assert doctor_checks.check_secure_boot(on, {"taint": "O"})["status"] == "pass"  # the H100's taint: out-of-tree
    c = doctor_checks.check_secure_boot(on, {"taint": "POE"})
    assert c["status"] == "warn" and "taint E" in c["message"]


def test_secure_boot_on_with_an_unsigned_module_fails_with_the_mok_steps():
    on = facts_with(secure_boot=True, driver={"loaded": False, "version": None, "flavour": None, "package": None})
    module = {"filename": "/lib/modules/6.8.0-49-generic/updates/dkms/nvidia.ko.zst", "signer": None}
    c = doctor_checks.check_secure_boot(on, module)
    assert c["status"] == "fail"
    assert "nvidia.ko.zst is unsigned, so the kernel refuses to load it" in c["message"]
    assert driver.MOK_STEPS in c["fix"] and "mokutil --import" in c["fix"]
    signed = doctor_checks.check_secure_boot(on, dict(module, signer="DKMS module signing key"))
    assert signed["status"] == "warn" and "Key was rejected by service" in signed["message"]
    assert (
        doctor_checks.check_secure_boot(on, {"error": "modinfo: ERROR: Module nvidia not found."})["status"] == "skip"
    )


# ---------------------------------------------------------------------------
# 7. nvidia-smi in a container shows no processes
# ---------------------------------------------------------------------------
def test_container_processes_is_always_an_info_line_about_pid_namespaces():
    c = doctor_checks.check_container_processes()
    assert c["status"] == "info" and "PID namespaces" in c["message"] and "--pid=host" in c["fix"]
    assert by_id(h100_checks())["container_processes"] == c


# ---------------------------------------------------------------------------
# 8. Topology and CPU affinity, with two GPUs or more
# ---------------------------------------------------------------------------
def two_gpus(level: str, nvswitch: bool) -> dict:
    """A fixture, not a capture: the H100 view with a second GPU, on NVSwitches (18 links each, as on an
    HGX H100) or on PCIe across NUMA nodes (CPU 16-31, node 1)."""
    view = copy.deepcopy(H100_NVML)
    second = copy.deepcopy(view["gpus"][0])
    second.update(index=1, uuid="GPU-00000000-0000-0000-0000-000000000001", pci_bus_id="00000000:00:07.0", minor=1)
    second.update(cpu_affinity="16-31", numa_affinity="1")
    links = {"active": 18, "remotes": ["0000:05:00.0"] * 18, "switch": True} if nvswitch else view["gpus"][0]["nvlink"]
    view["gpus"][0]["nvlink"] = second["nvlink"] = links
    view["gpus"].append(second)
    view["topology"] = [{"gpus": [0, 1], "level": level}]
    return view


def test_topology_and_affinity_are_info_lines_only_with_two_gpus_or_more():
    assert doctor_checks.check_topology(H100_NVML) is None
    assert doctor_checks.check_cpu_affinity(H100_NVML) is None
    assert "topology" not in by_id(h100_checks())
    sys_pair = doctor_checks.check_topology(two_gpus("SYS", nvswitch=False))
    assert sys_pair["status"] == "info"
    assert sys_pair["details"] == ["GPU0 <-> GPU1: SYS (across NUMA nodes (the SMP interconnect))"]
    assert "1 crossing host bridges or NUMA nodes" in sys_pair["message"]
    nvlink = doctor_checks.check_topology(two_gpus("SYS", nvswitch=True))
    assert nvlink["details"] == ["GPU0 <-> GPU1: NV18 (NVLink)"]
    affinity = doctor_checks.check_cpu_affinity(two_gpus("SYS", nvswitch=False))
    assert affinity["status"] == "info"
    assert affinity["details"] == [
        "GPU0: CPUs 0-15 (NUMA node 0): docker run --cpuset-cpus=0-15 --cpuset-mems=0 -e NVIDIA_VISIBLE_DEVICES=0",
        "GPU1: CPUs 16-31 (NUMA node 1): docker run --cpuset-cpus=16-31 --cpuset-mems=1 -e NVIDIA_VISIBLE_DEVICES=1",
    ]
    checks = h100_checks(nvml=two_gpus("PIX", nvswitch=False))
    assert [c["id"] for c in checks][-3:] == ["topology", "cpu_affinity", "container_processes"]
    assert doctor_checks.healthy(checks)


def test_direct_nvlinks_are_counted_by_the_far_ends_bus_id():
    a = {"pci_bus_id": "00000000:1B:00.0", "nvlink": {"active": 4, "remotes": ["0000:3b:00.0"] * 4, "switch": False}}
    b = {"pci_bus_id": "00000000:3B:00.0", "nvlink": {"active": 4, "remotes": ["0000:1b:00.0"] * 4, "switch": False}}
    assert doctor_checks.nvlinks_between(a, b) == 4
    assert doctor_checks.nvlinks_between(a, {"pci_bus_id": "00000000:5E:00.0"}) == 0


def test_affinity_masks_and_bus_ids_read_as_nvidia_smi_prints_them():
    assert nvml.cpu_list([0xFFFF]) == "0-15"  # the H100's 16 CPUs
    assert nvml.cpu_list([0b1011]) == "0-1,3"
    assert nvml.cpu_list([0, 0b11]) == "64-65"
    assert nvml.cpu_list([(1 << 64) - 1, 1]) == "0-64"
    assert nvml.cpu_list([]) == ""
    assert nvml.bus_id("00000000:1B:00.0") == "0000:1b:00.0"
    assert nvml.error_kind(18) == "lib_rm_version_mismatch" and nvml.error_kind(77) == "error_77"


# ---------------------------------------------------------------------------
# 9. The kernel update guard
# ---------------------------------------------------------------------------
def test_kernel_without_the_nvidia_module_warns_before_the_reboot():
    kernels = [
        {"release": "6.1.0-30-amd64", "headers": True, "nvidia_module": False},
        {"release": "6.1.0-28-amd64", "headers": True, "nvidia_module": True},
    ]
    c = doctor_checks.check_kernel_update(kernels, "6.1.0-28-amd64")
    assert c["status"] == "warn" and "6.1.0-30-amd64 has no NVIDIA module" in c["message"]
    assert "before rebooting" in c["fix"]
    kernels[0]["nvidia_module"] = True
    assert doctor_checks.check_kernel_update(kernels, "6.1.0-28-amd64")["status"] == "pass"
    assert doctor_checks.check_kernel_update([], None)["status"] == "skip"
    checks = h100_checks(kernels=[dict(kernels[0], nvidia_module=False), kernels[1]])
    assert by_id(checks)["kernel_update"]["status"] == "warn" and doctor_checks.healthy(checks)


# ---------------------------------------------------------------------------
# The command itself, on this machine (no GPU), as users run it
# ---------------------------------------------------------------------------
def gpu_install(*args: str) -> subprocess.CompletedProcess:
    binary = BIN / "gpu-install"
    if not binary.exists():
        pytest.fail(f"{binary} is not installed beside this Python")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300)


no_gpu_here = pytest.mark.skipif(
    os.path.exists("/proc/driver/nvidia/version"), reason="this host has an NVIDIA driver loaded"
)


def docker_answers() -> bool:
    return doctor_command.gather_docker(doctor_command.docker_socket())["info"] is not None


@no_gpu_here
def test_doctor_json_on_this_gpu_less_machine_exits_8_with_the_driver_check_failing(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("nvidia_container_mode: runtime\n")
    proc = gpu_install("doctor", "--json", "-c", str(config))
    result = json.loads(proc.stdout)
    assert proc.returncode == 8, proc.stderr
    assert result["schema"] == 1 and result["healthy"] is False
    assert set(result) >= {"checks", "facts", "nvml"}
    checks = by_id(result["checks"])
    assert checks["driver"]["status"] == "fail" and checks["driver"]["fix"]
    assert checks["gpu"]["status"] == "fail"
    assert checks["nvml"]["status"] == "skip"
    assert checks["container_processes"]["status"] == "info"
    assert result["nvml"]["available"] is False
    assert result["facts"]["driver"]["loaded"] is False
    assert "image" not in checks


@no_gpu_here
def test_doctor_human_output_marks_each_check_then_lists_the_fixes():
    proc = gpu_install("doctor")
    assert proc.returncode == 8, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAIL") and " driver " in line for line in lines)
    assert any(line.startswith("info") and "container_processes" in line for line in lines)
    fixes = lines.index("Fixes:")
    assert any("driver: On a host with an NVIDIA GPU" in line for line in lines[fixes:])
    assert "check(s) failed" in lines[-1]


def test_doctor_with_a_missing_settings_file_is_invalid_input():
    proc = gpu_install("doctor", "--json", "-c", "/nonexistent/gpu-install.yml")
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"]["code"] == 4


@no_gpu_here
def test_doctor_image_reads_the_real_image_env_through_dockers_socket(tmp_path):
    if not docker_answers() or shutil.which("docker") is None:
        pytest.skip("no Docker engine answers here")
    name = f"local/gpu-install-doctor-test:{os.getpid()}"
    layer = tmp_path / "layer.tar"
    (tmp_path / "hello").write_text("doctor test image\n")
    with tarfile.open(layer, "w") as tar:
        tar.add(tmp_path / "hello", arcname="hello")
    subprocess.run(
        [
            "docker",
            "import",
            "-c",
            f'ENV NVIDIA_REQUIRE_CUDA="{REQUIRE_11_4}"',
            "-c",
            "ENV CUDA_VERSION=11.4.0",
            str(layer),
            name,
        ],
        check=True,
        capture_output=True,
    )
    try:
        proc = gpu_install("doctor", "--json", "--image", name)
        result = json.loads(proc.stdout)
        assert proc.returncode == 8
        assert f"NVIDIA_REQUIRE_CUDA={REQUIRE_11_4}" in result["image"]["env"]
        checks = by_id(result["checks"])
        # No NVML here: the requirement is read, the comparison is skipped (and the driver check fails).
        assert checks["image"]["status"] == "skip"
        assert checks["image"]["message"].startswith(f"{name} requires cuda>=11.4")
    finally:
        subprocess.run(["docker", "image", "rm", "-f", name], capture_output=True, check=False)
    gone = json.loads(gpu_install("doctor", "--json", "--image", name).stdout)
    assert by_id(gone["checks"])["image"]["fix"] == f"Pull it: docker pull {name}."
