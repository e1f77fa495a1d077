"""verify once per container engine: what runs per engine and mode (pure), and containerd's path for real.

The plans (which command each check runs, per engine, mode and CLI version) are tested as functions. containerd's
path runs for real through this machine's containerd binary started privately for these tests (its own root,
state and socket under tmp; CRI off) and its real ``ctr``, with two fixtures built at test time and named as such:
the fake libnvidia-ml.so.1 (tests/unit/test_nvml_probe.py) for the GPUs outside, and the fake nvidia-smi image of
test_verify.py, which lists the GPUs NVIDIA_VISIBLE_DEVICES selects. NVIDIA's runtime is stood in for by a script
named ``nvidia-container-runtime`` that runs runc (a fixture: it adds nothing NVIDIA's runtime adds), so what is
proved is the plumbing from ctr through ``--runc-binary`` into the container. Podman is absent on this machine;
tests/integration/test_podman.py runs its path in a Debian trixie host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import module_utils
from conftest import run_module as _run_module
from test_nvml_probe import build_fake_nvml
from test_verify import A, B, C, fake_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.engines import build_fake_smi, per_gpu_checks  # noqa: E402

verify = module_utils("verify")

H = "GPU-11111111-2222-3333-4444-555555555555"
CTR_VERSION_16 = """Client:
  Version:  1.6.20~ds1
  Revision: 1.6.20~ds1-1+deb12u3
  Go version: go1.19.8

Server:
  Version:  1.6.20~ds1
  Revision: 1.6.20~ds1-1+deb12u3
  UUID: 03821152-0db5-4803-bd0a-93b41b25baa8
"""


def _gpus(*uuids: str) -> list[dict]:
    return [{"index": i, "uuid": u, "name": "NVIDIA H100 80GB HBM3"} for i, u in enumerate(uuids)]


# -- which checks per engine and mode --------------------------------------------------------------------------------
def test_docker_checks_keep_their_names_and_paths():
    assert verify.plan_checks(_gpus(A, B), "runtime", "docker") == verify.plan_checks(_gpus(A, B), "runtime")
    assert verify.engine_paths("docker", "cdi") == ("--device",)


def test_containerd_runtime_mode_checks_nvidia_visible_devices_all_then_each_gpu_by_index_and_uuid():
    checks = verify.plan_checks(_gpus(A, B), "runtime", "containerd", "1.7.24")
    assert [c["name"] for c in checks] == [
        "containerd all",
        "containerd index 0",
        f"containerd UUID {A}",
        "containerd index 1",
        f"containerd UUID {B}",
    ]
    assert {c["path"] for c in checks} == {"NVIDIA_VISIBLE_DEVICES"}
    assert [c["expected"] for c in checks] == [sorted([A, B]), [A], [A], [B], [B]]


def test_containerd_cdi_mode_uses_ctr_device_from_ctr_2_and_nvidia_runtime_cdi_names_before():
    assert verify.engine_paths("containerd", "cdi", "2.1.4") == ("--device",)
    assert verify.engine_paths("containerd", "cdi", "2.0.0") == ("--device",)
    assert verify.engine_paths("containerd", "cdi", "1.7.24") == ("NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu",)
    assert verify.engine_paths("containerd", "runtime", "2.1.4") == ("NVIDIA_VISIBLE_DEVICES",)


def test_ctr_runtime_argv_names_nvidia_runtime_as_the_runc_binary_of_the_runc_shim():
    argv = verify.ctr_argv(
        "/usr/bin/ctr", "runtime", "docker.io/library/debian:bookworm-slim", "1", "gpu-install-verify-x",
        address="/run/k3s/containerd/containerd.sock", runtime_binary="/usr/bin/nvidia-container-runtime",
    )  # fmt: skip
    assert argv == [
        "/usr/bin/ctr", "--address", "/run/k3s/containerd/containerd.sock", "--namespace", "gpu-install",
        "run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", "/usr/bin/nvidia-container-runtime",
        "--env", "NVIDIA_VISIBLE_DEVICES=1", "--env", "NVIDIA_DRIVER_CAPABILITIES=utility",
        "docker.io/library/debian:bookworm-slim", "gpu-install-verify-x",
        "nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip


def test_ctr_2_cdi_argv_names_the_cdi_device_and_no_runtime():
    argv = verify.ctr_argv("ctr", "cdi", "docker.io/library/debian:bookworm-slim", A, "id1", via="--device")
    assert argv[argv.index("run") :] == [
        "run", "--rm", "--device", f"nvidia.com/gpu={A}", "docker.io/library/debian:bookworm-slim", "id1",
        "nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip
    assert "--runc-binary" not in argv and not any(a.startswith("NVIDIA_") for a in argv)


def test_ctr_1_7_cdi_argv_gives_nvidia_runtime_the_qualified_cdi_name():
    via = verify.engine_paths("containerd", "cdi", "1.7.24")[0]
    runtime = "/usr/bin/nvidia-container-runtime"
    argv = verify.ctr_argv("ctr", "cdi", "ref", "all", "id1", via=via, runtime_binary=runtime)
    assert "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all" in argv
    assert argv[argv.index("--runc-binary") + 1] == "/usr/bin/nvidia-container-runtime"


def test_ctr_argv_puts_the_host_nvidia_smi_directory_on_the_container_path():
    argv = verify.ctr_argv("ctr", "runtime", "ref", "all", "id1", search_path="/usr/bin:/usr/local/nvidia/bin")
    assert argv[argv.index("ref") - 1] == "PATH=/usr/bin:/usr/local/nvidia/bin"


def test_podman_checks_cdi_devices_then_gpus_all_and_each_uuid_on_podman_5():
    checks = verify.plan_checks(_gpus(A, B), "runtime", "podman", "5.4.2")
    assert [(c["name"], c["path"], c["selector"]) for c in checks] == [
        ("podman all", "--device", "all"),
        ("podman index 0", "--device", "0"),
        (f"podman UUID {A}", "--device", A),
        ("podman index 1", "--device", "1"),
        (f"podman UUID {B}", "--device", B),
        ("podman --gpus all", "--gpus", "all"),
        (f"podman --gpus {A}", "--gpus", A),
        (f"podman --gpus {B}", "--gpus", B),
    ]
    assert verify.plan_checks(_gpus(A), "cdi", "podman", "5.0.0") == verify.plan_checks(_gpus(A), "runtime", "podman")


def test_podman_4_gets_cdi_devices_only():
    assert verify.engine_paths("podman", "cdi", "4.9.3") == ("--device",)
    assert {c["path"] for c in verify.plan_checks(_gpus(A, B), "cdi", "podman", "4.3.1")} == {"--device"}


def test_podman_argv_for_cdi_devices_and_for_gpus():
    assert verify.podman_argv("/usr/bin/podman", "img", "0", "n1") == [
        "/usr/bin/podman", "run", "--rm", "--network", "none", "--name", "n1", "--device", "nvidia.com/gpu=0",
        "--entrypoint", "nvidia-smi", "img", "--query-gpu=uuid", "--format=csv,noheader",
    ]  # fmt: skip
    argv = verify.podman_argv("podman", "img", A, via="--gpus", search_path="/bin:/usr/local/nvidia/bin")
    assert argv[4:10] == ["none", "--gpus", A, "-e", "PATH=/bin:/usr/local/nvidia/bin", "--entrypoint"]


def test_every_engine_check_name_is_unique_across_engines():
    gpus = _gpus(A, B, C)
    for mode in verify.MODES:
        names = [c["name"] for e in verify.ENGINES for c in verify.plan_checks(gpus, mode, e, "5.4.2")]
        assert len(names) == len(set(names))


def test_how_reads_the_cdi_names_given_to_nvidia_runtime_as_the_variable():
    assert verify.how("NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu", "all") == "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all"


@pytest.mark.parametrize(
    "image, full",
    [
        ("debian:bookworm-slim", "docker.io/library/debian:bookworm-slim"),
        ("nvidia/cuda:12.8.0-base-ubuntu24.04", "docker.io/nvidia/cuda:12.8.0-base-ubuntu24.04"),
        ("registry.example/base/debian:bookworm-slim", "registry.example/base/debian:bookworm-slim"),
        ("localhost/fixture:1", "localhost/fixture:1"),
        ("registry.example:5000/x", "registry.example:5000/x"),
        ("docker.io/library/busybox", "docker.io/library/busybox"),
    ],
)
def test_full_reference_is_docker_normalisation(image, full):
    assert verify.full_reference(image) == full


def test_ctr_version_sections_give_client_and_server_versions():
    assert verify._section_version(CTR_VERSION_16, "Client") == "1.6.20~ds1"
    assert verify._section_version(CTR_VERSION_16, "Server") == "1.6.20~ds1"
    assert verify._section_version(CTR_VERSION_16.split("Server", maxsplit=1)[0], "Server") is None
    assert verify._version_tuple("4.1.0") >= verify.PODMAN_CDI > verify._version_tuple("4.0.3")
    assert verify._version_tuple("1.6.20~ds1") == (1, 6, 20)


def test_fixes_name_the_engine_own_remedy():
    assert "NVIDIA's runtime /x/nvidia-container-runtime" in verify._fix_containerd(
        "runtime", {"runtime_binary": "/x/nvidia-container-runtime"}, "", "NVIDIA_VISIBLE_DEVICES"
    )
    assert "regenerate the CDI spec" in verify._fix_containerd("cdi", {}, "", "--device")
    assert "/etc/cdi or /var/run/cdi" in verify._fix_podman("cdi", {}, "unresolvable CDI devices nvidia.com/gpu=0")
    assert verify._fix_podman("cdi", {}, "unsatisfied condition: cuda>=13.1").startswith("the image requires")


# -- the module on this machine -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory) -> Path:
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture(scope="module")
def fake_smi(tmp_path_factory) -> Path:
    """test_verify.py's static fake nvidia-smi (FIXTURE), which lists the GPUs NVIDIA_VISIBLE_DEVICES selects."""
    return build_fake_smi(tmp_path_factory.mktemp("fake-smi"))


@pytest.fixture
def two_gpus(monkeypatch, fake_nvml):
    monkeypatch.setenv("FAKE_NVML_GPUS", f"{A},{B}")
    monkeypatch.delenv("FAKE_NVML_INIT", raising=False)
    monkeypatch.delenv("FAKE_NVML_LOST", raising=False)
    return {"nvml_library": str(fake_nvml)}


def run_module(tmp_path: Path, args: dict, check: bool = False) -> tuple[int, dict]:
    return _run_module("gpu_verify", tmp_path / "args.json", dict(args, _ansible_check_mode=check))


def test_an_absent_podman_fails_with_code_8_naming_it(tmp_path, two_gpus):
    if shutil.which("podman"):
        pytest.skip("podman is installed here")
    rc, result = run_module(tmp_path, dict(two_gpus, engines=["podman"], podman="podman"))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    assert result["gpu_install_error"]["reason"].startswith("Podman ('podman') was not found")
    assert result["engines"] == ["podman"] and [r["engine"] for r in result["runs"]] == ["podman"]
    assert result["podman"]["version"] is None and result["containerd"] is None


def test_an_unknown_engine_is_refused_by_the_module(tmp_path, two_gpus):
    rc, result = run_module(tmp_path, dict(two_gpus, engines=["cri-o"]))
    assert rc == 1 and "engines" in result["msg"]


def test_check_mode_lists_every_engine_commands_and_runs_nothing(tmp_path, two_gpus):
    args = dict(two_gpus, engines=["docker", "containerd", "podman"], mode="cdi", ctr="/nonexistent/ctr")
    rc, result = run_module(tmp_path, dict(args, podman="/nonexistent/podman"), check=True)
    assert rc == 0 and result["verified"] is None
    assert result["engines"] == ["docker", "containerd", "podman"]
    assert [r["engine"] for r in result["runs"]] == ["docker", "containerd", "podman"]
    engines = [c["engine"] for c in result["checks"]]
    assert engines == ["docker"] * 5 + ["containerd"] * 5 + ["podman"] * 8
    ctr_check = next(c for c in result["checks"] if c["engine"] == "containerd")
    assert ctr_check["argv"][:5] == ["/nonexistent/ctr", "--address", "/run/containerd/containerd.sock", "--namespace",
                                     "gpu-install"]  # fmt: skip
    assert all(c["ok"] is None and c["seen"] is None for c in result["checks"])


# -- containerd for real: a private containerd, ctr, a runc stand-in for NVIDIA's runtime ----------------------------
class Containerd:
    """This machine's containerd binary, started with its own root, state and socket under ``base`` (CRI off)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "containerd.sock")
        config = base / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
        )
        self.log = open(base / "containerd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"containerd did not start: {(base / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def ctr(self, *args: str, namespace: str = "gpu-install") -> subprocess.CompletedProcess:
        argv = ["ctr", "--address", self.address, "--namespace", namespace, "--connect-timeout", "2s", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def import_docker_image(self, tag: str) -> str:
        archive = self.base / "image.tar"
        subprocess.run(["docker", "save", "-o", str(archive), tag], check=True)
        out = self.ctr("images", "import", str(archive))
        assert out.returncode == 0, out.stderr
        return verify.full_reference(tag)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    if shutil.which("containerd") is None or shutil.which("ctr") is None or shutil.which("runc") is None:
        pytest.fail("these tests run this machine's containerd, ctr and runc (docker.io's dependencies)")
    base = Path(tmp_path_factory.mktemp("containerd"))
    os.chmod(base, 0o711)
    daemon = Containerd(base)
    yield daemon
    daemon.stop()
    subprocess.run(["umount", "-R", str(base / "state")], capture_output=True, check=False)


@pytest.fixture(scope="module")
def runc_standin(tmp_path_factory) -> Path:
    """FIXTURE: a script named nvidia-container-runtime that runs runc; it adds nothing NVIDIA's runtime adds."""
    path = Path(tmp_path_factory.mktemp("runtime")) / "nvidia-container-runtime"
    runc = shutil.which("runc")
    path.write_text(f'#!/bin/sh\n# gpu-install test fixture: a stand-in for NVIDIA\'s runtime\nexec {runc} "$@"\n')
    path.chmod(0o755)
    return path


def _ctr_args(containerd: Containerd, runtime: Path, image: str, **extra) -> dict:
    return dict(
        engines=["containerd"],
        containerd_address=containerd.address,
        runtime_path=str(runtime),
        image=image,
        pull=False,
        timeout=30,
        **extra,
    )


def test_containerd_runtime_mode_runs_ctr_through_the_runtime_binary_for_each_gpu(
    tmp_path, two_gpus, fake_smi, containerd, runc_standin
):
    ref = containerd.import_docker_image(fake_image(fake_smi, [A, B]))
    rc, result = run_module(tmp_path, dict(two_gpus, **_ctr_args(containerd, runc_standin, ref)))
    assert rc == 0, result.get("msg")
    assert result["verified"] is True and result["engines"] == ["containerd"]
    assert [(c["name"], c["seen"]) for c in result["checks"]] == per_gpu_checks("containerd", A, B)
    assert all(c["argv"][c["argv"].index("--runc-binary") + 1] == str(runc_standin) for c in result["checks"])
    state = result["containerd"]
    assert state["running"] is True and state["server_version"] and state["runtime_binary"] == str(runc_standin)
    assert result["runs"][0]["verified"] is True and result["docker"]["running"] is None
    assert containerd.ctr("containers", "ls", "-q").stdout.strip() == ""  # --rm left nothing


def test_containerd_container_seeing_another_gpu_fails_naming_engine_and_fix(
    tmp_path, two_gpus, fake_smi, containerd, runc_standin
):
    ref = containerd.import_docker_image(fake_image(fake_smi, [B, A]))  # the image's GPU order differs from NVML's
    rc, result = run_module(tmp_path, dict(two_gpus, **_ctr_args(containerd, runc_standin, ref)))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith(f"The containerd container for 'containerd index 0' (NVIDIA_VISIBLE_DEVICES=0) saw {B}")
    assert f"NVIDIA's runtime {runc_standin}" in reason


def test_containerd_cdi_mode_on_ctr_before_2_asks_the_runtime_for_cdi_names(
    tmp_path, two_gpus, fake_smi, containerd, runc_standin
):
    ref = containerd.import_docker_image(fake_image(fake_smi, [A, B]))
    rc, result = run_module(tmp_path, dict(two_gpus, mode="cdi", **_ctr_args(containerd, runc_standin, ref)))
    client = result["containerd"]["client_version"]
    if (verify._major(client) or 0) >= 2:
        pytest.skip(f"ctr {client} injects CDI devices itself")
    first = result["checks"][0]
    assert "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all" in first["argv"]
    # the stand-in runs runc, which resolves no CDI name: the fake nvidia-smi is given none it knows
    assert rc == 1 and first["rc"] == 6 and "No devices were found" in first["output"]
    assert "regenerate the CDI spec with gpu-install apply" in result["gpu_install_error"]["reason"]


def test_containerd_absent_image_with_pull_off_fails_naming_the_namespace(tmp_path, two_gpus, containerd, runc_standin):
    args = _ctr_args(containerd, runc_standin, "gpu-install-test.invalid/absent:1")
    rc, result = run_module(tmp_path, dict(two_gpus, **args))
    assert rc == 1 and result["checks"] == []
    assert result["gpu_install_error"]["reason"].startswith(
        "The image gpu-install-test.invalid/absent:1 is not in containerd's namespace gpu-install"
    )
    rc, result = run_module(tmp_path, dict(two_gpus, **args), check=True)
    assert rc == 0 and result["gpu_install_blocker"]["code"] == 8 and result["verified"] is None


def test_containerd_that_does_not_answer_fails_with_code_8(tmp_path, two_gpus, runc_standin):
    args = dict(engines=["containerd"], containerd_address=str(tmp_path / "none.sock"), runtime_path=str(runc_standin))
    rc, result = run_module(tmp_path, dict(two_gpus, **args))
    assert rc == 1 and result["gpu_install_error"]["reason"].startswith(
        f"containerd does not answer on {tmp_path / 'none.sock'}"
    )
    assert result["containerd"]["running"] is False and result["containerd"]["client_version"]


def test_containerd_hung_container_times_out_and_is_removed(tmp_path, two_gpus, fake_smi, containerd, runc_standin):
    ref = containerd.import_docker_image(fake_image(fake_smi, ["sleep"]))
    rc, result = run_module(tmp_path, dict(two_gpus, **dict(_ctr_args(containerd, runc_standin, ref), timeout=3)))
    assert rc == 1 and len(result["checks"]) == 1 and result["checks"][0]["rc"] is None
    assert "did not finish within 3 seconds" in result["gpu_install_error"]["reason"]
    assert containerd.ctr("containers", "ls", "-q").stdout.strip() == ""


# -- the role passes the host's engines ------------------------------------------------------------------------------
def test_role_verifies_the_engines_detection_resolved(tmp_path, monkeypatch):
    from gpu_install import engine

    monkeypatch.setenv("GPU_INSTALL_LOG_DIR", str(tmp_path / "logs"))
    playbook = tmp_path / "role.yml"
    playbook.write_text(
        "- name: The role on its own\n  hosts: all\n  gather_facts: false\n"
        "  roles:\n    - role: gpu_install.nvidia.gpu_verify\n"
    )
    result = engine.run_playbook(str(playbook), {}, check=True)
    assert result.error() is None, result.failures
    resolved = result.facts.get("engines") or ["docker"]
    assert result.results["verify"]["engines"] == resolved
    assert [r["engine"] for r in result.results["verify"]["runs"]] == resolved
