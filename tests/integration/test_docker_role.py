"""The docker role on real systemd Debian hosts with their own dockerd.

Docker's package comes from Debian's archive (docker.io 20.10 in bookworm, 26.1 in
trixie). The NVIDIA runtime is not installed by this role, so a stand-in runtime
(a fixture script that records its call and execs runc) is registered in its place:
a container that runs proves dockerd used the runtime that daemon.json made default.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import roles
from hosts import Host
from roles import failure

STAND_IN_RUNTIME = "/usr/local/bin/gpu-install-test-stand-in-runtime"
STAND_IN_SCRIPT = b"""#!/bin/sh
# Test fixture standing in for nvidia-container-runtime: record the call, then run runc.
echo "$@" >> /var/log/gpu-install-test-stand-in-runtime.log
exec runc "$@"
"""
USER_CONFIG = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "runtimes": {"runc-alias": {"path": "runc"}},
}


def converge(host: Host, extra: dict[str, Any], check: bool = False) -> tuple[int, dict[str, int], str]:
    """The docker role, with the stand-in runtime registered in the NVIDIA runtime's place."""
    return roles.converge(host, "docker", {"docker_runtime_path": STAND_IN_RUNTIME, **extra}, check)


def info(host: Host) -> dict[str, Any]:
    return json.loads(host.run(["docker", "info", "--format", "{{json .}}"]).stdout)


def tiny_image(host: Host) -> str:
    """An image made from the host's own dash and libc (no registry is reachable)."""
    script = (
        "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/lib64 $d/lib/x86_64-linux-gnu; "
        "cp /usr/bin/dash $d/bin/sh; cp /lib/x86_64-linux-gnu/libc.so.6 $d/lib/x86_64-linux-gnu/; "
        "cp /lib64/ld-linux-x86-64.so.2 $d/lib64/; tar -C $d -c . | docker import - local/tiny >/dev/null"
    )
    host.run(["sh", "-c", script])
    return "local/tiny"


def install_docker_io(host: Host) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    host.run(["apt-get", "update", "-q"], env=env)
    host.run(["apt-get", "install", "-y", "-q", "docker.io"], env=env)


def prepare(host: Host, config: dict[str, Any] | None) -> None:
    host.put(STAND_IN_RUNTIME, STAND_IN_SCRIPT, mode=0o755)
    if config is not None:
        host.run(["mkdir", "-p", "/etc/docker"])
        host.put("/etc/docker/daemon.json", json.dumps(config, indent=2).encode())


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_installs_docker_io_and_makes_the_runtime_default_keeping_user_keys(host_factory, suite):
    host = host_factory(suite)
    try:
        prepare(host, USER_CONFIG)
        rc, recap, out = converge(host, {}, check=True)
        assert rc == 0, out
        assert host.run(["dpkg-query", "-W", "docker.io"], check=False).returncode != 0, "check mode installed Docker"

        rc, recap, out = converge(host, {})
        assert rc == 0, out
        assert recap["changed"] >= 2, out
        docker = info(host)
        assert docker["DefaultRuntime"] == "nvidia"
        assert {"nvidia", "runc-alias"} <= set(docker["Runtimes"])
        config = json.loads(host.get("/etc/docker/daemon.json"))
        assert list(config)[:3] == ["log-driver", "log-opts", "runtimes"]
        assert config["log-opts"] == USER_CONFIG["log-opts"]
        assert config["runtimes"]["runc-alias"] == {"path": "runc"}
        assert config["runtimes"]["nvidia"]["path"] == STAND_IN_RUNTIME
        assert config["default-runtime"] == "nvidia"

        image = tiny_image(host)
        run = host.run(["docker", "run", "--rm", "--network", "none", image, "/bin/sh", "-c", "echo through"])
        assert run.stdout.strip() == "through"
        calls = host.get("/var/log/gpu-install-test-stand-in-runtime.log").decode()
        assert "create" in calls or "run" in calls, calls

        before = host.get("/etc/docker/daemon.json")
        rc, recap, out = converge(host, {})
        assert rc == 0 and recap["changed"] == 0, out
        assert host.get("/etc/docker/daemon.json") == before
    finally:
        host_factory.remove(host)


def test_reload_keeps_running_containers_running(bookworm_host):
    host = bookworm_host
    install_docker_io(host)
    prepare(host, None)
    image = tiny_image(host)
    cid = host.run(["docker", "run", "-d", "--network", "none", image, "/bin/sh", "-c", "while :; do sleep 1; done"])
    cid_text = cid.stdout.strip()
    pid_before = host.run(["systemctl", "show", "-p", "MainPID", "--value", "docker"]).stdout.strip()
    rc, _recap, out = converge(host, {})
    assert rc == 0, out
    assert info(host)["DefaultRuntime"] == "nvidia"
    assert host.run(["systemctl", "show", "-p", "MainPID", "--value", "docker"]).stdout.strip() == pid_before
    state = host.run(["docker", "inspect", "-f", "{{.State.Running}}", cid_text]).stdout.strip()
    assert state == "true"


def test_dockerd_reload_keeps_a_default_runtime_taken_out_but_applies_runc_by_name(bookworm_host):
    # The fact behind cdi mode's "default-runtime": "runc" (module_utils/daemon_json.py, _drop_default): after a
    # SIGHUP, dockerd keeps the default runtime the file no longer names, and takes one the file names.
    host = bookworm_host
    install_docker_io(host)
    prepare(host, {"runtimes": {"stand-in": {"path": STAND_IN_RUNTIME}}, "default-runtime": "stand-in"})
    host.run(["systemctl", "restart", "docker"])
    assert info(host)["DefaultRuntime"] == "stand-in"

    def reload_with(config: dict[str, Any]) -> str:
        before = host.run(["sh", "-c", "journalctl -u docker -o cat | grep -c 'Reloaded configuration' || true"])
        host.put("/etc/docker/daemon.json", json.dumps(config).encode())
        host.run(["systemctl", "kill", "--kill-whom=main", "--signal=HUP", "docker"])
        wait = (
            f"for i in $(seq 100); do n=$(journalctl -u docker -o cat | grep -c 'Reloaded configuration'); "
            f'[ "$n" -gt {before.stdout.strip()} ] && exit 0; sleep 0.1; done; exit 1'
        )
        host.run(["sh", "-c", wait])
        return str(info(host)["DefaultRuntime"])

    assert reload_with({"runtimes": {"stand-in": {"path": STAND_IN_RUNTIME}}}) == "stand-in"
    assert reload_with({"runtimes": {"stand-in": {"path": STAND_IN_RUNTIME}}, "default-runtime": "runc"}) == "runc"


def test_a_runtime_flag_on_the_service_is_refused_with_file_and_line(bookworm_host):
    host = bookworm_host
    install_docker_io(host)
    prepare(host, {"debug": False})
    host.run(["mkdir", "-p", "/etc/systemd/system/docker.service.d"])
    dropin = b"[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// --default-runtime=runc\n"
    host.put("/etc/systemd/system/docker.service.d/10-runtime.conf", dropin)
    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "restart", "docker"])
    before = host.get("/etc/docker/daemon.json")
    rc, _recap, out = converge(host, {})
    assert rc != 0
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 4
    assert "/etc/systemd/system/docker.service.d/10-runtime.conf line 3" in error["reason"]
    assert host.get("/etc/docker/daemon.json") == before


def test_dockerd_failing_to_restart_rolls_back_with_its_own_message(trixie_host):
    """CDI on Docker 26 needs a restart; a conflicting flag added to the unit makes it fail."""
    host = trixie_host
    install_docker_io(host)
    prepare(host, {"log-level": "info"})
    host.run(["systemctl", "restart", "docker"])
    before = host.get("/etc/docker/daemon.json")
    host.run(["mkdir", "-p", "/etc/systemd/system/docker.service.d"])
    dropin = b"[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// --log-level=debug\n"
    host.put("/etc/systemd/system/docker.service.d/20-debug.conf", dropin)
    host.run(["systemctl", "daemon-reload"])  # dockerd keeps running with its old flags until restarted
    rc, _recap, out = converge(host, {"nvidia_container_mode": "cdi"})
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 7, error
    assert "specified both as a flag and in the configuration file" in error["reason"], error
    assert host.get("/etc/docker/daemon.json") == before


@pytest.mark.parametrize("text", [b'{"log-driver": "json-file",}\n', b"// comment\n{}\n", b'{"runtimes": []}\n'])
def test_malformed_daemon_json_is_refused_untouched(bookworm_host, text):
    host = bookworm_host
    install_docker_io(host)
    host.put(STAND_IN_RUNTIME, STAND_IN_SCRIPT, mode=0o755)
    host.put("/etc/docker/daemon.json", text)
    listing = host.run(["ls", "-la", "/etc/docker"]).stdout
    rc, _recap, out = converge(host, {})
    assert rc != 0
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 4
    assert "fix or move it, then run again" in error["reason"]
    assert host.get("/etc/docker/daemon.json") == text
    assert host.run(["ls", "-la", "/etc/docker"]).stdout == listing
