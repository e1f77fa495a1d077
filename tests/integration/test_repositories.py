"""Repositories on a real bookworm host, against the signed local mirror.

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's and Docker's
repositories (unreachable from here); the host reaches it on the Docker bridge
gateway through the same gpu_install_repositories setting a user sets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hosts import VENV, Host

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror, tools_missing  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _mirror_tools():
    missing = tools_missing()
    if missing:
        pytest.fail(f"the mirror fixture needs {', '.join(missing)}: scripts/test installs them")


SNAPSHOT = "find /etc/apt /var/lib/apt/lists -xdev \\( -type f -o -type l \\) -print0 | sort -z | xargs -0 sha256sum"
KEYRING = "/etc/apt/keyrings/gpu-install-cuda.gpg"
SOURCES = "/etc/apt/sources.list.d/gpu-install-cuda.sources"


def gateway(host: Host) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.NetworkSettings.Gateway}}", host.name],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def host_and_mirror(bookworm_host: Host, tmp_path: Path):
    gw = gateway(bookworm_host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        yield bookworm_host, mirror, gw


def run_module(host: Host, args: dict) -> tuple[int, dict]:
    """The module as Ansible runs it (an args file, JSON out), with the host's installed collection."""
    host.put("/root/repositories-args.json", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    script = (
        f"cp=$({VENV}/bin/python -c 'from gpu_install.collection import collections_path as c; print(c())'); "
        f'PYTHONPATH="$cp" exec {VENV}/bin/python "$cp/ansible_collections/gpu_install/nvidia/plugins/modules/'
        'repositories.py" /root/repositories-args.json'
    )
    proc = host.run(["sh", "-c", script], check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_module_check_real_and_again_then_apt_installs_from_the_mirror(host_and_mirror):
    host, mirror, gw = host_and_mirror
    args = {"use": ["cuda", "nvidia_container_toolkit"], "overrides": mirror.repositories(gw), "_ansible_diff": True}
    before = host.run(["sh", "-c", SNAPSHOT]).stdout

    rc, check = run_module(host, {**args, "_ansible_check_mode": True})
    assert rc == 0, check
    assert check["changed"] is True
    assert host.run(["sh", "-c", SNAPSHOT]).stdout == before  # check mode and preflight changed nothing

    rc, real = run_module(host, args)
    assert rc == 0, real
    assert real["changed"] is True and real["cache_update_needed"] is True
    assert real["changed_files"] == check["changed_files"]
    mode = host.run(["stat", "-c", "%a %U %G", KEYRING, SOURCES]).stdout.split("\n")
    assert mode[:2] == ["644 root root", "644 root root"]
    assert f"URIs: http://{gw}:{mirror.port}/cuda/debian12/x86_64/" in host.get(SOURCES).decode()

    for extra in ({"_ansible_check_mode": True}, {}):  # idempotent: check and real again change nothing
        rc, again = run_module(host, {**args, **extra})
        assert rc == 0, again
        assert (again["changed"], again["changed_files"], again["cache_update_needed"]) == (False, [], False)

    # The files work with the real apt: the index verifies against the pinned keyring, the stand-in installs.
    update = host.run(["apt-get", "update"], check=False)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "NO_PUBKEY" not in update.stdout + update.stderr
    sim = host.run(["apt-get", "install", "-s", "cuda-drivers", "nvidia-container-toolkit"], check=False)
    assert sim.returncode == 0 and "Inst cuda-drivers (1.0-1" in sim.stdout, sim.stdout + sim.stderr


def test_module_refuses_a_rotated_key_and_leaves_apt_as_it_was(host_and_mirror):
    host, mirror, gw = host_and_mirror
    mirror.rotate_key("cuda")
    before = host.run(["sh", "-c", SNAPSHOT]).stdout
    rc, result = run_module(host, {"use": ["cuda"], "overrides": mirror.repositories(gw)})
    assert rc != 0
    assert result["gpu_install_error"]["code"] == 5
    assert "not signed by the pinned key" in result["msg"]
    assert host.run(["sh", "-c", SNAPSHOT]).stdout == before


def _plan(host: Host, repositories: dict) -> tuple[int, dict]:
    settings = {
        "gpu_install_image_build": True,
        "gpu_install_repositories": repositories,
    }
    host.put("/etc/gpu-install/config.yml", json.dumps(settings).encode())
    proc = host.run(["gpu-install", "plan", "--json", "-c", "/etc/gpu-install/config.yml"], check=False)
    return proc.returncode, json.loads(proc.stdout or "{}")


def test_plan_shows_the_repository_files_and_a_wrong_key_exits_5(host_and_mirror):
    host, mirror, gw = host_and_mirror
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    before = host.run(["sh", "-c", SNAPSHOT]).stdout
    rc, plan = _plan(host, mirror.repositories(gw, ids=("cuda", "nvidia_container_toolkit")))
    assert rc == 0, plan
    shown = json.dumps(plan["changes"])
    assert SOURCES in shown and KEYRING in shown
    assert host.run(["sh", "-c", SNAPSHOT]).stdout == before

    mirror.serve_wrong_key("cuda")
    rc, plan = _plan(host, mirror.repositories(gw, ids=("cuda", "nvidia_container_toolkit")))
    assert rc == 5, plan
    assert plan["error"]["code"] == 5
    assert mirror.key.fingerprint in plan["error"]["reason"]
    assert host.run(["sh", "-c", SNAPSHOT]).stdout == before
