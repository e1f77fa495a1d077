"""Detection of containerd, the kubelet and Podman on host trees (``detect(root)``, as ``gpu-install detect --root``).

The trees are written by each test: a dpkg status naming the packages, containerd's config.toml, the kubelet's
files. Every rule checked here is cited in docs/engines.md ("Facts and their sources").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tree, module_utils

gpu_detect = module_utils("gpu_detect")

TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\nID=debian\n'
SOCKET = "/run/containerd/containerd.sock"


def status(*packages: tuple) -> str:
    """A dpkg status file with (name, version) packages installed."""
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"
        for name, version in packages
    )


def tree(tmp_path: Path, packages=(), files=None, name="host") -> str:
    content = {"etc/os-release": TRIXIE, "var/lib/dpkg/status": status(*packages)}
    content.update(files or {})
    return str(make_tree(tmp_path / name, content))


CONTAINERD = ("containerd", "1.7.24~ds1-6+b4")
CONTAINERD_IO = ("containerd.io", "1.7.27-1")
CONTAINERD_2 = ("containerd", "2.1.9~ds1-1")
DOCKER_CE = ("docker-ce", "5:28.5.2-1~debian.13~trixie")
KUBELET_UNIT = {"lib/systemd/system/kubelet.service": "[Service]\nExecStart=/usr/bin/kubelet\n"}


# --------------------------------------------------------------------------- containerd


def test_nothing_installed_reads_as_absent_and_never_as_this_machine(tmp_path):
    facts = gpu_detect.detect(tree(tmp_path))
    assert facts["containerd"]["present"] is False
    assert facts["containerd"]["cri_enabled"] is False
    assert facts["containerd"]["active"] is None
    assert facts["podman"] == {"present": False, "version": None, "cdi": False}
    assert facts["kubelet"] == {"present": False, "endpoint": None, "endpoint_source": None}
    assert facts["engines"] == ["docker"]


def test_debian_containerd_with_its_version_2_config_has_cri_on(tmp_path):
    config = 'version = 2\n\n[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n'
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))
    containerd = facts["containerd"]
    assert containerd["present"] is True
    assert containerd["package"] == "containerd"
    assert containerd["version"] == "1.7.24"
    assert containerd["config_path"] == "/etc/containerd/config.toml"
    assert containerd["config_exists"] is True
    assert containerd["config_version"] == 2
    assert containerd["cri_enabled"] is True
    assert containerd["socket"] == SOCKET
    assert containerd["kubelet"] is False
    assert facts["engines"] == ["containerd"]


def test_missing_config_has_no_version_and_cri_on_by_default(tmp_path):
    containerd = gpu_detect.detect(tree(tmp_path, [CONTAINERD_2]))["containerd"]
    assert containerd["config_exists"] is False
    assert containerd["config_version"] is None
    assert containerd["cri_enabled"] is True
    assert containerd["version"] == "2.1.9"


def test_dockers_containerd_io_config_without_version_is_version_1_with_cri_off(tmp_path):
    # containerd.io ships this file: no `version` line, CRI disabled by its plugin id.
    config = '#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = ["cri"]\n\n#root = "/var/lib/containerd"\n'
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD_IO, DOCKER_CE], {"etc/containerd/config.toml": config}))
    containerd = facts["containerd"]
    assert containerd["package"] == "containerd.io"
    assert containerd["config_version"] == 1
    assert containerd["disabled_plugins"] == ["cri"]
    assert containerd["cri_enabled"] is False
    assert facts["engines"] == ["docker"]


@pytest.mark.parametrize(
    "package, version, disabled, cri",
    [
        # A version 2 file's list names plugin URIs: containerd refuses to start on the id "cri" there.
        (CONTAINERD, 2, "cri", False),
        (CONTAINERD, 2, "io.containerd.grpc.v1.cri", False),
        (CONTAINERD, 1, "io.containerd.grpc.v1.cri", True),
        (CONTAINERD_2, 3, "io.containerd.cri.v1.runtime", False),
        (CONTAINERD_2, 3, "io.containerd.grpc.v1.cri", False),
        (CONTAINERD_2, 3, "io.containerd.nri.v1.nri", True),
    ],
)
def test_cri_is_off_only_by_the_name_that_containerd_version_and_file_version_match(
    tmp_path, package, version, disabled, cri
):
    config = f'version = {version}\ndisabled_plugins = ["{disabled}"]\n'
    containerd = gpu_detect.detect(tree(tmp_path, [package], {"etc/containerd/config.toml": config}))["containerd"]
    assert containerd["cri_enabled"] is cri


def test_a_bare_plugin_id_in_a_version_2_file_is_the_error_containerd_refuses_to_start_on(tmp_path):
    config = 'version = 2\ndisabled_plugins = ["cri"]\n'
    containerd = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))["containerd"]
    assert containerd["config_error"].startswith("disabled_plugins names 'cri', but a version 2 file names plugins")
    assert containerd["cri_enabled"] is False


def test_a_config_with_cri_off_is_not_taken_by_auto_and_docker_is_installed(tmp_path):
    config = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))
    assert facts["engines"] == ["docker"]


def test_malformed_config_is_reported_and_read_by_its_lines(tmp_path):
    config = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[plugins\n'
    containerd = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))["containerd"]
    assert containerd["config_error"] and "line 3" in containerd["config_error"]
    assert containerd["config_version"] == 2
    assert containerd["cri_enabled"] is False


def test_line_reading_without_a_toml_reader_takes_only_top_level_keys():
    text = (
        "# version = 9\nversion = 3 # comment\ndisabled_plugins = [\n  'io.containerd.cri.v1.runtime',\n]\n"
        '[plugins."x"]\n  version = 7\n'
    )
    assert gpu_detect._toml_fallback(text) == {"version": 3, "disabled_plugins": ["io.containerd.cri.v1.runtime"]}


def test_an_unpackaged_containerd_binary_counts_without_a_version_below_a_root(tmp_path):
    containerd = gpu_detect.detect(tree(tmp_path, [], {"usr/local/bin/containerd": "#!/bin/sh\n"}))["containerd"]
    assert containerd["present"] is True
    assert containerd["package"] is None
    assert containerd["version"] is None


def test_grpc_address_moves_the_socket(tmp_path):
    config = 'version = 2\n[grpc]\n  address = "/var/run/k8s/containerd.sock"\n'
    containerd = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))["containerd"]
    assert containerd["socket"] == "/run/k8s/containerd.sock"


# --------------------------------------------------------------------------- kubelet


def test_kubelet_without_an_endpoint_uses_containerds_default_socket(tmp_path):
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD, DOCKER_CE], {"usr/bin/kubelet": "ELF"}))
    assert facts["kubelet"] == {
        "present": True,
        "endpoint": "unix:///run/containerd/containerd.sock",
        "endpoint_source": "default",
    }
    assert facts["containerd"]["kubelet"] is True
    assert facts["engines"] == ["docker", "containerd"]


def test_kubelet_config_endpoint_naming_containerd_through_var_run_counts(tmp_path):
    files = dict(KUBELET_UNIT)
    files["var/lib/kubelet/config.yaml"] = (
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        'containerRuntimeEndpoint: "unix:///var/run/containerd/containerd.sock"\n'
    )
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD], files))
    assert facts["kubelet"]["endpoint_source"] == "/var/lib/kubelet/config.yaml"
    assert facts["containerd"]["kubelet"] is True


def test_kubelet_using_cri_o_does_not_use_containerd(tmp_path):
    files = dict(KUBELET_UNIT)
    files["var/lib/kubelet/config.yaml"] = "containerRuntimeEndpoint: unix:///var/run/crio/crio.sock\n"
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD, DOCKER_CE], files))
    assert facts["kubelet"]["present"] is True
    assert facts["containerd"]["kubelet"] is False
    assert facts["engines"] == ["docker"]


def test_kubeadm_flag_wins_over_the_config_file(tmp_path):
    files = dict(KUBELET_UNIT)
    files["var/lib/kubelet/config.yaml"] = "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"
    files["var/lib/kubelet/kubeadm-flags.env"] = (
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/crio/crio.sock --v=2"\n'
    )
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD], files))
    assert facts["kubelet"]["endpoint"] == "unix:///var/run/crio/crio.sock"
    assert facts["kubelet"]["endpoint_source"] == "/var/lib/kubelet/kubeadm-flags.env"
    assert facts["containerd"]["kubelet"] is False


def test_a_unit_drop_in_names_the_config_file_the_kubelet_reads(tmp_path):
    files = {
        "etc/systemd/system/kubelet.service.d/10-node.conf": (
            '[Service]\nEnvironment="KUBELET_CONFIG_ARGS=--config=/etc/kubernetes/kubelet.yaml"\n'
        ),
        "etc/kubernetes/kubelet.yaml": "containerRuntimeEndpoint: unix:///run/k8s/containerd.sock\n",
        "etc/containerd/config.toml": 'version = 2\n[grpc]\n  address = "/run/k8s/containerd.sock"\n',
    }
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD, DOCKER_CE], files))
    assert facts["kubelet"]["endpoint_source"] == "/etc/kubernetes/kubelet.yaml"
    assert facts["containerd"]["kubelet"] is True


def test_a_kubelet_config_left_without_a_kubelet_is_no_kubelet(tmp_path):
    files = {"var/lib/kubelet/config.yaml": "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"}
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD, DOCKER_CE], files))
    assert facts["kubelet"]["present"] is False
    assert facts["containerd"]["kubelet"] is False


# --------------------------------------------------------------------------- Podman


@pytest.mark.parametrize(
    "version, upstream, cdi",
    [("5.4.2+ds1-2", "5.4.2", True), ("4.1.0-1", "4.1.0", True), ("4.0.2+ds1-1", "4.0.2", False)],
)
def test_podman_version_and_cdi_from_4_1(tmp_path, version, upstream, cdi):
    facts = gpu_detect.detect(tree(tmp_path, [("podman", version)]))
    assert facts["podman"] == {"present": True, "version": upstream, "cdi": cdi}
    assert facts["engines"] == ["podman"]


# --------------------------------------------------------------------------- robustness and the contract


@pytest.mark.parametrize(
    "config",
    [b"\xff\xfe\x00garbage", b'version = "two"\n', b"version = 2\ndisabled_plugins = 5\n", b"[[[\n", b""],
)
def test_odd_configs_never_fail_detection(tmp_path, config):
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD], {"etc/containerd/config.toml": config}))
    assert "detection_incomplete" not in [p["code"] for p in facts["problems"]]
    assert facts["containerd"]["present"] is True
    assert isinstance(facts["containerd"]["config_version"], int)


def test_facts_keep_the_documented_engine_keys(tmp_path):
    facts = gpu_detect.detect(tree(tmp_path, [CONTAINERD]))
    assert set(facts["containerd"]) >= {
        "present",
        "package",
        "version",
        "config_path",
        "config_exists",
        "config_version",
        "cri_enabled",
        "kubelet",
        "socket",
        "active",
    }
    assert set(facts["podman"]) == {"present", "version", "cdi"}
    assert isinstance(facts["engines"], list)
