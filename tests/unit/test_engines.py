"""Which container engines gpu-install configures: the setting's validation and auto's choice (module_utils/engines)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import module_utils, run_module

engines = module_utils("engines")
errors = module_utils("errors")


def facts(docker=None, containerd=None, podman=None, problems=None) -> dict:
    """Facts as gpu_detect gives them, with only the engines' parts that resolution reads."""
    return {
        "supported": not any(p.get("refuses") for p in problems or []),
        "problems": problems or [],
        "docker": {"flavour": docker, "version": "26.1.5" if docker else None},
        "containerd": containerd or {"present": False},
        "podman": podman or {"present": False},
    }


CONTAINERD_CRI = {"present": True, "version": "1.7.24", "cri_enabled": True, "kubelet": False}
CONTAINERD_NO_CRI = {"present": True, "version": "1.7.24", "cri_enabled": False, "kubelet": False}
CONTAINERD_KUBELET = {"present": True, "version": "1.7.24", "cri_enabled": True, "kubelet": True}
PODMAN = {"present": True, "version": "5.4.2", "cdi": True}


# --------------------------------------------------------------------------- the setting


@pytest.mark.parametrize("value", ["auto", "AUTO", " auto "])
def test_auto_is_accepted_in_any_case(value):
    assert engines.check(value) == "auto"


def test_a_list_comes_back_in_engine_order_without_duplicates():
    assert engines.check(["podman", "docker", "podman", "containerd"]) == ["docker", "containerd", "podman"]


def test_a_single_engine_name_is_a_list_of_one():
    assert engines.check("containerd") == ["containerd"]


def test_an_empty_list_is_invalid_input_naming_the_engines():
    with pytest.raises(engines.EngineError) as info:
        engines.check([])
    assert info.value.code == errors.INVALID_INPUT == 4
    assert "empty list" in info.value.reason and "docker, containerd, podman" in info.value.reason


@pytest.mark.parametrize("value", [["docker", "cri-o"], ["moby"], "crio", [3]])
def test_an_unknown_engine_is_invalid_input_naming_it(value):
    with pytest.raises(engines.EngineError) as info:
        engines.check(value)
    assert info.value.code == 4
    assert "which gpu-install does not configure" in info.value.reason
    assert info.value.reason.count(".") >= 1 and "\n" not in info.value.reason


@pytest.mark.parametrize("value", [None, {"docker": True}, 5, True])
def test_a_setting_neither_auto_nor_a_list_is_invalid_input(value):
    with pytest.raises(engines.EngineError) as info:
        engines.check(value)
    assert info.value.code == 4
    assert "must be auto or a list" in info.value.reason


# --------------------------------------------------------------------------- auto


def test_auto_on_a_bare_host_installs_docker_as_before():
    assert engines.resolve("auto", facts()) == ["docker"]


def test_auto_takes_docker_alone_beside_its_own_containerd_even_with_cri_on():
    # Debian's containerd ships CRI on; beside docker.io it serves Docker unless a kubelet uses it.
    assert engines.resolve("auto", facts(docker="docker.io", containerd=CONTAINERD_CRI)) == ["docker"]


def test_auto_takes_containerd_beside_docker_when_a_kubelet_uses_it():
    assert engines.resolve("auto", facts(docker="docker-ce", containerd=CONTAINERD_KUBELET)) == ["docker", "containerd"]


def test_auto_takes_a_cri_containerd_without_docker():
    assert engines.resolve("auto", facts(containerd=CONTAINERD_CRI)) == ["containerd"]


def test_auto_leaves_a_containerd_with_cri_off_and_installs_docker():
    assert engines.resolve("auto", facts(containerd=CONTAINERD_NO_CRI)) == ["docker"]


def test_auto_takes_podman_when_present():
    assert engines.resolve("auto", facts(podman=PODMAN)) == ["podman"]
    assert engines.resolve("auto", facts(docker="docker.io", podman=PODMAN)) == ["docker", "podman"]


def test_auto_takes_every_engine_of_a_kubernetes_node_with_docker_and_podman():
    found = facts(docker="docker-ce", containerd=CONTAINERD_KUBELET, podman=PODMAN)
    assert engines.resolve("auto", found) == ["docker", "containerd", "podman"]


# --------------------------------------------------------------------------- lists


def test_a_listed_docker_is_installed_when_absent():
    assert engines.resolve(["docker"], facts()) == ["docker"]


def test_a_listed_containerd_with_cri_off_is_taken_as_asked():
    assert engines.resolve(["containerd"], facts(docker="docker-ce", containerd=CONTAINERD_NO_CRI)) == ["containerd"]


@pytest.mark.parametrize("engine, package", [("containerd", "containerd.io"), ("podman", "podman")])
def test_a_listed_engine_that_is_absent_is_unsupported_naming_it(engine, package):
    with pytest.raises(engines.EngineError) as info:
        engines.resolve(["docker", engine], facts(docker="docker.io"))
    assert info.value.code == errors.UNSUPPORTED == 3
    assert info.value.reason.startswith(f"gpu_install_container_engines lists {engine}, which is not installed")
    assert package in info.value.reason and f"remove {engine} from the list" in info.value.reason


# --------------------------------------------------------------------------- apply: the facts and the shim


SHIM = {
    "code": "podman_docker_shim",
    "message": "Found podman's docker shim (podman-docker 4.9.3), not Docker: remove podman-docker.",
    "refuses": True,
}


def test_apply_writes_the_engines_into_the_facts():
    found = facts(podman=PODMAN)
    assert engines.apply(found, ["podman"]) == ["podman"]
    assert found["engines"] == ["podman"]


def test_a_podman_docker_shim_refuses_only_where_docker_would_be_installed():
    found = facts(podman=PODMAN, problems=[dict(SHIM)])
    engines.apply(found, "auto")
    assert found["problems"][0]["refuses"] is False and found["supported"] is True
    assert found["problems"][0]["message"].endswith("(a note only here: Docker is not among the engines configured).")
    engines.apply(found, ["docker", "podman"])
    assert found["problems"][0] == SHIM
    assert found["supported"] is False


def test_apply_refuses_without_touching_the_facts_engines():
    found = facts()
    with pytest.raises(engines.EngineError):
        engines.apply(found, ["podman"])
    assert "engines" not in found


# --------------------------------------------------------------------------- summaries


def test_summaries_name_what_each_engine_is_and_leave_absent_ones_out():
    found = facts(
        docker="docker.io",
        containerd={
            "present": True,
            "package": "containerd",
            "version": "1.7.24",
            "config_exists": True,
            "config_version": 2,
            "cri_enabled": True,
            "kubelet": True,
            "active": True,
        },
    )
    found["kubelet"] = {
        "present": True,
        "endpoint": "unix:///run/containerd/containerd.sock",
        "endpoint_source": "default",
    }
    lines = engines.summaries(found)
    assert lines == {
        "docker": "docker.io 26.1.5",
        "containerd": "containerd 1.7.24 (containerd), config version 2, CRI on, used by the kubelet, running",
        "kubelet": "kubelet, runtime endpoint unix:///run/containerd/containerd.sock (from its default)",
    }


def test_summary_of_an_old_podman_says_it_reads_no_cdi():
    lines = engines.summaries(facts(podman={"present": True, "version": "4.0.2", "cdi": False}))
    assert lines == {"podman": "podman 4.0.2, no CDI (needs Podman 4.1 or newer)"}


def test_engines_line_marks_docker_that_will_be_installed():
    found = facts(podman=PODMAN)
    found["engines"] = ["docker", "podman"]
    assert engines.engines_line(found) == "docker (to install), podman"


# --------------------------------------------------------------------------- the doors: settings file, module

CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.mark.parametrize("value", [[], ["docker", "cri-o"], {"docker": 1}])
def test_the_settings_file_refuses_a_bad_engines_setting_with_exit_4(tmp_path, value):
    from gpu_install import settings
    from gpu_install.errors import GpuInstallError

    with pytest.raises(GpuInstallError) as info:
        settings.validate({"gpu_install_container_engines": value}, "config.yml")
    assert info.value.code == 4
    assert "gpu_install_container_engines" in info.value.reason


def test_the_settings_file_takes_auto_and_lists():
    from gpu_install import settings

    assert settings.validate({"gpu_install_container_engines": ["containerd", "podman"]}, "c.yml") == {
        "gpu_install_container_engines": ["containerd", "podman"]
    }
    assert settings.validate({"gpu_install_container_engines": "auto"}, "c.yml") == {
        "gpu_install_container_engines": "auto"
    }


@pytest.mark.parametrize(
    "setting, code, words",
    [(["podman"], 3, "lists podman, which is not installed"), ([], 4, "empty list"), (["crio"], 4, "'crio'")],
)
def test_gpu_facts_fails_with_the_class_of_a_refused_setting(tmp_path, setting, code, words):
    args = {"root": str(CORPUS / "dgx-h100-ubuntu2204"), "container_engines": setting}
    rc, result = run_module("gpu_facts", tmp_path / "args.json", args)
    assert rc != 0 and result["failed"] is True
    assert result["gpu_install_error"]["code"] == code
    assert words in result["gpu_install_error"]["reason"] == result["msg"]


def test_gpu_facts_returns_the_engines_of_the_setting(tmp_path):
    args = {"root": str(CORPUS / "dgx-h100-ubuntu2204"), "container_engines": ["docker", "containerd"]}
    rc, result = run_module("gpu_facts", tmp_path / "args.json", args)
    assert rc == 0
    assert result["ansible_facts"]["gpu_install"]["engines"] == ["docker", "containerd"]


def test_every_gpu_facts_task_resolves_the_hosts_setting_unless_it_gives_its_own(tmp_path):
    """The action plugin hands gpu_install_container_engines to tasks that do not name container_engines (the
    roles' detections after a change), so that a later detection keeps the user's list."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from gpu_install.collection import collections_path

    binary = shutil.which("ansible", path=os.path.dirname(sys.executable)) or shutil.which("ansible")
    assert binary, "ansible is not installed beside this Python"
    root = str(CORPUS / "dgx-h100-ubuntu2204")
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path()),
        ANSIBLE_HOME=str(tmp_path),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="true",
    )

    def engines_of(args: str, setting: list | None) -> list:
        extra = ["-e", json.dumps({"gpu_install_container_engines": setting})] if setting is not None else []
        argv = [binary, "localhost", "-c", "local", "-m", "gpu_install.nvidia.gpu_facts", "-a", args, *extra]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        return result["gpu_install_facts"]["engines"]

    assert engines_of(f"root={root}", ["containerd"]) == ["containerd"]
    assert engines_of(f"root={root} container_engines=docker", ["containerd"]) == ["docker"]
    assert engines_of(f"root={root}", None) == ["docker"]


def test_plan_and_apply_list_each_engine_with_the_changes_of_its_role(tmp_path, capsys):
    from gpu_install.commands._common import print_engines, result_json
    from gpu_install.engine import Change, RunResult

    found = facts(podman=PODMAN, containerd=CONTAINERD_KUBELET)
    found["engines"] = ["docker", "containerd", "podman"]
    result = RunResult(check=True, run_id="r", artifacts=tmp_path, log=tmp_path / "log", facts=found)
    result.changes = [
        Change("h", "docker", "Install Docker", "gpu_install.nvidia.packages"),
        Change("h", "containerd", "Configure containerd", "gpu_install.nvidia.containerd_config"),
        Change("h", "nvidia_container", "Write the CDI spec", "gpu_install.nvidia.cdi_spec"),
        Change("h", "nvidia_driver", "Install the driver", "gpu_install.nvidia.packages"),
    ]
    assert result_json(result)["engines"] == [
        {"name": "docker", "summary": "not installed yet: gpu-install installs it", "changes": 1},
        {"name": "containerd", "summary": "containerd 1.7.24, no config.toml (defaults), CRI on, used by the kubelet",
         "changes": 1},
        {"name": "podman", "summary": "podman 5.4.2, reads CDI specs", "changes": 1},
    ]  # fmt: skip
    print_engines(result, "Plan:")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Plan: engines: docker, containerd, podman"
    assert "  - podman: podman 5.4.2, reads CDI specs; 1 change(s)" in out
