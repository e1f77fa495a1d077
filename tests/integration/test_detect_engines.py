"""`gpu-install detect` on a real trixie host with Debian's containerd and Podman, against what containerd says.

One systemd host: Debian's `containerd` (1.7, CRI on as Debian ships it) and `podman` (5.x) installed with apt.
Whether the CRI plugin is on is read from containerd itself (`ctr plugins ls` after a restart with each config),
so detection's reading of `disabled_plugins` is proved against the real daemon, not against a table. The kubelet
is a FIXTURE: a stand-in unit (never started) and a KubeletConfiguration at kubeadm's path naming containerd's
socket, which is all detection reads of a kubelet.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hosts import Host

FIXTURE_KUBELET_UNIT = (
    "# gpu-install test FIXTURE: a kubelet stand-in unit (never started); detection only reads that it exists.\n"
    "[Unit]\nDescription=kubelet stand-in (gpu-install test fixture)\n[Service]\nExecStart=/bin/true\n"
)
FIXTURE_KUBELET_CONFIG = (
    "# gpu-install test FIXTURE: a KubeletConfiguration as kubeadm writes it, naming containerd's socket.\n"
    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
    "containerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock\n"
)


def detect(host: Host) -> dict[str, Any]:
    proc = host.run(["gpu-install", "detect", "--json"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def dpkg_upstream(host: Host, package: str) -> str:
    version = host.run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout.strip()
    return re.split(r"[+~-]", version.split(":", 1)[-1], maxsplit=1)[0]


def restart_containerd(host: Host, config: str) -> None:
    host.put("/etc/containerd/config.toml", config)
    proc = host.run(["systemctl", "restart", "containerd"], check=False)
    if proc.returncode != 0:
        log = host.run(["journalctl", "-u", "containerd", "--no-pager", "-n", "30"], check=False).stdout
        raise AssertionError(f"containerd did not restart with:\n{config}\n{log}")
    host.run(["sh", "-c", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1"])


def containerd_cri_loaded(host: Host) -> bool:
    """Whether the running containerd loaded its CRI plugin (`ctr plugins ls`: type io.containerd.grpc.v1, id cri)."""
    out = host.run(["ctr", "plugins", "ls"]).stdout
    return any(
        line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
        for line in out.splitlines()[1:]
    )


def test_detect_reads_containerd_podman_and_a_kubelet_as_the_daemons_see_them(trixie_host: Host) -> None:
    host = trixie_host
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    host.run(["apt-get", "update", "-q"], env=env)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "containerd", "podman"], env=env)
    shipped = (
        host.get("/etc/containerd/config.toml").decode()
        if host.run(["test", "-f", "/etc/containerd/config.toml"], check=False).returncode == 0
        else None
    )

    facts = detect(host)
    containerd = facts["containerd"]
    assert containerd["present"] is True
    assert containerd["package"] == "containerd"
    assert containerd["version"] == dpkg_upstream(host, "containerd")
    assert containerd["version"].startswith("1.7.")
    assert containerd["config_exists"] is (shipped is not None)
    if shipped is not None:
        expected = re.search(r"^version\s*=\s*(\d+)", shipped, re.M)
        assert containerd["config_version"] == (int(expected.group(1)) if expected else 1)
    assert containerd["active"] is True
    assert containerd["cri_enabled"] is True is containerd_cri_loaded(host)
    assert containerd["kubelet"] is False
    podman = facts["podman"]
    assert podman == {"present": True, "version": dpkg_upstream(host, "podman"), "cdi": True}
    assert facts["engines"] == ["containerd", "podman"]

    # Docker's containerd.io ships a file without `version` (version 1) disabling the plugin by its id.
    restart_containerd(host, 'disabled_plugins = ["cri"]\n')
    assert containerd_cri_loaded(host) is False
    facts = detect(host)
    assert facts["containerd"]["config_version"] == 1
    assert facts["containerd"]["cri_enabled"] is False
    assert facts["engines"] == ["podman"]

    # A version 2 file names plugins by URI: containerd refuses to start on the bare id "cri", and detection says so.
    host.put("/etc/containerd/config.toml", 'version = 2\ndisabled_plugins = ["cri"]\n')
    assert host.run(["systemctl", "restart", "containerd"], check=False).returncode != 0
    facts = detect(host)
    assert facts["containerd"]["active"] is False
    assert "containerd refuses to start with it" in facts["containerd"]["config_error"]
    assert facts["containerd"]["cri_enabled"] is False

    restart_containerd(host, 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    assert containerd_cri_loaded(host) is False
    facts = detect(host)
    assert facts["containerd"]["cri_enabled"] is False
    assert facts["engines"] == ["podman"]

    # The kubelet FIXTURE: a unit and kubeadm's KubeletConfiguration naming containerd's socket through /var/run.
    host.put("/etc/systemd/system/kubelet.service", FIXTURE_KUBELET_UNIT)
    host.put("/var/lib/kubelet/config.yaml", FIXTURE_KUBELET_CONFIG)
    facts = detect(host)
    assert facts["kubelet"] == {
        "present": True,
        "endpoint": "unix:///var/run/containerd/containerd.sock",
        "endpoint_source": "/var/lib/kubelet/config.yaml",
    }
    assert facts["containerd"]["kubelet"] is True
    assert facts["engines"] == ["containerd", "podman"]

    # What a person reads: the same facts in words.
    text = host.run(["gpu-install", "detect"], env={"COLUMNS": "200"}).stdout
    assert (
        f"containerd {facts['containerd']['version']} (containerd), config version 2, CRI off, used by the kubelet"
        in text
    )
    assert f"podman {facts['podman']['version']}, reads CDI specs" in text
