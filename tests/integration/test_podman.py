"""Podman 5 in a Debian trixie systemd host (GPU-less): CDI devices from a FIXTURE spec, and verify's podman path.

The host is the trixie host image plus Debian's podman (5.4 in trixie), crun and netavark (a prepared layer keyed by
content, tests/integration/hosts.py ``ensure_layer``). No registry is reached: the image is ``podman import``ed from
the host's own dash and libc. What stands in for the GPU is named as a FIXTURE everywhere:

* a CDI spec of kind nvidia.com/gpu (/etc/cdi/gpu-install-test-fixture.json) whose devices ``0``, ``1``, their UUIDs
  and ``all`` add an environment variable per GPU and a device node backed by /dev/null or /dev/zero, and whose
  common edits add FIXTURE_CDI and bind-mount a stand-in nvidia-smi (a dash script that prints the UUID of each
  GPU whose variable and device node the container got);
* the fake libnvidia-ml.so.1 of tests/unit/test_nvml_probe.py, compiled here, for NVML's view outside.

Both come from tests/fixtures/engines.py, which tests/integration/test_verify_engines.py shares.

So the gpu_verify module's podman path runs for real end to end: Podman resolves the CDI names (``--device
nvidia.com/gpu=...`` and Podman 5's ``--gpus``), crun starts the containers, and the module compares what the
stand-in prints inside with the fake NVML outside. One accommodation of the test host, not of gpu-install: Docker
mounts /proc/sys read-only in the host container, so Podman's default sysctl (net.ipv4.ping_group_range) is turned
off in /etc/containers/containers.conf there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import Host, HostFactory, ensure_layer
from roles import VENV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.engines import FIXTURE, STAND_IN_SMI, A, B, build_fake_nvml, fixture_spec  # noqa: E402

LAYER = (
    "apt-get update -q\n"
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman crun netavark\n"
)
IMAGE = "localhost/gpu-install-test-tiny"
SPEC = "/etc/cdi/gpu-install-test-fixture.json"
ENV = {"PODMAN_IGNORE_CGROUPSV1_WARNING": "1"}  # this machine's cgroup v1 (with a v2 mount) is what the host sees


@pytest.fixture(scope="module")
def podman_host(host_factory: HostFactory, tmp_path_factory) -> Iterator[Host]:
    image = ensure_layer("trixie", "podman", LAYER)
    host = host_factory("trixie", image=image, tmpfs=["/var/lib/containers"])
    try:
        tiny = (
            "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/lib64 $d/lib/x86_64-linux-gnu $d/usr/bin; "
            "cp /usr/bin/dash $d/bin/sh; cp /lib/x86_64-linux-gnu/libc.so.6 $d/lib/x86_64-linux-gnu/; "
            f"cp /lib64/ld-linux-x86-64.so.2 $d/lib64/; tar -C $d -c . | podman import -q - {IMAGE} >/dev/null"
        )
        host.run(["sh", "-c", tiny], env=ENV)
        host.put("/etc/containers/containers.conf", "[containers]\ndefault_sysctls = []\n")
        host.run(["mkdir", "-p", "/etc/cdi", FIXTURE])
        host.put(f"{FIXTURE}/nvidia-smi", STAND_IN_SMI, mode=0o755)
        host.put(SPEC, json.dumps(fixture_spec(), indent=2))
        nvml = build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))
        host.put(f"{FIXTURE}/libnvidia-ml.so.1", nvml.read_bytes(), mode=0o755)
        yield host
    finally:
        host_factory.remove(host)


def run_verify(host: Host, args: dict, check: bool = False) -> tuple[int, dict]:
    """The gpu_verify module run in the host as Ansible runs a module (an args file in, one JSON object out)."""
    paths = host.run(
        [f"{VENV}/bin/python", "-c", "from gpu_install.collection import collection_dir as d, collections_path as p; "
         "print(d()); print(p())"]
    ).stdout.split()  # fmt: skip
    module_args = dict(args, nvml_library=f"{FIXTURE}/libnvidia-ml.so.1", _ansible_check_mode=check)
    host.put("/root/verify-args.json", json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    proc = host.run(
        [f"{VENV}/bin/python", f"{paths[0]}/plugins/modules/gpu_verify.py", "/root/verify-args.json"],
        check=False,
        env=dict(ENV, PYTHONPATH=paths[1], FAKE_NVML_GPUS=f"{A},{B}"),
    )
    return proc.returncode, json.loads(proc.stdout)


def test_podman_5_runs_a_container_with_the_fixture_cdi_spec_edits(podman_host):
    version = podman_host.run(["podman", "--version"], env=ENV).stdout
    assert version.startswith("podman version 5.")
    script = 'echo "$FIXTURE_CDI"; [ -c /dev/fixture-gpu0 ] && [ -c /dev/fixture-gpu1 ] && echo nodes; nvidia-smi'
    out = podman_host.run(
        ["podman", "run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=all", IMAGE, "sh", "-c", script],
        env=ENV,
    ).stdout.split()
    assert out == ["gpu-install-test-fixture", "nodes", A, B]


def test_podman_gpus_option_maps_to_the_cdi_devices(podman_host):
    argv = ["podman", "run", "--rm", "--network", "none", "--gpus", B, "--entrypoint", "nvidia-smi", IMAGE]
    assert podman_host.run(argv, env=ENV).stdout.split() == [B]


def test_verify_podman_path_proves_every_check_through_the_fixture_spec(podman_host):
    rc, result = run_verify(podman_host, {"mode": "cdi", "engines": ["podman"], "image": IMAGE, "pull": False})
    assert rc == 0, result.get("msg")
    assert result["verified"] is True and result["engines"] == ["podman"]
    assert result["podman"]["version"].startswith("5.") and result["podman"]["cdi"] is True
    assert [(c["name"], c["seen"]) for c in result["checks"]] == [
        ("podman all", [A, B]),
        ("podman index 0", [A]),
        (f"podman UUID {A}", [A]),
        ("podman index 1", [B]),
        (f"podman UUID {B}", [B]),
        ("podman --gpus all", [A, B]),
        (f"podman --gpus {A}", [A]),
        (f"podman --gpus {B}", [B]),
    ]
    assert all(c["ok"] and c["engine"] == "podman" for c in result["checks"])
    first, gpus = result["checks"][0]["argv"], result["checks"][5]["argv"]
    assert first[first.index("--device") + 1] == "nvidia.com/gpu=all" and "--gpus" not in first
    assert gpus[gpus.index("--gpus") + 1] == "all" and "--device" not in gpus
    leftovers = podman_host.run(["podman", "ps", "-a", "-q"], env=ENV).stdout.strip()
    assert leftovers == ""  # --rm left nothing behind


def test_verify_podman_fails_naming_a_device_the_spec_lacks(podman_host):
    podman_host.put(SPEC, json.dumps(fixture_spec(("uuid", "all")), indent=2))  # no device by index
    try:
        rc, result = run_verify(podman_host, {"mode": "cdi", "engines": ["podman"], "image": IMAGE, "pull": False})
    finally:
        podman_host.put(SPEC, json.dumps(fixture_spec(), indent=2))
    assert rc == 1 and result["gpu_install_error"]["code"] == 8
    failed = next(c for c in result["checks"] if not c["ok"])
    assert failed["name"] == "podman index 0" and failed["rc"] != 0
    assert "unresolvable CDI devices nvidia.com/gpu=0" in failed["output"]
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith("The podman container for 'podman index 0' (--device nvidia.com/gpu=0) failed")
    assert "/etc/cdi or /var/run/cdi" in reason


def test_verify_podman_in_check_mode_lists_the_commands_and_starts_nothing(podman_host):
    before = podman_host.run(["podman", "events", "--stream=false", "--filter", "type=container"], env=ENV).stdout
    rc, result = run_verify(podman_host, {"engines": ["podman"], "image": IMAGE, "pull": False}, check=True)
    assert rc == 0 and result["verified"] is None
    assert [c["ok"] for c in result["checks"]] == [None] * 8
    after = podman_host.run(["podman", "events", "--stream=false", "--filter", "type=container"], env=ENV).stdout
    assert after == before  # no container was created


def test_verify_podman_absent_image_with_pull_off_fails_naming_podman_store(podman_host):
    args = {"engines": ["podman"], "image": "gpu-install-test.invalid/absent:1", "pull": False}
    rc, result = run_verify(podman_host, args)
    assert rc == 1 and result["checks"] == []
    assert result["gpu_install_error"]["reason"].startswith(
        "The image gpu-install-test.invalid/absent:1 is not in Podman's store and pulling it is off"
    )


def _doctor_as(host: Host, user: str) -> dict[str, dict]:
    proc = host.run(["runuser", "-u", user, "--", "gpu-install", "doctor", "--json"], check=False, env=ENV)
    assert proc.returncode in (0, 8), proc.stdout + proc.stderr
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def test_doctor_checks_podman_for_a_rootless_user_against_the_device_nodes_modes(podman_host):
    host = podman_host
    host.put("/etc/gpu-install/config.yml", "gpu_install_container_engines: [podman]\n")
    host.run(["mkdir", "-p", "/var/run/cdi"])
    host.put("/var/run/cdi/nvidia.yaml", json.dumps(fixture_spec()))  # FIXTURE: the toolkit's spec path, JSON is YAML
    host.run(["sh", "-c", "id alice >/dev/null 2>&1 || useradd -m alice"])
    # FIXTURE: a device node with the NVIDIA driver's major (195) and a mode closed to others
    host.run(["sh", "-c", "rm -f /dev/nvidia0; mknod -m 0660 /dev/nvidia0 c 195 0 && chgrp video /dev/nvidia0"])
    try:
        checks = _doctor_as(host, "alice")
        assert checks["podman"]["status"] == "pass" and "Podman 5." in checks["podman"]["message"]
        assert checks["podman_spec"]["status"] == "pass"
        assert checks["docker"]["status"] == "skip"
        rootless = checks["podman_rootless"]
        assert rootless["status"] == "fail", rootless
        assert rootless["message"].startswith("Rootless Podman run by the user alice cannot open /dev/nvidia0 (0660")
        host.run(["chmod", "0666", "/dev/nvidia0"])
        assert _doctor_as(host, "alice")["podman_rootless"]["status"] == "pass"
        host.run(["chmod", "0600", "/var/run/cdi/nvidia.yaml"])
        closed = _doctor_as(host, "alice")["podman_rootless"]
        assert closed["status"] == "fail" and "/var/run/cdi/nvidia.yaml (0600)" in closed["message"]
    finally:
        host.run(["rm", "-f", "/dev/nvidia0", "/var/run/cdi/nvidia.yaml", "/etc/gpu-install/config.yml"])
