"""doctor on containerd nodes and for rootless Podman: the checks from inputs gathered on tmp trees.

containerd's merged configuration comes from the real ``containerd --config F config dump`` of Debian trixie's
containerd 1.7 and sid's 2.1 (tests/fixtures/containerd_bins.py), over configuration files written here the way a
node has them (a user's config.toml importing gpu-install's drop-in). Podman's inputs are read from a host tree
under tmp (device nodes stood in for by files with the modes and groups under test: the checks read only modes and
group ids).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import make_tree

from gpu_install import doctor_checks, doctor_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import containerd_bins  # noqa: E402

RUNTIME = "/usr/bin/nvidia-container-runtime"
PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


@pytest.fixture(scope="module")
def bins() -> dict[str, str]:
    return {suite: str(containerd_bins.binaries(suite) / "containerd") for suite in ("trixie", "sid")}


def node(tmp: Path, version: int, drop_in: str | None, user: str = "") -> str:
    """A node's config.toml (version ``version``, importing conf.d/*.toml) and gpu-install's drop-in."""
    conf = tmp / "etc/containerd"
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "config.toml").write_text(
        f'version = {version}\nimports = ["{conf}/conf.d/*.toml"]\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n{user}'
    )
    if drop_in is not None:
        (conf / "conf.d/99-gpu-install.toml").write_text(f"version = {version}\n{drop_in}")
    return str(conf / "config.toml")


def nvidia_drop_in(version: int, binary: str = RUNTIME, default: str = "runc", cdi: bool = True) -> str:
    plugin = PLUGIN[version]
    return (
        f'[plugins."{plugin}"]\n  enable_cdi = {str(cdi).lower()}\n'
        f'  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]\n'
        f'[plugins."{plugin}".containerd]\n  default_runtime_name = "{default}"\n'
        f'[plugins."{plugin}".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
        f'[plugins."{plugin}".containerd.runtimes.nvidia]\n  runtime_type = "io.containerd.runc.v2"\n'
        f'[plugins."{plugin}".containerd.runtimes.nvidia.options]\n  BinaryName = "{binary}"\n'
    )


def facts(version: str = "1.7.24", config: str = "/etc/containerd/config.toml", **containerd) -> dict:
    found = {"present": True, "version": version, "config_path": config, "cri_enabled": True, "kubelet": False}
    found.update(containerd)
    return {"containerd": found, "docker": {}, "podman": {"present": False}, "engines": ["containerd"]}


def by_id(checks: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in checks}


# -- containerd: CRI plugin ----------------------------------------------------------------------------------------
def test_cri_plugin_on_passes_and_names_the_kubelet():
    result = doctor_checks.check_containerd_cri(facts(kubelet=True))
    assert result["status"] == "pass" and "a kubelet on this host uses it" in result["message"]


def test_cri_plugin_disabled_fails_under_a_kubelet_and_warns_without_one():
    assert doctor_checks.check_containerd_cri(facts(cri_enabled=False))["status"] == "warn"
    result = doctor_checks.check_containerd_cri(facts(cri_enabled=False, disabled_plugins=["cri"], kubelet=True))
    assert result["status"] == "fail"
    assert result["message"].startswith("containerd 1.7.24's CRI plugin is disabled (disabled_plugins in")
    assert "Remove the CRI plugin from disabled_plugins" in result["fix"]


def test_a_config_containerd_refuses_fails_the_cri_check():
    result = doctor_checks.check_containerd_cri(facts(config_error="disabled_plugins names 'cri', but ..."))
    assert result["status"] == "fail" and "cannot be used" in result["message"]


# -- containerd: the nvidia runtime in `containerd config dump` --------------------------------------------------
@pytest.mark.parametrize("suite, version", [("trixie", 2), ("sid", 3)])
def test_the_nvidia_runtime_in_the_merged_config_passes(tmp_path, bins, suite, version):
    config = node(tmp_path, version, nvidia_drop_in(version, binary="/bin/sh"))
    found = doctor_paths.gather_containerd(facts(config=config), bins[suite])
    assert found["error"] is None and found["runtime_binary_exists"] is True
    result = doctor_checks.check_containerd_runtime(facts(config=config), {}, found)
    assert result["status"] == "pass", result
    assert result["message"] == "containerd has the nvidia runtime (/bin/sh) beside its default runc."


@pytest.mark.parametrize("suite, version", [("trixie", 2), ("sid", 3)])
def test_a_config_without_the_drop_in_fails_naming_the_runtimes_it_has(tmp_path, bins, suite, version):
    config = node(tmp_path, version, None)
    found = doctor_paths.gather_containerd(facts(config=config), bins[suite])
    result = doctor_checks.check_containerd_runtime(facts(config=config), {}, found)
    assert result["status"] == "fail"
    assert result["message"].startswith(f"containerd's CRI plugin ({PLUGIN[version]}) has no nvidia runtime")
    assert "runtimes: runc" in result["message"] and "gpu-install apply" in result["fix"]


def test_a_runtime_binary_that_is_gone_fails(tmp_path, bins):
    config = node(tmp_path, 3, nvidia_drop_in(3, binary=str(tmp_path / "gone/nvidia-container-runtime")))
    found = doctor_paths.gather_containerd(facts("2.1.9", config=config), bins["sid"])
    assert found["runtime_binary_exists"] is False
    result = doctor_checks.check_containerd_runtime(facts(config=config), {}, found)
    assert result["status"] == "fail" and "which does not exist" in result["message"]


def test_default_runtime_asked_but_not_set_fails_and_set_passes(tmp_path, bins):
    config = node(tmp_path, 2, nvidia_drop_in(2, binary="/bin/sh"))
    found = doctor_paths.gather_containerd(facts(config=config), bins["trixie"])
    result = doctor_checks.check_containerd_runtime(facts(config=config), {"containerd_default_runtime": True}, found)
    assert result["status"] == "fail" and "default runtime is runc" in result["message"]
    config = node(tmp_path, 2, nvidia_drop_in(2, binary="/bin/sh", default="nvidia"))
    found = doctor_paths.gather_containerd(facts(config=config), bins["trixie"])
    result = doctor_checks.check_containerd_runtime(facts(config=config), {"containerd_default_runtime": True}, found)
    assert result["status"] == "pass" and "as its default runtime" in result["message"]


def test_a_config_containerd_cannot_load_fails_with_its_message(tmp_path, bins):
    config = node(tmp_path, 2, "this is = = not toml\n")
    found = doctor_paths.gather_containerd(facts(config=config), bins["trixie"])
    assert found["dump"] is None and found["error"]
    result = doctor_checks.check_containerd_runtime(facts(config=config), {}, found)
    assert result["status"] == "fail" and result["message"].startswith(f"`containerd --config {config} config dump`")


# -- containerd: CDI ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suite, version, release", [("trixie", 2, "1.7.24"), ("sid", 3, "2.1.9")])
def test_cdi_on_with_a_current_spec_passes_in_cdi_mode(tmp_path, bins, suite, version, release):
    config = node(tmp_path, version, nvidia_drop_in(version))
    found = doctor_paths.gather_containerd(facts(release, config=config), bins[suite])
    spec = {"path": "/etc/cdi/gpu-install-nvidia.json", "exists": True, "problems": [], "stale": []}
    result = doctor_checks.check_containerd_cdi(facts(release), {"nvidia_container_mode": "cdi"}, found, spec)
    assert (
        result["status"] == "pass" and "spec /etc/cdi/gpu-install-nvidia.json is valid and current" in result["message"]
    )


def test_containerd_1_7_with_enable_cdi_unset_fails_the_cdi_check(tmp_path, bins):
    config = node(tmp_path, 2, None)  # 1.7's CRI plugin has enable_cdi false unless set
    found = doctor_paths.gather_containerd(facts(config=config), bins["trixie"])
    result = doctor_checks.check_containerd_cdi(facts(), {}, found, {})
    assert result["status"] == "fail" and "has enable_cdi off" in result["message"]


def test_containerd_2_has_cdi_on_by_default(tmp_path, bins):
    config = node(tmp_path, 3, None)
    found = doctor_paths.gather_containerd(facts("2.1.9", config=config), bins["sid"])
    result = doctor_checks.check_containerd_cdi(facts("2.1.9"), {}, found, {})
    assert result["status"] == "pass" and "/etc/cdi, /var/run/cdi" in result["message"]


def test_a_stale_spec_fails_the_containerd_cdi_check_as_it_fails_docker(tmp_path, bins):
    config = node(tmp_path, 3, nvidia_drop_in(3))
    found = doctor_paths.gather_containerd(facts("2.1.9", config=config), bins["sid"])
    spec = {"path": "/etc/cdi/gpu-install-nvidia.json", "exists": True, "problems": [], "stale": ["/usr/lib/x.so.1"]}
    result = doctor_checks.check_containerd_cdi(facts("2.1.9"), {"nvidia_container_mode": "cdi"}, found, spec)
    docker = doctor_checks.spec_check("docker", spec)
    assert result["status"] == "fail" and docker is not None and result["message"] == docker["message"]


def test_spec_outside_containerd_spec_dirs_fails(tmp_path, bins):
    user = f'[plugins."{PLUGIN[3]}"]\n  cdi_spec_dirs = ["/srv/cdi"]\n'
    config = node(tmp_path, 3, None, user=user)
    found = doctor_paths.gather_containerd(facts("2.1.9", config=config), bins["sid"])
    spec = {"path": "/etc/cdi/gpu-install-nvidia.json", "exists": True}
    result = doctor_checks.check_containerd_cdi(facts("2.1.9"), {"nvidia_container_mode": "cdi"}, found, spec)
    assert result["status"] == "fail" and "from /srv/cdi, not from /etc/cdi" in result["message"]


def test_containerd_1_6_has_no_cdi_a_note_in_runtime_mode_a_failure_in_cdi_mode():
    assert doctor_checks.check_containerd_cdi(facts("1.6.20"), {}, {}, {})["status"] == "info"
    result = doctor_checks.check_containerd_cdi(facts("1.6.20"), {"nvidia_container_mode": "cdi"}, {}, {})
    assert result["status"] == "fail" and "1.7" in result["fix"]


# -- containerd: the node as a whole --------------------------------------------------------------------------------
def test_a_kubelet_node_gets_the_runtimeclass_hint_and_docker_is_skipped(tmp_path, bins):
    config = node(tmp_path, 3, nvidia_drop_in(3, binary="/bin/sh"))
    host = facts("2.1.9", config=config, kubelet=True)
    inputs = {
        "facts": host,
        "settings": {},
        "docker": {"info": None, "error": "absent"},
        "engines": doctor_paths.gather_engines(host, {})
        | {"containerd": doctor_paths.gather_containerd(host, bins["sid"])},
    }
    checks = by_id(doctor_checks.run_checks(inputs))
    assert checks["docker"]["status"] == "skip" and "(containerd)" in checks["docker"]["message"]
    assert [checks[c]["status"] for c in ("containerd_cri", "containerd_runtime", "containerd_cdi")] == ["pass"] * 3
    assert checks["kubernetes"]["status"] == "info"
    assert "gpu-install k8s runtimeclass | kubectl apply -f -" in checks["kubernetes"]["fix"]


def test_a_kubelet_node_in_cdi_mode_is_pointed_at_the_device_plugin_not_a_runtimeclass():
    result = doctor_checks.check_containerd_kubernetes(facts(kubelet=True), {"nvidia_container_mode": "cdi"})
    assert result is not None and result["status"] == "info" and "cdi-cri" in result["fix"]
    assert doctor_checks.check_containerd_kubernetes(facts(kubelet=False), {}) is None


def test_a_docker_host_gets_no_containerd_or_podman_checks():
    host = {"docker": {"flavour": "docker.io"}, "containerd": {"present": True, "cri_enabled": True}}
    checks = by_id(doctor_checks.run_checks({"facts": host, "settings": {}, "docker": {"info": None}}))
    assert "docker" in checks and not any(c.startswith(("containerd", "podman")) for c in checks)


# -- Podman ---------------------------------------------------------------------------------------------------------
def test_podman_before_4_1_fails_for_cdi_and_5_passes_with_gpus():
    old = doctor_checks.check_podman({"podman": {"present": True, "version": "3.4.4", "cdi": False}})
    assert old["status"] == "fail" and "4.1 and newer" in old["message"]
    new = doctor_checks.check_podman({"podman": {"present": True, "version": "5.4.2", "cdi": True}})
    assert new["status"] == "pass" and "--gpus" in new["message"]


def podman_tree(tmp_path: Path, dev_mode: int, spec_mode: int = 0o644, dir_mode: int = 0o755, gid: int = 0) -> dict:
    make_tree(tmp_path, {"dev/nvidia0": "", "dev/nvidiactl": "", "dev/nvidia-uvm": "", "var/run/cdi/nvidia.yaml": ""})
    (tmp_path / "dev/nvidia-caps").mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        os.chmod(tmp_path / "dev" / name, dev_mode)
        os.chown(tmp_path / "dev" / name, 0, gid)
    os.chmod(tmp_path / "var/run/cdi/nvidia.yaml", spec_mode)
    os.chmod(tmp_path / "var/run/cdi", dir_mode)
    return {}


def test_device_nodes_rw_for_others_and_a_readable_spec_pass_rootless(tmp_path):
    podman_tree(tmp_path, 0o666)
    found = doctor_paths.gather_podman({}, str(tmp_path), user={"name": "alice", "uid": 1000, "gids": [1000]})
    assert [d["path"] for d in found["devices"]] == ["/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"]
    assert found["spec"] == {"path": "/var/run/cdi/nvidia.yaml", "exists": True}
    assert doctor_checks.check_podman_rootless(found)["status"] == "pass"


def test_device_nodes_0660_fail_for_a_user_outside_their_group_and_pass_inside(tmp_path):
    podman_tree(tmp_path, 0o660, gid=44)
    outside = doctor_paths.gather_podman({}, str(tmp_path), user={"name": "alice", "uid": 1000, "gids": [1000]})
    result = doctor_checks.check_podman_rootless(outside)
    assert result["status"] == "fail" and result["message"].startswith("Rootless Podman run by the user alice")
    assert "/dev/nvidia-uvm (0660, group" in result["message"] and "NVreg_DeviceFileMode=0666" in result["fix"]
    inside = doctor_paths.gather_podman({}, str(tmp_path), user={"name": "bob", "uid": 1001, "gids": [1001, 44]})
    assert doctor_checks.check_podman_rootless(inside)["status"] == "pass"


def test_without_a_known_user_closed_nodes_are_a_warning(tmp_path):
    podman_tree(tmp_path, 0o660)
    found = doctor_paths.gather_podman({}, str(tmp_path))
    assert found["user"] is None
    assert doctor_checks.check_podman_rootless(found)["status"] == "warn"


def test_a_spec_or_directory_closed_to_others_fails_rootless(tmp_path):
    podman_tree(tmp_path, 0o666, spec_mode=0o600)
    found = doctor_paths.gather_podman({}, str(tmp_path), user={"name": "alice", "uid": 1000, "gids": [1000]})
    result = doctor_checks.check_podman_rootless(found)
    assert result["status"] == "fail" and "/var/run/cdi/nvidia.yaml (0600)" in result["message"]
    os.chmod(tmp_path / "var/run/cdi/nvidia.yaml", 0o644)
    os.chmod(tmp_path / "var/run/cdi", 0o700)
    found = doctor_paths.gather_podman({}, str(tmp_path), user={"name": "alice", "uid": 1000, "gids": [1000]})
    assert "/var/run/cdi (0700)" in doctor_checks.check_podman_rootless(found)["message"]


def test_cdi_mode_checks_gpu_install_spec_for_podman(tmp_path):
    found = doctor_paths.gather_podman({"nvidia_container_mode": "cdi"}, str(tmp_path), user=None)
    assert found["spec"] == {"path": "/etc/cdi/gpu-install-nvidia.json", "exists": False}
    cdi = {"path": "/etc/cdi/gpu-install-nvidia.json", "exists": False}
    result = doctor_checks.check_podman_spec({"nvidia_container_mode": "cdi"}, found, cdi)
    assert result["status"] == "fail" and "does not exist" in result["message"]


def test_runtime_mode_without_the_toolkit_spec_fails_for_podman(tmp_path):
    found = doctor_paths.gather_podman({}, str(tmp_path), user=None)
    result = doctor_checks.check_podman_spec({}, found, {})
    assert result["status"] == "fail" and "nvidia-cdi-refresh" in result["fix"]


def test_every_engine_check_is_one_sentence_each(tmp_path, bins):
    podman_tree(tmp_path, 0o600)
    host = facts(kubelet=True, cri_enabled=False)
    host["podman"] = {"present": True, "version": "4.0.0", "cdi": False}
    inputs = {
        "facts": host,
        "settings": {"gpu_install_container_engines": ["containerd", "podman"]},
        "engines": {
            "containerd": {"binary": None},
            "podman": doctor_paths.gather_podman({}, str(tmp_path), user={"name": "a", "uid": 1, "gids": [1]}),
        },
    }
    checks = [c for c in doctor_checks.run_checks(inputs) if c["id"].startswith(("containerd", "podman"))]
    assert {c["id"] for c in checks} == {
        "containerd_cri", "containerd_runtime", "containerd_cdi", "podman", "podman_spec", "podman_rootless",
    }  # fmt: skip
    for c in checks:
        for text in (c["message"], c["fix"]):
            assert text.count(". ") == 0 and (not text or text.endswith((".", ")"))), (c["id"], text)
