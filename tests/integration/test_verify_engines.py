"""verify's containerd path against real containerd daemons in a Debian trixie systemd host (GPU-less).

The host is the trixie host image plus Debian's containerd 1.7 (its systemd service, CRI on, as Debian ships it),
runc, Podman 5 (only to build and save the image: no registry is reached) and, copied in, the containerd 2.1 and
``ctr`` binaries of Debian sid (tests/fixtures/containerd_bins.py), started by hand with their own root, state and
socket. What stands in for the GPU is named as a FIXTURE:

* the fake libnvidia-ml.so.1 of tests/unit/test_nvml_probe.py for NVML's view outside (two GPUs);
* in the image, test_verify.py's static fake nvidia-smi, which lists the GPUs NVIDIA_VISIBLE_DEVICES selects;
* for runtime mode, a script named nvidia-container-runtime that runs runc (it adds nothing NVIDIA's runtime adds):
  what is proved is ctr's ``--runc-binary`` path from the module to the container through containerd 1.7's runc shim;
* for cdi mode, the FIXTURE CDI spec of tests/fixtures/engines.py in /etc/cdi (env var and /dev/null-backed node
  per GPU, a stand-in nvidia-smi mounted over the image's): ctr 2.1 resolves ``--device nvidia.com/gpu=...`` itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import Host, HostFactory, ensure_layer
from test_podman import ENV
from test_podman import run_verify as run_podman_verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures import containerd_bins  # noqa: E402
from fixtures.engines import (  # noqa: E402
    FIXTURE,
    STAND_IN_SMI,
    A,
    B,
    build_fake_nvml,
    build_fake_smi,
    fixture_spec,
    per_gpu_checks,
)

LAYER = (
    "apt-get update -q\n"
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
    "podman crun netavark containerd runc\n"
)
IMAGE = "localhost/gpu-install-test-smi:1"
SPEC = "/etc/cdi/gpu-install-test-fixture.json"
C2 = "/run/gpu-install-test-containerd2"  # the hand-started containerd 2.1's state and socket
STAND_IN_RUNTIME = (
    "#!/bin/sh\n# gpu-install test FIXTURE: a stand-in for NVIDIA's runtime; it adds nothing NVIDIA's runtime adds\n"
    'exec runc "$@"\n'
)


@pytest.fixture(scope="module")
def engines_host(host_factory: HostFactory, tmp_path_factory) -> Iterator[Host]:
    image = ensure_layer("trixie", "engines-verify", LAYER)
    host = host_factory("trixie", image=image, tmpfs=["/var/lib/containers", "/var/lib/containerd"])
    try:
        work = tmp_path_factory.mktemp("engines")
        host.put(f"{FIXTURE}/libnvidia-ml.so.1", build_fake_nvml(work).read_bytes(), mode=0o755)
        host.put("/root/image/usr/bin/nvidia-smi", build_fake_smi(work).read_bytes(), mode=0o755)
        host.put("/root/image/etc/fake-gpus", f"{A}\n{B}\n")
        host.put(f"{FIXTURE}/nvidia-smi", STAND_IN_SMI, mode=0o755)
        host.put(f"{FIXTURE}/nvidia-container-runtime", STAND_IN_RUNTIME, mode=0o755)
        host.put(SPEC, json.dumps(fixture_spec(), indent=2))
        host.put("/etc/containers/containers.conf", "[containers]\ndefault_sysctls = []\n")
        sid = containerd_bins.binaries("sid")
        host.put("/usr/local/bin/containerd2", (sid / "containerd").read_bytes(), mode=0o755)
        host.put("/usr/local/bin/ctr2", (sid / "ctr").read_bytes(), mode=0o755)
        host.put(
            f"{C2}/config.toml",
            f'version = 3\nroot = "/var/lib/containerd/c2"\nstate = "{C2}/state"\n[grpc]\n  address = "{C2}/c.sock"\n',
        )
        script = (
            "set -e; d=/root/image; mkdir -p $d/bin $d/lib64 $d/lib/x86_64-linux-gnu; cp /usr/bin/dash $d/bin/sh; "
            "cp /lib/x86_64-linux-gnu/libc.so.6 $d/lib/x86_64-linux-gnu/; cp /lib64/ld-linux-x86-64.so.2 $d/lib64/; "
            f"tar -C $d -c . | podman import -q - {IMAGE} >/dev/null; "
            f"podman save -q --format oci-archive -o /root/image.tar {IMAGE}; "
            f"ctr --namespace gpu-install images import --base-name localhost/gpu-install-test-smi /root/image.tar; "
            f"(setsid containerd2 --config {C2}/config.toml >{C2}/log 2>&1 &); "
            f"for i in $(seq 50); do ctr2 --address {C2}/c.sock version >/dev/null 2>&1 && break; sleep 0.2; done; "
            f"ctr2 --address {C2}/c.sock --namespace gpu-install images import "
            "--base-name localhost/gpu-install-test-smi /root/image.tar"
        )
        host.run(["sh", "-c", script], env=ENV)
        yield host
    finally:
        host_factory.remove(host)


def run_verify(host: Host, args: dict) -> tuple[int, dict]:
    """test_podman.py's run of the gpu_verify module in the host, on this file's image, without pulling."""
    return run_podman_verify(host, dict(args, image=IMAGE, pull=False, timeout=60))


def test_containerd_1_7_service_runtime_mode_runs_each_check_through_the_runtime_binary(engines_host):
    rc, result = run_verify(
        engines_host,
        {"engines": ["containerd"], "mode": "runtime", "runtime_path": f"{FIXTURE}/nvidia-container-runtime"},
    )
    assert rc == 0, result.get("msg")
    state = result["containerd"]
    assert state["server_version"].startswith("1.7.") and state["client_version"].startswith("1.7.")
    assert state["image"] == IMAGE and state["runtime_binary"] == f"{FIXTURE}/nvidia-container-runtime"
    assert [(c["name"], c["seen"]) for c in result["checks"]] == per_gpu_checks("containerd")
    leftovers = engines_host.run(["ctr", "--namespace", "gpu-install", "containers", "ls", "-q"]).stdout
    assert leftovers.strip() == ""


def test_containerd_2_1_cdi_mode_ctr_resolves_the_fixture_spec_devices(engines_host):
    args = {
        "engines": ["containerd"],
        "mode": "cdi",
        "ctr": "/usr/local/bin/ctr2",
        "containerd_address": f"{C2}/c.sock",
    }
    rc, result = run_verify(engines_host, args)
    assert rc == 0, result.get("msg")
    assert result["containerd"]["server_version"].startswith("2.1.")
    assert {c["path"] for c in result["checks"]} == {"--device"}
    assert all("--runc-binary" not in c["argv"] for c in result["checks"])
    assert [(c["name"], c["seen"]) for c in result["checks"]] == per_gpu_checks("containerd")


def test_containerd_and_podman_in_one_run_list_both_engines_runs(engines_host):
    args = {"engines": ["containerd", "podman"], "mode": "cdi", "ctr": "/usr/local/bin/ctr2",
            "containerd_address": f"{C2}/c.sock"}  # fmt: skip
    rc, result = run_verify(engines_host, args)
    assert rc == 0, result.get("msg")
    assert result["verified"] is True and [r["engine"] for r in result["runs"]] == ["containerd", "podman"]
    assert [r["verified"] for r in result["runs"]] == [True, True]
    assert len(result["checks"]) == 5 + 8 and result["docker"]["running"] is None
