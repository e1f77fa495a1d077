"""Every way users start a GPU container reaches GPU injection, per mode, on real systemd Debian hosts with real
dockerd (bookworm: Docker 20.10; trixie: Docker 26.1). There is no GPU here, so "works" is proved up to the point
where the GPU is put into the container:

* runtime mode (NVIDIA's real runtime, toolkit 1.20.0 from the signed mirror fixture, as Docker's default): the
  runtime's own log (``[nvidia-container-runtime] debug`` in /etc/nvidia-container-runtime/config.toml) shows it
  was called for each container; a container that asks for no GPU runs, and each path that asks for one -
  ``-e NVIDIA_VISIBLE_DEVICES`` (and the image's ENV), ``--runtime nvidia``, ``--gpus all``, ``--gpus '"device=0"'``,
  Compose's ``deploy.resources.reservations.devices`` and a classic ``docker build`` RUN step - is refused by the
  runtime with its own error, because this host has no GPU (NVIDIA's jit-cdi mode generates the spec at start:
  internal/modifier/cdi.go in NVIDIA's source). A BuildKit RUN step with the same request runs and never reaches the
  runtime: BuildKit ignores default-runtime (moby/buildkit#1800, NVIDIA/nvidia-container-toolkit#351).
* cdi mode (gpu-install's own, no toolkit): FIXTURE_SPEC, a CDI spec of kind nvidia.com/gpu written by this test,
  whose edits make a fixture device node /dev/nvidia0 from /dev/null's major:minor and set a fixture variable; on
  Docker 26.1, ``--device nvidia.com/gpu=all|0|<UUID>`` shows those edits inside the container, and ``--gpus all`` is
  refused. Docker 20.10 has no CDI: the same ``--device`` is refused, and doctor says so.

FIXTURE: tests/fixtures/mirror.py serves NVIDIA's toolkit (built from ../shared/vendor) from a signed mirror made by
the test, reached through gpu_install_repositories as a user's mirror is.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from hosts import Host
from test_container_role import RUNTIME_LOG, log_runtime_calls
from test_docker_ce_mirror import apply
from test_docker_role import info
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402

IMAGE = "local/start-paths"
GPU_ENV_IMAGE = "local/start-paths-gpu-env"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}

# FIXTURE: a CDI spec of NVIDIA's kind whose edits are visible without a GPU (a device node from /dev/null's
# major:minor, a variable); the UUID is made up.
FIXTURE_UUID = "GPU-00000000-1111-2222-3333-444444444444"
FIXTURE_SPEC_PATH = "/etc/cdi/start-paths-fixture.json"
FIXTURE_EDITS = {
    "deviceNodes": [{"path": "/dev/nvidia0", "hostPath": "/dev/null"}],
    "env": ["START_PATHS_FIXTURE=cdi-edits-applied"],
}
FIXTURE_SPEC = {
    "cdiVersion": "0.5.0",
    "kind": "nvidia.com/gpu",
    "devices": [
        {"name": "0", "containerEdits": FIXTURE_EDITS},
        {"name": FIXTURE_UUID, "containerEdits": FIXTURE_EDITS},
        {"name": "all", "containerEdits": FIXTURE_EDITS},
    ],
}
COMPOSE_FILE = """\
services:
  gpu:
    image: local/start-paths
    command: ["/bin/sh", "-c", "echo compose ran"]
    network_mode: none
    deploy:
      resources:
        reservations:
          devices:
            - driver: nvidia
              count: all
              capabilities: [gpu]
"""
DOCKERFILE = """\
FROM local/start-paths
ENV NVIDIA_VISIBLE_DEVICES=all
RUN echo build step ran > /ran
"""


def images(host: Host) -> None:
    """IMAGE from the host's own dash and libc (no registry is reachable), and GPU_ENV_IMAGE: the same with
    ENV NVIDIA_VISIBLE_DEVICES=all, as NVIDIA's CUDA images have it."""
    script = (
        "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/lib64 $d/lib/x86_64-linux-gnu $d/dev; "
        "cp /usr/bin/dash $d/bin/sh; cp /lib/x86_64-linux-gnu/libc.so.6 $d/lib/x86_64-linux-gnu/; "
        "cp /lib64/ld-linux-x86-64.so.2 $d/lib64/; "
        f"tar -C $d -c . | docker import - {IMAGE} >/dev/null; "
        f"tar -C $d -c . | docker import -c 'ENV NVIDIA_VISIBLE_DEVICES=all' - {GPU_ENV_IMAGE} >/dev/null"
    )
    host.run(["sh", "-c", script])


def runtime_entries(host: Host) -> list[tuple[str, str]]:
    """(level, message) of each line NVIDIA's runtime wrote to its debug log (JSON or logrus text)."""
    proc = host.run(["cat", RUNTIME_LOG], check=False)
    entries = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            entries.append((str(record.get("level")), str(record.get("msg"))))
            continue
        except ValueError:
            pass
        level = re.search(r"level=(\w+)", line)
        msg = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        entries.append((level.group(1) if level else "?", msg.group(1) if msg else line))
    return entries


def through_runtime(host: Host, argv: list[str], env: dict[str, str] | None = None):
    """Run argv on the host with the runtime's log emptied first: (the process, the runtime's log entries)."""
    host.run(["sh", "-c", f": > {RUNTIME_LOG}"])
    proc = host.run(argv, check=False, env=env)
    return proc, runtime_entries(host)


def errors(entries: list[tuple[str, str]]) -> list[str]:
    return [msg for level, msg in entries if level in ("error", "fatal", "panic")]


def doctor(host: Host, config: str | None = None) -> dict[str, dict]:
    argv = ["gpu-install", "doctor", "--json"] + (["-c", config] if config else [])
    proc = host.run(argv, check=False)
    assert proc.stdout.strip(), proc.stderr
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def test_runtime_mode_every_start_path_reaches_nvidia_runtime_and_buildkit_does_not(debian_host, tmp_path):
    host = debian_host
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        rc, result = apply(host, settings)
        assert rc == 0, result["error"]["reason"]
    assert info(host)["DefaultRuntime"] == "nvidia"
    tools = ["docker-compose"] + (["docker-buildx"] if host.suite != "bookworm" else [])
    host.run(["apt-get", "update", "-q"], env=APT_ENV)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *tools], env=APT_ENV)
    log_runtime_calls(host)
    images(host)

    # A container that asks for no GPU goes through NVIDIA's runtime (Docker's default) and runs.
    proc, entries = through_runtime(
        host, ["docker", "run", "--rm", "--network", "none", IMAGE, "/bin/sh", "-c", "echo plain"]
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "plain", proc.stderr
    assert entries and not errors(entries), entries

    # Each path that asks for GPUs reaches the runtime, which refuses it on this GPU-less host with its own error.
    run = ["docker", "run", "--rm", "--network", "none"]
    asks = {
        "-e NVIDIA_VISIBLE_DEVICES=all": run + ["-e", "NVIDIA_VISIBLE_DEVICES=all", IMAGE, "true"],
        "the image's ENV NVIDIA_VISIBLE_DEVICES": run + [GPU_ENV_IMAGE, "true"],
        "--runtime nvidia": run + ["--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all", IMAGE, "true"],
        "--gpus all": run + ["--gpus", "all", IMAGE, "true"],
        "--gpus '\"device=0\"'": run + ["--gpus", '"device=0"', IMAGE, "true"],
    }
    for path, argv in asks.items():
        proc, entries = through_runtime(host, argv)
        assert proc.returncode != 0, f"{path}: the container ran without a GPU on a GPU-less host"
        assert errors(entries), f"{path} did not reach NVIDIA's runtime: {proc.stderr} {entries}"

    host.run(["mkdir", "-p", "/root/compose", "/root/build"])
    host.put("/root/compose/compose.yml", COMPOSE_FILE)
    compose = ["docker-compose", "-f", "/root/compose/compose.yml", "-p", "startpaths"]
    proc, entries = through_runtime(host, compose + ["up", "--abort-on-container-exit"])
    host.run(compose + ["down"], check=False)
    assert "compose ran" not in proc.stdout, proc.stdout
    assert errors(entries), f"Compose's device reservation did not reach NVIDIA's runtime: {proc.stdout} {entries}"

    host.put("/root/build/Dockerfile", DOCKERFILE)
    build = ["docker", "build", "--network", "none", "-t", "local/start-paths-built", "/root/build"]
    proc, entries = through_runtime(host, build, env={"DOCKER_BUILDKIT": "0"})
    assert proc.returncode != 0 and errors(entries), f"the classic builder's RUN step: {proc.stderr} {entries}"

    # BuildKit runs the same RUN step without NVIDIA's runtime: nothing in its log, and no GPU request refused.
    buildkit = ["docker", "buildx", "build", "--load"] if host.suite != "bookworm" else ["docker", "build"]
    argv = buildkit + ["--network", "none", "-t", "local/start-paths-built", "/root/build"]
    proc, entries = through_runtime(host, argv, env={"DOCKER_BUILDKIT": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert entries == [], f"BuildKit's RUN step went through NVIDIA's runtime: {entries}"

    # doctor names what the paths showed: the GPU-less refusal, BuildKit, and the start cost.
    checks = doctor(host)
    assert checks["runtime_no_gpu"]["status"] == "warn"
    assert "fail to start with the runtime's own error" in checks["runtime_no_gpu"]["message"]
    assert checks["gpus_option"]["status"] == "pass"
    assert "DOCKER_BUILDKIT=0" in checks["docker_build"]["fix"] and checks["start_cost"]["status"] == "info"

    if host.suite == "bookworm":  # Docker 20.10 has no CDI: it refuses the CDI name, and doctor says so in cdi mode
        proc = host.run(run + ["--device", "nvidia.com/gpu=all", IMAGE, "true"], check=False)
        assert proc.returncode != 0 and "nvidia.com/gpu=all" in proc.stderr, proc.stderr
        host.put("/root/cdi.yml", "nvidia_container_mode: cdi\n")
        docker = doctor(host, "/root/cdi.yml")["docker"]
        assert docker["status"] == "fail" and "cannot read CDI specs" in docker["message"], docker


def test_cdi_mode_device_names_apply_the_spec_edits_and_gpus_is_refused(trixie_host):
    host = trixie_host
    settings = {"gpu_install_image_build": True, "nvidia_driver_source": "none", "nvidia_container_mode": "cdi"}
    rc, result = apply(host, settings)
    assert rc == 0, result["error"]["reason"]
    assert info(host)["DefaultRuntime"] == "runc"
    images(host)
    host.run(["mkdir", "-p", "/etc/cdi"])
    host.put(FIXTURE_SPEC_PATH, json.dumps(FIXTURE_SPEC))

    probe = 'test -c /dev/nvidia0 && echo "$START_PATHS_FIXTURE"'
    for name in ("all", "0", FIXTURE_UUID):
        argv = ["docker", "run", "--rm", "--network", "none", "--device", f"nvidia.com/gpu={name}", IMAGE]
        proc = host.run(argv + ["/bin/sh", "-c", probe], check=False)
        assert proc.returncode == 0 and proc.stdout.strip() == "cdi-edits-applied", (name, proc.stderr)
    plain = host.run(["docker", "run", "--rm", "--network", "none", IMAGE, "/bin/sh", "-c", probe], check=False)
    assert plain.returncode != 0 and plain.stdout.strip() == ""  # the edits come from the spec alone

    proc = host.run(["docker", "run", "--rm", "--network", "none", "--gpus", "all", IMAGE, "true"], check=False)
    assert proc.returncode == 125 and "could not select device driver" in proc.stderr, proc.stderr
    gpus = doctor(host)["gpus_option"]
    assert gpus["status"] == "info" and "refuses --gpus" in gpus["message"]
    assert "--device nvidia.com/gpu=all" in gpus["fix"]
