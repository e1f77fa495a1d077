"""The proof that a container sees the GPU: module_utils verify, the gpu_verify module and role, the CLI's lines.

Pure parts (nvidia-smi parsing, the comparison, the checks, the argv per mode) are tested as functions. The
module runs as Ansible runs it, against this machine's real dockerd and, where a GPU is needed, two fixtures
built at test time and named as such: a fake libnvidia-ml.so.1 (tests/unit/test_nvml_probe.py) for the GPUs
outside, and a tiny image whose static fake nvidia-smi lists the GPUs that Docker's default runtime would
give it by NVIDIA_VISIBLE_DEVICES (this machine's default runtime is runc, so the runtime mode runs for real up
to nvidia-smi). CDI mode fails here for real (Docker 20.10 has no CDI). The real GPU run is on the GPU machine.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import module_utils
from conftest import run_module as _run_module
from test_nvml_probe import build_fake_nvml

from gpu_install import engine
from gpu_install.commands import verify as verify_command

verify = module_utils("verify")

A = "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca"
B = "GPU-59612015-34ef-44a0-8fe4-7daa00bab28a"
C = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
H100_SMI_L = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca)\n"
KEYS = {"verified", "mode", "image", "nvml", "docker", "checks", "pulled", "changed"}
ABSENT_IMAGE = "gpu-install-test.invalid/absent:1"  # .invalid never resolves: a pull always fails


# -- nvidia-smi's output -------------------------------------------------------------------------------------
def test_parse_csv_query_output():
    assert verify.parse_smi(f"{A}\n{B}\n") == [A, B]


def test_parse_list_output_as_seen_on_the_h100():
    corpus = Path(__file__).resolve().parent / "cdi_corpus" / "h100" / "device" / "smi.txt"
    line = next(ln for ln in corpus.read_text().splitlines() if ln.startswith("GPU 0:"))
    assert verify.parse_smi(line) == [A]
    assert verify.parse_smi(H100_SMI_L) == [A]


def test_parse_ignores_mig_lines_banners_warnings_and_blank_lines():
    text = (
        "\n==========\n== CUDA ==\n==========\n"
        "WARNING: infoROM is corrupted at gpu 0000:00:06.0\n"
        f"GPU 0: NVIDIA A100-SXM4-40GB (UUID: {A})\r\n"
        "  MIG 1g.5gb      Device  0: (UUID: MIG-4b2f0f6a-2b1c-5a8e-9a43-1c3c0d0e1f20)\n"
        f"GPU 1: NVIDIA A100-SXM4-40GB (UUID: {B})\n"
        "\n"
    )
    assert verify.parse_smi(text) == [A, B]


def test_parse_finds_nothing_in_errors():
    assert verify.parse_smi("No devices were found\n") == []
    assert verify.parse_smi("Failed to initialize NVML: Unknown Error\n") == []
    assert verify.parse_smi('exec: "nvidia-smi": executable file not found in $PATH') == []
    assert verify.parse_smi(f"uuid\n{A}, extra\n") == []  # not the format asked for


def test_parse_keeps_a_gpu_listed_twice():
    assert verify.parse_smi(f"{A}\n{A}\n") == [A, A]


# -- the comparison --------------------------------------------------------------------------------------------
def test_compare_same_set_in_any_order_is_ok():
    assert verify.compare([A, B], [B, A]) == (True, "")


def test_compare_names_a_missing_gpu():
    assert verify.compare([A, B], [A]) == (False, f"missing {B}")


def test_compare_names_an_extra_gpu():
    assert verify.compare([A], [A, B]) == (False, f"unexpected {B}")


def test_compare_names_the_wrong_gpu_for_an_index():
    assert verify.compare([A], [B]) == (False, f"missing {A}; unexpected {B}")


def test_compare_no_gpu_seen():
    assert verify.compare([A], []) == (False, f"missing {A}")


def test_compare_a_gpu_seen_twice_is_not_ok():
    assert verify.compare([A], [A, A]) == (False, f"{A} twice")


# -- the checks and their argv ------------------------------------------------------------------------------------
def _gpus(*uuids):
    return [{"index": i, "uuid": u, "name": "NVIDIA H100 80GB HBM3"} for i, u in enumerate(uuids)]


def test_cdi_checks_all_then_each_gpu_alone_by_index_and_by_uuid():
    device = "--device"
    assert verify.plan_checks(_gpus(A, B, C), "cdi") == [
        {"name": "all", "path": device, "selector": "all", "expected": sorted([A, B, C])},
        {"name": "index 0", "path": device, "selector": "0", "expected": [A]},
        {"name": f"UUID {A}", "path": device, "selector": A, "expected": [A]},
        {"name": "index 1", "path": device, "selector": "1", "expected": [B]},
        {"name": f"UUID {B}", "path": device, "selector": B, "expected": [B]},
        {"name": "index 2", "path": device, "selector": "2", "expected": [C]},
        {"name": f"UUID {C}", "path": device, "selector": C, "expected": [C]},
    ]


def test_runtime_checks_the_variable_by_index_and_uuid_then_gpus_all_and_each_gpu_by_uuid():
    env = "NVIDIA_VISIBLE_DEVICES"
    assert verify.plan_checks(_gpus(A, B), "runtime") == [
        {"name": "all", "path": env, "selector": "all", "expected": sorted([A, B])},
        {"name": "index 0", "path": env, "selector": "0", "expected": [A]},
        {"name": f"UUID {A}", "path": env, "selector": A, "expected": [A]},
        {"name": "index 1", "path": env, "selector": "1", "expected": [B]},
        {"name": f"UUID {B}", "path": env, "selector": B, "expected": [B]},
        {"name": "--gpus all", "path": "--gpus", "selector": "all", "expected": sorted([A, B])},
        {"name": f"--gpus device={A}", "path": "--gpus", "selector": f"device={A}", "expected": [A]},
        {"name": f"--gpus device={B}", "path": "--gpus", "selector": f"device={B}", "expected": [B]},
    ]


def test_every_path_a_mode_promises_is_checked_and_no_other():
    assert verify.PATHS == {"runtime": ("NVIDIA_VISIBLE_DEVICES", "--gpus"), "cdi": ("--device",)}
    for mode, paths in verify.PATHS.items():
        checks = verify.plan_checks(_gpus(A, B), mode)
        assert {c["path"] for c in checks} == set(paths)
        for path in paths:  # each path proves all GPUs together and each alone
            mine = [c for c in checks if c["path"] == path]
            assert mine[0]["selector"] == "all" and {u for c in mine[1:] for u in c["expected"]} == {A, B}
        assert len({c["name"] for c in checks}) == len(checks)  # names stay unique keys


def test_checks_on_one_gpu_still_select_it_by_index_and_by_uuid():
    assert [c["selector"] for c in verify.plan_checks(_gpus(A), "cdi")] == ["all", "0", A]
    assert [c["selector"] for c in verify.plan_checks(_gpus(A), "runtime")] == ["all", "0", A, "all", f"device={A}"]


def test_checks_without_known_gpus_list_what_would_run():
    assert [c["expected"] for c in verify.plan_checks([], "cdi")] == [None, None]
    assert [c["selector"] for c in verify.plan_checks([{"index": 0, "uuid": None}], "cdi")] == ["all", "0"]
    assert [c["name"] for c in verify.plan_checks([], "runtime")] == ["all", "index 0", "--gpus all"]


def test_runtime_argv_uses_the_default_runtime_and_nvidia_variables():
    argv = verify.container_argv("docker", "runtime", "debian:bookworm-slim", "0", name="gpu-install-verify-x")
    assert argv == [
        "docker", "run", "--rm", "--network", "none", "--name", "gpu-install-verify-x",
        "-e", "NVIDIA_VISIBLE_DEVICES=0", "-e", "NVIDIA_DRIVER_CAPABILITIES=utility",
        "--entrypoint", "nvidia-smi", "debian:bookworm-slim", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip
    assert not any(a.startswith("--runtime") for a in argv)


def test_gpus_argv_asks_docker_for_a_device_request_and_sets_no_nvidia_variable():
    argv = verify.container_argv("docker", "runtime", "img:1", f"device={A}", via="--gpus")
    assert argv == [
        "docker", "run", "--rm", "--network", "none", "--gpus", f"device={A}",
        "--entrypoint", "nvidia-smi", "img:1", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip
    assert not any("NVIDIA_" in a or a.startswith("--runtime") for a in argv)
    with pytest.raises(ValueError):  # cdi mode does not promise --gpus
        verify.container_argv("docker", "cdi", "img:1", "all", via="--gpus")


def test_cdi_argv_names_the_cdi_device_and_no_nvidia_variables():
    argv = verify.container_argv("/usr/bin/docker", "cdi", "img:1", A)
    assert argv == [
        "/usr/bin/docker", "run", "--rm", "--network", "none", "--device", f"nvidia.com/gpu={A}",
        "--entrypoint", "nvidia-smi", "img:1", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip
    assert not any("NVIDIA_" in a or a.startswith("--runtime") for a in argv)
    assert "nvidia.com/gpu=all" in verify.container_argv("docker", "cdi", "img:1", "all")


def test_how_a_check_asks_for_gpus_reads_as_the_user_writes_it():
    assert verify.how("NVIDIA_VISIBLE_DEVICES", "0") == "NVIDIA_VISIBLE_DEVICES=0"
    assert verify.how("--gpus", f"device={A}") == f"--gpus device={A}"
    assert verify.how("--device", "all") == "--device nvidia.com/gpu=all"


# -- nvidia-smi where NVIDIA's runtime mounts it: its host path, maybe off the image's PATH ---------------------------
def test_container_path_adds_the_host_directory_of_nvidia_smi_after_the_image_path():
    env = ["PATH=/opt/conda/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    found = verify.smi_search_path(env, "/usr/local/nvidia/bin/nvidia-smi")
    assert found == "/opt/conda/bin:/usr/bin:/bin:/usr/local/nvidia/bin"  # the image's own nvidia-smi first
    argv = verify.container_argv("docker", "runtime", "img", "all", search_path=found)
    assert argv[-7:-5] == ["-e", f"PATH={found}"] and argv[-5:-3] == ["--entrypoint", "nvidia-smi"]


def test_container_path_is_left_alone_where_the_image_path_finds_nvidia_smi():
    assert verify.smi_search_path(["PATH=/usr/local/bin:/usr/bin"], "/usr/bin/nvidia-smi") is None
    assert verify.smi_search_path(["PATH=/usr/bin"], None) is None  # no nvidia-smi on the host: nothing to add
    assert "-e" not in verify.container_argv("docker", "cdi", "img", "all", search_path=None)


def test_container_path_of_an_image_without_path_starts_from_docker_default():
    found = verify.smi_search_path([], "/usr/local/nvidia/bin/nvidia-smi")
    assert found == verify.DOCKER_DEFAULT_PATH + ":/usr/local/nvidia/bin"
    assert verify.smi_search_path(None, "/opt/nv/nvidia-smi") == verify.DOCKER_DEFAULT_PATH + ":/opt/nv"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        verify.container_argv("docker", "legacy", "img", "all")
    result = verify.verify(mode="legacy")
    assert result["verified"] is False and result["error"]["code"] == 8


# -- fixtures: dockerd, the fake NVML, the fake nvidia-smi image -----------------------------------------------------
FAKE_SMI_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A stand-in for nvidia-smi in a test image: /etc/fake-gpus lists the host's GPU UUIDs in index order (a first
   line "sleep" hangs it); NVIDIA_VISIBLE_DEVICES selects them as the NVIDIA runtime would (all, indexes, UUIDs,
   comma-separated). Prints `--query-gpu=uuid --format=csv,noheader` lines, or `-L` lines. */
int main(int argc, char **argv) {
    char gpus[16][128];
    int n = 0, list = 0;
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "-L")) list = 1;
    FILE *f = fopen("/etc/fake-gpus", "r");
    if (!f) { puts("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."); return 9; }
    while (n < 16 && fgets(gpus[n], sizeof gpus[n], f)) { gpus[n][strcspn(gpus[n], "\r\n")] = 0; if (*gpus[n]) n++; }
    fclose(f);
    if (n && !strcmp(gpus[0], "sleep")) { sleep(60); return 0; }
    const char *env = getenv("NVIDIA_VISIBLE_DEVICES");
    if (!env || !*env || !strcmp(env, "void") || !strcmp(env, "none")) { puts("No devices were found"); return 6; }
    char sel[1024];
    strncpy(sel, env, sizeof sel - 1);
    sel[sizeof sel - 1] = 0;
    int shown = 0;
    for (char *tok = strtok(sel, ","); tok; tok = strtok(NULL, ",")) {
        for (int i = 0; i < n; i++) {
            char idx[8];
            snprintf(idx, sizeof idx, "%d", i);
            if (strcmp(tok, "all") && strcmp(tok, idx) && strcmp(tok, gpus[i])) continue;
            if (list) printf("GPU %d: NVIDIA H100 80GB HBM3 (UUID: %s)\n", shown, gpus[i]);
            else printf("%s\n", gpus[i]);
            shown++;
        }
    }
    if (!shown) { puts("No devices were found"); return 6; }
    return 0;
}
"""


def _docker_ok() -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("these tests need a running dockerd (scripts/test installs docker.io and starts it)")


@pytest.fixture(scope="module")
def fake_smi(tmp_path_factory) -> Path:
    _docker_ok()
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("the fake nvidia-smi is compiled here: install gcc and libc6-dev")
    out = tmp_path_factory.mktemp("fake-smi")
    (out / "fake_smi.c").write_text(FAKE_SMI_C)
    subprocess.run([cc, "-static", "-O1", "-o", str(out / "nvidia-smi"), str(out / "fake_smi.c")], check=True)
    return out / "nvidia-smi"


def fake_image(smi: Path | None, gpus: list[str]) -> str:
    """A docker-imported image holding the fake nvidia-smi (unless None) and /etc/fake-gpus; tagged by content."""
    import hashlib

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = {"etc/fake-gpus": ("\n".join(gpus) + "\n").encode()}
        if smi is not None:
            files["usr/bin/nvidia-smi"] = smi.read_bytes()
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    tag = f"local/gpu-install-verify-fake:{hashlib.sha256(data).hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        subprocess.run(["docker", "import", "-", tag], input=data, capture_output=True, check=True)
    return tag


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory) -> Path:
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


def run_module(tmp_path: Path, args: dict, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    return _run_module("gpu_verify", tmp_path / "args.json", dict(args, _ansible_check_mode=check, _ansible_diff=diff))


def _leftovers(checks: list[dict]) -> list[str]:
    """The containers these checks started that still exist (by the names in their argv)."""
    names = [c["argv"][c["argv"].index("--name") + 1] for c in checks]
    assert names and all(n.startswith("gpu-install-verify-") for n in names)
    out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    return [n for n in out.stdout.split() if n in names]


# -- the module on this machine, as it is ------------------------------------------------------------------------------
def test_module_fails_with_code_8_when_nvml_cannot_be_read(tmp_path):
    rc, result = run_module(tmp_path, {"nvml_library": str(tmp_path / "no" / "libnvidia-ml.so.1")})
    assert rc == 1 and result["failed"] is True
    assert result["gpu_install_error"]["code"] == 8
    assert result["gpu_install_error"]["reason"].startswith("NVML cannot be read on the host")
    assert "gpu-install apply" in result["gpu_install_error"]["reason"]
    assert result["nvml"]["available"] is False and result["checks"] == [] and result["verified"] is False
    assert KEYS <= set(result)


def test_module_on_this_machine_without_a_driver_fails_with_code_8(tmp_path):
    rc, result = run_module(tmp_path, {})
    if result["nvml"]["available"]:
        pytest.skip("this machine has an NVIDIA driver")
    assert rc == 1 and result["gpu_install_error"]["code"] == 8 and "libnvidia-ml.so.1" in result["msg"]


def test_check_mode_without_a_driver_does_not_fail_and_runs_nothing(tmp_path):
    _docker_ok()
    args = {"image": ABSENT_IMAGE, "nvml_library": str(tmp_path / "none.so")}
    rc, result = run_module(tmp_path, args, check=True, diff=True)
    assert rc == 0 and result["verified"] is None and result["changed"] is True  # the real run would pull
    assert result["diff"] == {"prepared": f"gpu_verify would pull the image {ABSENT_IMAGE}, which was not on the host"}
    assert [c["name"] for c in result["checks"]] == ["all", "index 0", "--gpus all"]
    assert all(c["ok"] is None and c["seen"] is None and c["argv"][1] == "run" for c in result["checks"])
    assert result["docker"]["running"] is True and result["pulled"] is False
    assert subprocess.run(["docker", "image", "inspect", ABSENT_IMAGE], capture_output=True).returncode != 0


def test_module_rejects_a_timeout_below_one_second(tmp_path):
    rc, result = run_module(tmp_path, {"timeout": 0})
    assert rc == 1 and result["gpu_install_error"]["code"] == 4


# -- the module with the fake NVML: docker's side ---------------------------------------------------------------------
@pytest.fixture
def two_gpus(monkeypatch, fake_nvml):
    monkeypatch.setenv("FAKE_NVML_GPUS", f"{A},{B}")
    monkeypatch.delenv("FAKE_NVML_INIT", raising=False)
    monkeypatch.delenv("FAKE_NVML_LOST", raising=False)
    return {"nvml_library": str(fake_nvml)}


def test_absent_image_with_pull_off_fails_with_code_8_naming_the_image(tmp_path, two_gpus):
    _docker_ok()
    rc, result = run_module(tmp_path, dict(two_gpus, image=ABSENT_IMAGE, pull=False))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith(f"The image {ABSENT_IMAGE} is not on this host") and "gpu_verify_pull" in reason
    assert result["checks"] == [] and result["pulled"] is False and result["nvml"]["available"] is True


def test_absent_image_with_pull_off_in_check_mode_is_a_blocker_not_a_failure(tmp_path, two_gpus):
    _docker_ok()
    rc, result = run_module(tmp_path, dict(two_gpus, image=ABSENT_IMAGE, pull=False), check=True)
    assert rc == 0 and result["gpu_install_blocker"]["code"] == 8 and result["changed"] is False
    assert [c["expected"] for c in result["checks"]] == [sorted([A, B]), [A], [A], [B], [B], sorted([A, B]), [A], [B]]


def test_a_failed_pull_fails_with_code_8_and_docker_own_error(tmp_path, two_gpus):
    _docker_ok()
    rc, result = run_module(tmp_path, dict(two_gpus, image=ABSENT_IMAGE, timeout=60))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    assert result["gpu_install_error"]["reason"].startswith(f"Pulling the image {ABSENT_IMAGE} failed (")
    assert result["pulled"] is False


def test_a_missing_docker_cli_fails_with_code_8(tmp_path, two_gpus):
    rc, result = run_module(tmp_path, dict(two_gpus, docker=str(tmp_path / "bin" / "docker")))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    assert "Docker CLI" in result["gpu_install_error"]["reason"]


def test_a_docker_that_does_not_answer_fails_with_code_8(tmp_path, two_gpus, monkeypatch):
    _docker_ok()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    rc, result = run_module(tmp_path, two_gpus)
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    assert result["gpu_install_error"]["reason"].startswith("Docker is not running or does not answer")
    assert result["docker"]["running"] is False


def test_no_gpu_in_nvml_fails_with_code_8(tmp_path, two_gpus, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_GPUS", "")
    rc, result = run_module(tmp_path, two_gpus)
    assert rc == 1 and "lists no GPU" in result["gpu_install_error"]["reason"]


def test_a_gpu_nvml_cannot_read_fails_with_code_8(tmp_path, two_gpus, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_LOST", "1")
    rc, result = run_module(tmp_path, two_gpus)
    assert rc == 1 and result["gpu_install_error"]["reason"].startswith("NVML cannot read GPU 1 on the host")


# -- the module end to end through Docker's default runtime (fake nvidia-smi) -----------------------------------------
def _gpus_served_here() -> bool:
    """Whether this machine's dockerd serves --gpus (it does only with NVIDIA's hook on its PATH at start)."""
    info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return "nvidia" in info.stdout


def test_runtime_mode_proves_the_variable_then_fails_on_gpus_where_docker_does_not_serve_them(
    tmp_path, two_gpus, fake_smi
):
    """This machine's dockerd runs runc by default and has no NVIDIA hook: the fake nvidia-smi answers
    NVIDIA_VISIBLE_DEVICES as NVIDIA's runtime would, and Docker itself refuses --gpus (exit 125)."""
    if _gpus_served_here():
        pytest.skip("this dockerd has NVIDIA's runtime")
    image = fake_image(fake_smi, [A, B])
    rc, result = run_module(tmp_path, dict(two_gpus, image=image, pull=False))
    assert rc == 1 and result["verified"] is False and result["mode"] == "runtime"
    assert [(c["name"], c["path"], c["expected"], c["seen"], c["ok"]) for c in result["checks"]] == [
        ("all", "NVIDIA_VISIBLE_DEVICES", sorted([A, B]), [A, B], True),
        ("index 0", "NVIDIA_VISIBLE_DEVICES", [A], [A], True),
        (f"UUID {A}", "NVIDIA_VISIBLE_DEVICES", [A], [A], True),
        ("index 1", "NVIDIA_VISIBLE_DEVICES", [B], [B], True),
        (f"UUID {B}", "NVIDIA_VISIBLE_DEVICES", [B], [B], True),
        ("--gpus all", "--gpus", sorted([A, B]), [], False),
        (f"--gpus device={A}", "--gpus", [A], [], False),
        (f"--gpus device={B}", "--gpus", [B], [], False),
    ]
    for check, selector in zip(result["checks"][:5], ["all", "0", A, "1", B], strict=True):
        assert f"NVIDIA_VISIBLE_DEVICES={selector}" in check["argv"] and "--runtime" not in " ".join(check["argv"])
    assert all(c["rc"] == 125 and "could not select device driver" in c["output"] for c in result["checks"][5:])
    reason = result["gpu_install_error"]["reason"]
    assert result["gpu_install_error"]["code"] == 8
    assert reason.startswith("The container for '--gpus all' failed with exit code 125 (")
    assert "nvidia-container-runtime-hook" in reason and "restart Docker" in reason
    assert _leftovers(result["checks"]) == []


def test_verify_prints_a_line_per_check(tmp_path, two_gpus, fake_smi):
    if _gpus_served_here():
        pytest.skip("this dockerd has NVIDIA's runtime")
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(fake_smi, [A, B]), pull=False))
    lines = [verify_command.check_line(c) for c in result["checks"]]
    assert lines == [
        f"  ok    all: expected {', '.join(sorted([A, B]))}; seen {A}, {B}",
        f"  ok    index 0: expected {A}; seen {A}",
        f"  ok    UUID {A}: expected {A}; seen {A}",
        f"  ok    index 1: expected {B}; seen {B}",
        f"  ok    UUID {B}: expected {B}; seen {B}",
        f"  FAIL  --gpus all: expected {', '.join(sorted([A, B]))}; seen no GPU (container exit code 125)",
        f"  FAIL  --gpus device={A}: expected {A}; seen no GPU (container exit code 125)",
        f"  FAIL  --gpus device={B}: expected {B}; seen no GPU (container exit code 125)",
    ]


def test_verified_summary_names_the_mode_gpus_driver_and_image():
    result = {
        "mode": "runtime",
        "image": "debian:bookworm-slim",
        "nvml": {"driver_version": "580.159.04", "gpus": _gpus(A, B)},
        "checks": [{"path": p} for p in verify.PATHS["runtime"] for _gpu in range(3)],
    }
    assert verify_command.summary(result) == (
        "Verified: containers see the GPU through runtime mode (NVIDIA_VISIBLE_DEVICES, --gpus): 2 GPUs "
        "(NVIDIA H100 80GB HBM3), driver 580.159.04, image debian:bookworm-slim."
    )


def test_a_container_missing_a_gpu_fails_naming_it(tmp_path, two_gpus, fake_smi, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_GPUS", f"{A},{B},{C}")
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(fake_smi, [A, B]), pull=False))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8 and result["verified"] is False
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith("The container for 'all' (NVIDIA_VISIBLE_DEVICES=all) saw ")
    assert f"(missing {C})" in reason and "default runtime is runc, not nvidia" in reason
    # C is not there; --gpus is not served here
    assert [c["ok"] for c in result["checks"]] == [False, True, True, True, True, False, False] + [False] * 4
    line = verify_command.check_line(result["checks"][0])
    assert line.startswith("  FAIL  all: expected ") and line.endswith(f"(missing {C})")


def test_a_container_with_an_extra_gpu_fails_naming_it(tmp_path, two_gpus, fake_smi, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_GPUS", A)
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(fake_smi, [A, B]), pull=False))
    assert rc == 1 and f"(unexpected {B})" in result["gpu_install_error"]["reason"]
    assert [c["ok"] for c in result["checks"]] == [False, True, True, False, False]


def test_a_container_given_the_wrong_gpu_for_index_0_fails(tmp_path, two_gpus, fake_smi):
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(fake_smi, [B, A]), pull=False))
    assert rc == 1
    assert [c["ok"] for c in result["checks"]] == [True, False, True, False, True, False, False, False]
    assert result["gpu_install_error"]["reason"].startswith(
        f"The container for 'index 0' (NVIDIA_VISIBLE_DEVICES=0) saw {B} where NVML on the host gives {A} "
        f"(missing {A}; unexpected {B}): "
    )


def test_a_container_without_nvidia_smi_fails_with_docker_own_error(tmp_path, two_gpus):
    _docker_ok()
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(None, [A, B]), pull=False))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith("The container for 'all' (NVIDIA_VISIBLE_DEVICES=all) failed with exit code ")
    assert "nvidia-smi was not put into the container" in reason and "runc, not nvidia" in reason
    assert all(c["rc"] not in (0, None) and c["output"] for c in result["checks"])
    assert _leftovers(result["checks"]) == []


def test_cdi_mode_on_a_docker_without_cdi_fails_with_code_8(tmp_path, two_gpus, fake_smi):
    info = subprocess.run(["docker", "info", "--format", "{{.CDISpecDirs}}"], capture_output=True, text=True)
    if info.returncode == 0 and info.stdout.strip() not in ("", "[]", "<no value>"):
        pytest.skip("this dockerd reads CDI specs")
    image = fake_image(fake_smi, [A, B])
    rc, result = run_module(tmp_path, dict(two_gpus, image=image, pull=False, mode="cdi"))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8 and result["mode"] == "cdi"
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith("The container for 'all' (--device nvidia.com/gpu=all) failed with exit code ")
    assert "does not read CDI specs: upgrade Docker to 25 or newer" in reason
    assert result["checks"][0]["argv"][7:9] == ["--device", "nvidia.com/gpu=all"]


def test_a_hung_container_times_out_and_is_removed(tmp_path, two_gpus, fake_smi):
    rc, result = run_module(tmp_path, dict(two_gpus, image=fake_image(fake_smi, ["sleep"]), pull=False, timeout=3))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    reason = result["gpu_install_error"]["reason"]
    assert "did not finish within 3 seconds" in reason and "gpu_verify_timeout" in reason
    assert reason.endswith("(the remaining 7 check(s) were not run).")
    assert len(result["checks"]) == 1 and result["checks"][0]["rc"] is None
    assert _leftovers(result["checks"]) == []


def test_check_mode_with_the_image_present_runs_no_container(tmp_path, two_gpus, fake_smi):
    image = fake_image(fake_smi, [A, B, "this image is for the check mode test alone"])
    since = subprocess.run(["date", "+%s"], capture_output=True, text=True, check=True).stdout.strip()
    rc, result = run_module(tmp_path, dict(two_gpus, image=image, pull=False), check=True)
    assert rc == 0 and result["verified"] is None and result["changed"] is False
    assert "gpu_install_blocker" not in result
    assert [c["ok"] for c in result["checks"]] == [None] * 8
    until = str(int(subprocess.run(["date", "+%s"], capture_output=True, text=True, check=True).stdout) + 1)
    events = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            "type=container",
            "--filter",
            f"image={image}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert events == ""


# -- the role, on its own, through the engine -------------------------------------------------------------------------
def _role_playbook(tmp_path: Path) -> str:
    path = tmp_path / "role.yml"
    path.write_text(
        "- name: The role on its own\n  hosts: all\n  gather_facts: false\n"
        "  roles:\n    - role: gpu_install.nvidia.gpu_verify\n"
    )
    return str(path)


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_INSTALL_LOG_DIR", str(tmp_path / "logs"))


def test_role_on_its_own_detects_the_host_and_fails_with_code_8_without_a_driver(tmp_path, log_dir):
    result = engine.run_playbook(_role_playbook(tmp_path), {"gpu_verify_pull": False}, check=False)
    if result.results.get("verify", {}).get("verified") is True:
        pytest.skip("this machine has a GPU that containers see")
    err = result.error()
    assert err is not None and err.code == 8
    assert result.facts.get("os", {}).get("id")  # detected by the role itself
    record = result.results["verify"]
    assert record["verified"] is False and record["gpu_install_error"]["code"] == 8
    assert "invocation" not in record and "exception" not in record


def test_role_in_check_mode_does_not_fail(tmp_path, log_dir):
    result = engine.run_playbook(_role_playbook(tmp_path), {}, check=True)
    assert result.error() is None, result.failures
    assert result.results["verify"]["verified"] is None


def test_role_skips_an_image_build_saying_so(tmp_path, log_dir):
    result = engine.run_playbook(_role_playbook(tmp_path), {"gpu_install_image_build": True}, check=False)
    assert result.error() is None and "verify" not in result.results
    assert "gpu_verify skipped: gpu_install_image_build is true" in result.log.read_text()


def test_role_rejects_a_wrong_setting_by_its_spec(tmp_path, log_dir):
    result = engine.run_playbook(_role_playbook(tmp_path), {"gpu_verify_pull": "sometimes"}, check=False)
    err = result.error()
    assert err is not None and "gpu_verify_pull" in json.dumps(result.failures)


# -- the fix each failure names --------------------------------------------------------------------------------------
def test_fix_for_runtime_mode_names_the_default_runtime_docker_has():
    assert "default runtime is runc, not nvidia" in verify._fix("runtime", {"default_runtime": "runc"})
    assert "NVIDIA Container Toolkit matches the driver" in verify._fix("runtime", {"default_runtime": "nvidia"})


def test_fix_for_gpus_docker_refuses_names_nvidia_hook_and_a_restart():
    output = 'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].'
    fix = verify._fix("runtime", {"default_runtime": "nvidia"}, output, "--gpus")
    assert "nvidia-container-runtime-hook" in fix and "restart Docker" in fix
    assert "nvidia-container-runtime-hook" not in verify._fix("runtime", {"default_runtime": "nvidia"}, output)


def test_fix_for_cdi_mode_depends_on_the_docker_version():
    assert "upgrade Docker to 25 or newer" in verify._fix("cdi", {"server_version": "24.0.7"})
    assert "regenerate the CDI spec" in verify._fix("cdi", {"server_version": "26.1.5"})
    assert "regenerate the CDI spec" in verify._fix("cdi", {"server_version": None})


def test_module_documentation_parses():
    from conftest import ansible_doc

    doc = ansible_doc("gpu_verify")
    options = doc["doc"]["options"]
    assert set(options) == {
        *("mode", "image", "pull", "docker", "timeout", "nvml_library"),
        *("engines", "ctr", "containerd_address", "runtime_path", "podman"),
    }
    assert options["engines"]["default"] == ["docker"]
    assert options["image"]["default"] == "debian:bookworm-slim"
    assert {"verified", "checks", "nvml", "gpu_install_error"} <= set(doc["return"])


def test_fix_for_the_faq_cuda_requirement_of_an_image():
    output = (
        "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: ... "
        "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.6, please update your driver"
    )
    assert "requires a newer CUDA than this driver supports" in verify._fix("runtime", {}, output)


def test_fix_for_a_driver_library_version_mismatch_in_the_container():
    output = "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.159"
    assert verify._fix("cdi", {"server_version": "26.1.5"}, output).startswith("the loaded kernel module")


def test_an_nvml_version_mismatch_outside_says_reboot(tmp_path, two_gpus, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_INIT", "18")
    rc, result = run_module(tmp_path, two_gpus)
    reason = result["gpu_install_error"]["reason"]
    assert rc == 1 and "RM has detected an NVML/RM version mismatch" in reason and "reboot" in reason
