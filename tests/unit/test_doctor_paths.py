"""doctor's start paths: for each way users start a GPU container, one sentence per mode saying whether it works and,
where it cannot, what to use instead; none of them makes a healthy host unhealthy unless its mode promises the path.

Docker's /info is given as recorded on the hosts named (Docker 20.10 bookworm, 26.1 trixie, 28.5 on the GPU machine).
"""

from __future__ import annotations

from gpu_install import doctor_checks, doctor_paths

RUNTIME_20 = {"ServerVersion": "20.10.24+dfsg1", "DefaultRuntime": "nvidia", "Runtimes": {"nvidia": {}, "runc": {}}}
RUNTIME_28 = {"ServerVersion": "28.5.2", "DefaultRuntime": "nvidia", "Runtimes": {"nvidia": {}, "runc": {}}}
CDI_26 = {
    "ServerVersion": "26.1.5+dfsg1",
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {}},
    "CDISpecDirs": ["/etc/cdi"],
}
CDI_29 = dict(CDI_26, ServerVersion="29.0.1")
BOTH_HOOKS = {
    "nvidia-container-runtime-hook": "/usr/bin/nvidia-container-runtime-hook",
    "nvidia-cdi-hook": "/usr/bin/nvidia-cdi-hook",
}
NO_HOOKS = {"nvidia-container-runtime-hook": None, "nvidia-cdi-hook": None}
GPU_HOST = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}], "driver": {"loaded": True, "version": "580.159.04"}}
GPU_LESS = {"gpus": [], "driver": {"loaded": False}}


def inputs(mode: str, info: dict | None, hooks: dict, facts: dict = GPU_HOST) -> dict:
    return {
        "facts": facts,
        "docker": {"info": info, "error": None if info else "no_answer"},
        "settings": {"nvidia_container_mode": mode},
        "hooks": hooks,
    }


def by_id(given: dict) -> dict[str, dict]:
    return {c["id"]: c for c in (step() for step in doctor_paths.steps(given)) if c is not None}


def test_runtime_mode_serves_gpus_and_hints_at_buildkit_and_the_start_cost_without_failing():
    checks = by_id(inputs("runtime", RUNTIME_28, BOTH_HOOKS))
    assert {k: c["status"] for k, c in checks.items()} == {
        "gpus_option": "pass",
        "docker_build": "info",
        "start_cost": "info",
    }
    assert doctor_checks.healthy(checks.values())
    build = checks["docker_build"]
    assert "BuildKit" in build["message"] and "moby/buildkit#1800" in build["message"]
    assert "DOCKER_BUILDKIT=0" in build["fix"] and "dockerfile:1-labs" in build["fix"]
    assert "RUN --device=nvidia.com/gpu=all" in build["fix"]
    assert "2.03x" in checks["start_cost"]["message"] and "nvidia_container_mode: cdi" in checks["start_cost"]["fix"]


def test_runtime_mode_on_docker_20_says_the_classic_builder_is_the_default_that_gets_the_gpu():
    build = by_id(inputs("runtime", RUNTIME_20, BOTH_HOOKS))["docker_build"]
    assert "uses the classic builder, whose RUN steps get the GPU" in build["message"]
    assert "DOCKER_BUILDKIT=1" in build["message"]


def test_runtime_mode_without_nvidia_hook_fails_gpus_which_the_mode_promises():
    gpus = by_id(inputs("runtime", RUNTIME_28, NO_HOOKS))["gpus_option"]
    assert gpus["status"] == "fail" and "nvidia-container-runtime-hook" in gpus["message"]
    assert "restart Docker" in gpus["fix"]


def test_cdi_mode_says_gpus_and_compose_reservations_are_refused_and_names_the_cdi_names_instead():
    checks = by_id(inputs("cdi", CDI_26, NO_HOOKS))
    assert set(checks) == {"gpus_option", "docker_build"}  # no start cost hint: CDI mode is the fast path
    gpus = checks["gpus_option"]
    assert gpus["status"] == "info" and "refuses --gpus" in gpus["message"] and "exit 125" in gpus["message"]
    assert "deploy.resources.reservations.devices" in gpus["message"]
    assert "--device nvidia.com/gpu=all" in gpus["fix"] and "devices:" in gpus["fix"]
    assert "nvidia_container_mode: runtime" in gpus["fix"]
    build = checks["docker_build"]
    assert build["status"] == "info" and "no docker build RUN step gets the GPU" in build["message"]
    assert doctor_checks.healthy(checks.values())


def test_cdi_mode_on_a_docker_that_serves_gpus_through_cdi_says_so():
    gpus = by_id(inputs("cdi", CDI_29, BOTH_HOOKS))["gpus_option"]
    assert gpus["status"] == "info" and "through CDI" in gpus["message"] and "moby/moby#50228" in gpus["message"]
    # Docker 26 with only NVIDIA's hook: the hook serves it, outside what CDI mode checks
    hook = by_id(inputs("cdi", CDI_26, dict(NO_HOOKS, **{"nvidia-container-runtime-hook": "/usr/bin/x"})))
    assert "nvidia-container-runtime-hook" in hook["gpus_option"]["message"]


def test_runtime_mode_on_a_gpu_less_host_names_nvidia_runtime_refusing_gpu_requests():
    checks = by_id(inputs("runtime", RUNTIME_28, BOTH_HOOKS, facts=GPU_LESS))
    no_gpu = checks["runtime_no_gpu"]
    assert no_gpu["status"] == "warn"
    assert no_gpu["message"].startswith("This host has no NVIDIA GPU or no loaded NVIDIA driver, so containers that")
    assert "fail to start with the runtime's own error" in no_gpu["message"]
    assert "runtime_no_gpu" not in by_id(inputs("runtime", RUNTIME_28, BOTH_HOOKS))
    assert "runtime_no_gpu" not in by_id(inputs("cdi", CDI_26, NO_HOOKS, facts=GPU_LESS))


def test_no_start_path_line_while_docker_does_not_answer():
    assert by_id(inputs("runtime", None, BOTH_HOOKS)) == {}
    assert by_id(inputs("cdi", None, NO_HOOKS)) == {}


def test_start_path_lines_follow_the_docker_check_in_run_checks():
    given = inputs("cdi", CDI_26, NO_HOOKS)
    ids = [c["id"] for c in doctor_checks.run_checks(given)]
    assert ids.index("docker") + 1 == ids.index("gpus_option") and ids.index("docker_build") == ids.index("docker") + 2


def test_gather_hooks_finds_nvidia_hooks_on_path(tmp_path, monkeypatch):
    hook = tmp_path / "nvidia-cdi-hook"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = doctor_paths.gather_hooks()
    assert found["nvidia-cdi-hook"] == str(hook)
    assert set(found) == {"nvidia-container-runtime-hook", "nvidia-cdi-hook"}
