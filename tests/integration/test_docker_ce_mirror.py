"""docker_package: docker-ce from Docker's repository, through the repository layer, on a bookworm host.

FIXTURE: tests/fixtures/mirror.py stands in for Docker's and NVIDIA's repositories (unreachable from
here), signed with a key made by the test and reached through gpu_install_repositories, as a user's
mirror is. Its stand-in docker-ce carries the files of Debian's own docker.io (downloaded and unpacked by
the test), so a real dockerd runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hosts import Host
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402


def apply(host: Host, settings: dict) -> tuple[int, dict]:
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    host.put("/etc/gpu-install/config.yml", json.dumps(settings).encode())
    proc = host.run(["gpu-install", "apply", "--yes", "--json"], check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def debian_docker_files(tmp_path: Path) -> Path:
    """The files of Debian 12's docker.io package (this machine runs Debian 12, as the host does)."""
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["apt-get", "download", "-q", "docker.io"], cwd=debs, check=True, capture_output=True)
    payload = tmp_path / "payload"
    subprocess.run(["dpkg-deb", "-x", str(next(debs.glob("docker.io_*.deb"))), str(payload)], check=True)
    return payload


def test_docker_ce_comes_from_the_mirrored_docker_repository_and_gets_the_runtime(bookworm_host, tmp_path):
    host = bookworm_host
    gw = gateway(host)
    payload = debian_docker_files(tmp_path)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw), docker_payload=payload) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "docker_package": "docker-ce",
            "gpu_install_repositories": mirror.repositories(gw, ids=("docker", "nvidia_container_toolkit")),
        }
        rc, result = apply(host, settings)
        assert rc == 0, result["error"]["reason"]
        sources = host.get("/etc/apt/sources.list.d/gpu-install-docker.sources").decode()
        assert f"URIs: http://{gw}:{mirror.port}/docker/debian" in sources
        assert "Signed-By: /etc/apt/keyrings/gpu-install-docker.gpg" in sources
        policy = host.run(["apt-cache", "policy", "docker-ce"]).stdout
        assert f"http://{gw}:{mirror.port}/docker/debian bookworm/stable" in policy
        detected = json.loads(host.run(["gpu-install", "detect", "--json"]).stdout)["docker"]
        assert (detected["flavour"], detected["version"]) == ("docker-ce", "27.3.1")
        info = json.loads(host.run(["docker", "info", "--format", "{{json .}}"]).stdout)
        assert info["DefaultRuntime"] == "nvidia"

        rc, again = apply(host, settings)
        assert rc == 0 and again["changed"] == 0, again["changes"]
