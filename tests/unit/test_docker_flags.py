"""Flags on dockerd's command line that would conflict with the daemon.json keys gpu-install writes."""

from __future__ import annotations

from pathlib import Path

from conftest import make_tree, module_utils

docker_service = module_utils("docker_service")


def _tree(tmp_path: Path, files: dict[str, str]) -> str:
    return str(make_tree(tmp_path, files))


def test_default_runtime_in_a_systemd_drop_in_is_found_with_file_and_line(tmp_path):
    root = _tree(
        tmp_path,
        {
            "/lib/systemd/system/docker.service": "[Service]\nExecStart=/usr/sbin/dockerd -H fd://\n",
            "/etc/systemd/system/docker.service.d/override.conf": (
                "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --default-runtime=runc -H fd://\n"
            ),
        },
    )
    found = docker_service.flag_conflicts(["runtimes", "default-runtime"], root=root)
    assert [(f["file"], f["line"], f["key"]) for f in found] == [
        ("/etc/systemd/system/docker.service.d/override.conf", 3, "default-runtime")
    ]


def test_red_hat_sysconfig_options_with_add_runtime_are_found(tmp_path):
    root = _tree(
        tmp_path,
        {"/etc/sysconfig/docker": "# options\nOPTIONS='--selinux-enabled --add-runtime nvidia=/usr/bin/nv-runtime'\n"},
    )
    found = docker_service.flag_conflicts(["runtimes", "default-runtime"], root=root)
    assert [(f["file"], f["line"], f["key"]) for f in found] == [("/etc/sysconfig/docker", 2, "runtimes")]


def test_debian_default_docker_opts_feature_flag_conflicts_with_cdi(tmp_path):
    root = _tree(tmp_path, {"/etc/default/docker": 'DOCKER_OPTS="--feature cdi=true --dns 8.8.8.8"\n'})
    assert docker_service.flag_conflicts(["features"], root=root)[0]["key"] == "features"
    assert docker_service.flag_conflicts(["runtimes", "default-runtime"], root=root) == []


def test_comments_and_unrelated_flags_are_not_conflicts(tmp_path):
    root = _tree(
        tmp_path,
        {
            "/lib/systemd/system/docker.service": (
                "[Service]\n# ExecStart=/usr/bin/dockerd --default-runtime=runc\n"
                "ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n"
            ),
            "/etc/default/docker": '#DOCKER_OPTS="--add-runtime x=y"\n',
        },
    )
    assert docker_service.flag_conflicts(["runtimes", "default-runtime", "features"], root=root) == []


def test_readiness_needs_the_runtime_listed_and_default():
    info = {"Runtimes": {"runc": {}, "nvidia": {}}, "DefaultRuntime": "runc"}
    assert docker_service.ready(info, "nvidia", None, None)
    assert not docker_service.ready(info, "nvidia", "nvidia", None)
    assert not docker_service.ready(None, None, None, None)
    assert not docker_service.ready({"Runtimes": {}}, None, None, True)
    assert docker_service.ready({"CDISpecDirs": ["/etc/cdi"]}, None, None, True)
