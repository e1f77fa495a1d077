"""The containerd role on real systemd Debian hosts, against the containerd each runs.

Two prepared hosts (tests/integration/hosts.py ``ensure_layer``, keyed by content), shared by the tests of this
file (module scope; each test starts from the user's files, put back by ``node``):

* ``containerd-1.7``: Debian trixie's own containerd 1.7 (configuration version 2) with Docker beside it
  (trixie's docker.io, whose dockerd uses this system containerd);
* ``containerd-2.1``: trixie with containerd 2.x from Debian sid (2.1.9 when written; configuration version 3):
  sid's source in a file of its own, pinned at 100 so that only what is asked for comes from it (containerd/sid;
  runc stays trixie's), removed again once containerd is installed. sid's Release file, as the archive answers
  here, is past its Valid-Until, so that source says ``Check-Valid-Until: no``. The layer is kept by its key, so
  a newer sid changes nothing here until the script changes.

Each host carries a user's /etc/containerd/config.toml for its version, full of comments and foreign keys as a
kubeadm node has them (SystemdCgroup, the pause image, a second runtime, registry hosts from certs.d).

FIXTURE: NVIDIA's container toolkit is the fixture's (tests/fixtures/toolkit.py: NVIDIA's real
nvidia-container-runtime built from NVIDIA's v1.20.0 source, packaged after NVIDIA's packaging/debian), its
.debs installed into the prepared layer; only libnvidia-container is a stand-in. The apt path to it through the
signed mirror is test_container_role.py's. There is no GPU here.

/var/lib/containerd is a tmpfs in these hosts: the hosts' own root is overlayfs, on which containerd's overlayfs
snapshotter cannot mount (``failed to mount rootfs component: invalid argument``).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import roles
import tomllib
from hosts import Host, HostFactory, ensure_layer
from roles import failure
from test_container_role import NO_GPU_ERROR, RUNTIME_LOG, log_runtime_calls
from test_docker_ce_mirror import apply
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures import toolkit  # noqa: E402
from fixtures.mirror import Mirror  # noqa: E402

CONFIG = "/etc/containerd/config.toml"
DROP_IN = "/etc/containerd/conf.d/99-gpu-install.toml"
RUNTIME = "/usr/bin/nvidia-container-runtime"  # where NVIDIA's nvidia-container-toolkit-base package puts it
IMAGE = "docker.io/local/tiny:latest"
# FIXTURE: a systemd drop-in that makes containerd's start fail only once gpu-install's drop-in exists, so that
# the restart with the new configuration fails and the old one comes back.
FAIL_UNIT = "/etc/systemd/system/containerd.service.d/gpuit-fail-with-gpu-install-drop-in.conf"
FAIL_UNIT_TEXT = f"[Service]\nExecStartPre=/bin/sh -c 'test ! -e {DROP_IN}'\n"
# FIXTURE: the other way round, so that the restart after a removal fails and the configuration comes back.
FAIL_ABSENT_UNIT = "/etc/systemd/system/containerd.service.d/gpuit-fail-without-gpu-install-drop-in.conf"
FAIL_ABSENT_UNIT_TEXT = f"[Service]\nExecStartPre=/bin/sh -c 'test -e {DROP_IN}'\n"
RECORD = "/var/lib/gpu-install/containerd.json"

TOOLKIT_DEBS = "/layer/libnvidia-container1_1.20.0-1_amd64.deb /layer/libnvidia-container-tools_1.20.0-1_amd64.deb \
/layer/nvidia-container-toolkit-base_1.20.0-1_amd64.deb /layer/nvidia-container-toolkit_1.20.0-1_amd64.deb"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confold"

LAYER_17 = f"""apt-get update -q
{APT} install containerd docker.io docker-cli {TOOLKIT_DEBS}
containerd --version | grep -q ' 1\\.7\\.'
"""

LAYER_21 = f"""cat > /etc/apt/sources.list.d/gpuit-sid.sources <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
Check-Valid-Until: no
EOF
printf 'Package: *\\nPin: release n=sid\\nPin-Priority: 100\\n' > /etc/apt/preferences.d/gpuit-sid
apt-get update -q
{APT} install containerd/sid {TOOLKIT_DEBS}
rm /etc/apt/sources.list.d/gpuit-sid.sources /etc/apt/preferences.d/gpuit-sid
containerd --version | grep -q ' 2\\.[0-9]'
dpkg-query -W -f '${{Version}}' runc | grep -qv '^1\\.[3-9]'
"""

# A kubeadm node's containerd 1.7 configuration (version 2), after Kubernetes' container runtime page and
# `containerd config default`, with a user's comments and a second runtime.
USER_CONFIG_V2 = b"""\
# containerd configuration of a Kubernetes node (kubeadm), kept by its operator.
# Generated with `containerd config default`, then trimmed:
#   - the systemd cgroup driver, as the kubelet uses it
#   - the pause image of our Kubernetes release

version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"
  max_recv_message_size = 16777216

[plugins]
  # The CRI plugin: the kubelet talks to containerd through it.
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"   # kubeadm's pause image
    max_container_log_line_size = 16384
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
        # crun for the pods of RuntimeClass "crun"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
            BinaryName = "/usr/bin/crun"
            SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    # Registry mirrors live in /etc/containerd/certs.d/<registry>/hosts.toml
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""

# The same node on containerd 2.x (version 3: the CRI plugin split into images and runtime, the pause image
# pinned), with a kata runtime beside runc.
USER_CONFIG_V3 = b"""\
# containerd 2 configuration of a Kubernetes node, migrated with `containerd config migrate`.
# Operator's notes: systemd cgroups; kata for untrusted pods; registry hosts in certs.d.
version = 3
root = '/var/lib/containerd'
state = '/run/containerd'

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'   # kubeadm's pause image
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'

  [plugins.'io.containerd.cri.v1.runtime']
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = true
      # Kata Containers for RuntimeClass "kata"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
        runtime_type = 'io.containerd.kata.v2'
        privileged_without_host_devices = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dir = '/usr/lib/cni'
      conf_dir = '/etc/cni/net.d'
"""


@dataclass(frozen=True)
class Flavour:
    """A containerd release line as a host has it, and where its dump keeps what the role changes."""

    name: str
    script: str
    config: bytes
    plugin: str  # the CRI runtime plugin's id in this config version
    other_runtime: str  # the user's second runtime
    docker: bool

    def cri(self, dump: dict[str, Any]) -> dict[str, Any]:
        return dump["plugins"][self.plugin]

    def sandbox_image(self, dump: dict[str, Any]) -> str:
        if self.plugin == "io.containerd.grpc.v1.cri":
            return str(self.cri(dump)["sandbox_image"])
        return str(dump["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"])

    def registry_config_path(self, dump: dict[str, Any]) -> str:
        if self.plugin == "io.containerd.grpc.v1.cri":
            return str(self.cri(dump)["registry"]["config_path"])
        return str(dump["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"])


FLAVOURS = {
    "containerd-1.7": Flavour(
        "containerd-1.7", LAYER_17, USER_CONFIG_V2, "io.containerd.grpc.v1.cri", "crun", docker=True
    ),
    "containerd-2.1": Flavour(
        "containerd-2.1", LAYER_21, USER_CONFIG_V3, "io.containerd.cri.v1.runtime", "kata", docker=False
    ),
}


@dataclass
class Node:
    host: Host
    flavour: Flavour


def tiny_rootfs(host: Host) -> bytes:
    """A root filesystem made from the host's own dash, sleep and libc (no registry is reachable)."""
    script = (
        "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/lib64 $d/lib/x86_64-linux-gnu; "
        "cp /usr/bin/dash $d/bin/sh; cp /usr/bin/sleep $d/bin/sleep; "
        "cp /lib/x86_64-linux-gnu/libc.so.6 $d/lib/x86_64-linux-gnu/; cp /lib64/ld-linux-x86-64.so.2 $d/lib64/; "
        "tar -C $d --numeric-owner -c . ; rm -rf $d"
    )
    return bytes(host.run(["sh", "-c", script], text=False).stdout)


def oci_archive(layer: bytes, name: str) -> bytes:
    """An OCI image layout tar of one uncompressed layer, as `ctr image import` reads it (named by annotation)."""

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                        "size": len(layer)}],
        }
    ).encode()  # fmt: skip
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
                           "size": len(manifest), "annotations": {"io.containerd.image.name": name,
                                                                  "org.opencontainers.image.ref.name": "latest"}}],
        }
    ).encode()  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index)] + [
            ("blobs/sha256/" + hashlib.sha256(d).hexdigest(), d) for d in (layer, config, manifest)
        ]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main_pid(host: Host) -> str:
    return str(host.run(["systemctl", "show", "-p", "MainPID", "--value", "containerd"]).stdout.strip())


def wait_active(host: Host, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(["ctr", "version"], check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(host.run(["systemctl", "status", "containerd"], check=False).stdout)


def dump(host: Host) -> dict[str, Any]:
    return tomllib.loads(host.run(["containerd", "config", "dump"]).stdout)


def etc_listing(host: Host) -> str:
    return str(host.run(["sh", "-c", "ls -laR --time-style=full-iso /etc/containerd"]).stdout)


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def prepared(request: pytest.FixtureRequest, host_factory: HostFactory) -> Iterator[Node]:
    flavour = FLAVOURS[request.param]
    debs = toolkit.debs_dir()
    image = ensure_layer("trixie", flavour.name, flavour.script, files=debs, key=(debs.parent.name, debs.name))
    host = host_factory("trixie", image=image, tmpfs=("/var/lib/containerd:exec",))
    try:
        host.put(CONFIG, flavour.config)
        host.run(["systemctl", "restart", "containerd"])
        wait_active(host)
        log_runtime_calls(host)
        rootfs = tiny_rootfs(host)
        host.put("/root/tiny-oci.tar", oci_archive(rootfs, IMAGE))
        host.run(["ctr", "image", "import", "/root/tiny-oci.tar"])
        if flavour.docker:
            host.put("/root/tiny-rootfs.tar", rootfs)
            host.run(["sh", "-c", "docker import /root/tiny-rootfs.tar local/tiny >/dev/null"])
        yield Node(host, flavour)
    finally:
        host_factory.remove(host)


@pytest.fixture
def node(prepared: Node) -> Node:
    """The shared host as its user left it: their config.toml, no drop-in, no backups, containerd running it."""
    host, flavour = prepared.host, prepared.flavour
    stale = host.run(
        ["sh", "-c", f"rm -f {RECORD}; test -e {FAIL_UNIT} || test -e {FAIL_ABSENT_UNIT} || "
         "find /etc/containerd -mindepth 1 ! -name config.toml | grep -q ."],
        check=False,
    ).returncode == 0 or host.get(CONFIG) != flavour.config  # fmt: skip
    if stale:
        host.run(["sh", "-c", f"rm -f {FAIL_UNIT} {FAIL_ABSENT_UNIT}; "
                  "find /etc/containerd -mindepth 1 ! -name config.toml -delete"])  # fmt: skip
        host.put(CONFIG, flavour.config)
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "reset-failed", "containerd"], check=False)
        host.run(["systemctl", "restart", "containerd"])
    wait_active(host)
    return prepared


def converge(host: Host, check: bool = False, **extra: Any) -> tuple[int, dict[str, int], str]:
    return roles.converge(host, "containerd", {"nvidia_container_mode": "runtime", **extra}, check)


def test_runtime_mode_adds_nvidias_runtime_and_cdi_keeps_the_users_config_and_changes_nothing_again(node):
    host, flavour = node.host, node.flavour
    rc, recap, out = converge(host)
    assert rc == 0, out
    assert recap["changed"] >= 1, out

    # config.toml differs from the user's by the imports line alone.
    after = host.get(CONFIG)
    delta = [
        line
        for line in difflib.ndiff(flavour.config.decode().splitlines(), after.decode().splitlines())
        if line[:1] in "+-"
    ]
    assert len(delta) == 1 and delta[0].startswith("+ imports = "), delta
    assert "/etc/containerd/conf.d/*.toml" in delta[0]

    cri = flavour.cri(dump(host))
    runtimes = cri["containerd"]["runtimes"]
    nvidia = runtimes["nvidia"]
    assert nvidia["runtime_type"] == "io.containerd.runc.v2"
    assert nvidia["options"]["BinaryName"] == RUNTIME
    assert nvidia["options"]["SystemdCgroup"] is True  # carried over from the user's runc
    assert cri["containerd"]["default_runtime_name"] == "runc"  # containerd_default_runtime: false
    assert cri["enable_cdi"] is True
    assert "/etc/cdi" in cri["cdi_spec_dirs"]
    # The user's other runtimes and settings survive.
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True
    assert flavour.other_runtime in runtimes
    dumped = dump(host)
    assert flavour.sandbox_image(dumped) in ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10")
    assert flavour.registry_config_path(dumped).startswith("/etc/containerd/certs.d")

    # A second run: nothing changes, nothing is written, containerd is not restarted.
    files = (host.get(CONFIG), host.get(DROP_IN))
    pid = main_pid(host)
    rc, recap, out = converge(host)
    assert rc == 0 and recap["changed"] == 0, out
    assert (host.get(CONFIG), host.get(DROP_IN)) == files
    assert main_pid(host) == pid


def test_default_runtime_setting_makes_nvidia_the_cri_default_and_false_gives_it_back_to_runc(node):
    host, flavour = node.host, node.flavour
    rc, _recap, out = converge(host, containerd_default_runtime=True)
    assert rc == 0, out
    assert flavour.cri(dump(host))["containerd"]["default_runtime_name"] == "nvidia"
    rc, recap, out = converge(host, containerd_default_runtime=False)
    assert rc == 0 and recap["changed"] >= 1, out
    cri = flavour.cri(dump(host))
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert "nvidia" in cri["containerd"]["runtimes"]


def test_a_disabled_cri_plugin_is_configured_all_the_same_and_the_role_says_kubernetes_needs_it_on(node):
    host, flavour = node.host, node.flavour
    version_line = next(line for line in flavour.config.splitlines(keepends=True) if line.startswith(b"version"))
    off = f'disabled_plugins = ["{flavour.plugin}"]\n'.encode()
    host.put(CONFIG, flavour.config.replace(version_line, version_line + off, 1))
    host.run(["systemctl", "restart", "containerd"])
    wait_active(host)
    rc, _recap, out = converge(host)
    assert rc == 0, out
    assert "containerd's CRI plugin is off on this host" in out and "once the plugin is on" in out, out
    assert host.run(["test", "-s", DROP_IN], check=False).returncode == 0


def ctr_run(host: Host, runtime: dict[str, Any], name: str, *env: str) -> Any:
    argv = ["ctr", "run", "--rm", "--runtime", runtime["runtime_type"], "--runc-binary",
            runtime["options"]["BinaryName"]]  # fmt: skip
    for item in env:
        argv += ["--env", item]
    return host.run([*argv, IMAGE, name, "/bin/sh", "-c", f"echo {name}"], check=False)


def test_ctr_runs_containers_through_the_runtime_entry_the_role_wrote(node):
    host, flavour = node.host, node.flavour
    rc, _recap, out = converge(host)
    assert rc == 0, out
    runtime = flavour.cri(dump(host))["containerd"]["runtimes"]["nvidia"]

    # No GPU asked for (NVIDIA_VISIBLE_DEVICES unset, then void): NVIDIA's runtime (jit-cdi mode) reads the
    # container's spec, modifies nothing and hands it to runc.
    for name, env in (("plain", ()), ("void", ("NVIDIA_VISIBLE_DEVICES=void",))):
        host.put(RUNTIME_LOG, b"")
        run = ctr_run(host, runtime, name, *env)
        assert run.returncode == 0 and run.stdout.strip() == name, run.stdout + run.stderr
        calls = host.get(RUNTIME_LOG).decode()
        assert f"/{name}/config.json" in calls and "Auto-detected mode as 'jit-cdi'" in calls, calls
        assert "CDI modifier" not in calls and "nvml" not in calls, calls

    # Every GPU asked for: the runtime tries to make the container's GPU devices from NVML and, on this host
    # without the driver's libraries, refuses to start it.
    host.put(RUNTIME_LOG, b"")
    run = ctr_run(host, runtime, "all", "NVIDIA_VISIBLE_DEVICES=all")
    assert run.returncode != 0, run.stdout
    assert all(part in run.stderr for part in NO_GPU_ERROR), run.stderr
    assert "Auto-detected mode as 'nvml'" in host.get(RUNTIME_LOG).decode()


def test_running_containers_keep_running_across_containerds_restart(node):
    host, flavour = node.host, node.flavour
    host.run(["ctr", "run", "-d", IMAGE, "keeper", "/bin/sleep", "600"])
    try:
        task_pid = host.run(["sh", "-c", "ctr task ls | awk '$1 == \"keeper\" {print $2}'"]).stdout.strip()
        assert task_pid.isdigit(), host.run(["ctr", "task", "ls"]).stdout
        docker_pid = ""
        if flavour.docker:
            cid = host.run(["docker", "run", "-d", "--network", "none", "local/tiny", "/bin/sleep", "600"])
            cid_text = cid.stdout.strip()
            docker_pid = host.run(["docker", "inspect", "-f", "{{.State.Pid}}", cid_text]).stdout.strip()
        pid = main_pid(host)

        rc, _recap, out = converge(host)
        assert rc == 0, out
        assert main_pid(host) != pid, "containerd was not restarted"

        tasks = host.run(["ctr", "task", "ls"]).stdout
        assert any(line.split()[:3] == ["keeper", task_pid, "RUNNING"] for line in tasks.splitlines()), tasks
        if flavour.docker:
            state = host.run(["docker", "inspect", "-f", "{{.State.Running}} {{.State.Pid}}", cid_text]).stdout
            assert state.split() == ["true", docker_pid], state
            # dockerd's client of the system containerd reconnects after the restart on its own back-off: a new
            # container may meet "connection refused" for the first seconds, then runs.
            new = ["docker", "run", "--rm", "--network", "none", "local/tiny", "/bin/sh", "-c", "echo new"]
            run = host.run(["sh", "-c", 'for i in $(seq 30); do "$@" && exit 0; sleep 1; done; exit 1', "sh", *new])
            assert run.stdout.strip().splitlines()[-1] == "new", run.stdout + run.stderr
    finally:
        host.run(["ctr", "task", "kill", "-s", "KILL", "keeper"], check=False)
        host.run(["sh", "-c", "sleep 0.5; ctr task delete keeper; ctr container delete keeper"], check=False)
        if flavour.docker:
            host.run(["sh", "-c", "docker rm -f $(docker ps -aq) >/dev/null 2>&1"], check=False)


def test_malformed_config_is_refused_naming_line_and_column_and_nothing_is_written(node):
    host = node.host
    text = node.flavour.config.replace(b"[plugins]\n", b"[plugins\n", 1)
    host.put(CONFIG, text)
    listing = etc_listing(host)
    rc, _recap, out = converge(host)
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 4, error
    assert CONFIG in error["reason"] and "line" in error["reason"] and "column" in error["reason"], error
    line = text.decode().splitlines().index("[plugins") + 1
    assert f"line {line}" in error["reason"], error
    # Refused by the role's preflight, before any change a full run would make.
    failed_task = out.split("FAILED!")[0].rsplit("TASK [", 1)[1]
    assert failed_task.startswith("gpu_install.nvidia.containerd : Check that containerd's configuration"), out
    assert host.get(CONFIG) == text
    assert etc_listing(host) == listing


def test_containerd_failing_with_the_new_configuration_is_rolled_back(node):
    host, flavour = node.host, node.flavour
    host.put(FAIL_UNIT, FAIL_UNIT_TEXT)
    host.run(["systemctl", "daemon-reload"])
    rc, _recap, out = converge(host)
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 7, error
    assert "containerd" in error["reason"], error
    assert host.get(CONFIG) == flavour.config
    assert host.run(["test", "-e", DROP_IN], check=False).returncode != 0
    assert host.run(["systemctl", "is-active", "containerd"], check=False).stdout.strip() == "active"
    wait_active(host)


def test_check_mode_shows_the_diff_and_changes_nothing(node):
    host, flavour = node.host, node.flavour
    listing, pid = etc_listing(host), main_pid(host)
    rc, recap, out = converge(host, check=True)
    assert rc == 0, out
    assert recap["changed"] >= 1, out
    assert "+imports = " in out and "/etc/containerd/conf.d/*.toml" in out, out
    assert DROP_IN in out and "BinaryName" in out, out
    assert host.get(CONFIG) == flavour.config
    assert etc_listing(host) == listing
    assert main_pid(host) == pid


@pytest.mark.parametrize("prepared", ["containerd-2.1"], indirect=True)
def test_apply_with_engines_auto_configures_containerd_and_installs_no_docker_on_a_node_without_docker(node, tmp_path):
    """FIXTURE: the signed mirror (tests/fixtures/mirror.py) stands in for NVIDIA's toolkit repository."""
    host, flavour = node.host, node.flavour
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "nvidia_container_mode": "runtime",
            "gpu_install_container_engines": "auto",
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        pid = main_pid(host)
        rc, result = apply(host, settings)
    assert rc == 0, result.get("error")
    assert [engine["name"] for engine in result["engines"]] == ["containerd"], result["engines"]
    assert result["engines"][0]["changes"] >= 1, result
    status = host.run(["dpkg-query", "-W", "-f", "${Status}", "docker.io"], check=False).stdout
    assert "installed" not in status.split(), f"Docker was installed: {status}"
    assert host.run(["sh", "-c", "command -v docker || command -v dockerd"], check=False).returncode != 0
    # An image build writes the configuration and leaves containerd running as it was (no restart): the files
    # hold the runtime, as containerd reads them at its next start.
    assert main_pid(host) == pid
    runtimes = flavour.cri(dump(host))["containerd"]["runtimes"]
    assert runtimes["nvidia"]["options"]["BinaryName"] == RUNTIME and flavour.other_runtime in runtimes


# --- removal (state: absent), on the same hosts ------------------------------------------------------------------

def containerd_absent(host: Host, check: bool = False, state: str = "absent") -> dict[str, Any]:
    """The module (state: absent unless told), run on the host as Ansible runs it (an args file in, one JSON object
    out)."""
    args = {"ANSIBLE_MODULE_ARGS": {"state": state, "_ansible_check_mode": check}}
    host.put("/root/absent-args.json", json.dumps(args).encode())
    script = (
        "from gpu_install.collection import collection_dir, collections_path; import os, subprocess, sys; "
        "env = dict(os.environ, PYTHONPATH=str(collections_path())); "
        "module = collection_dir() / 'plugins' / 'modules' / 'containerd_config.py'; "
        "sys.exit(subprocess.run([sys.executable, str(module), '/root/absent-args.json'], env=env).returncode)"
    )
    proc = host.run([f"{roles.VENV}/bin/python", "-c", script], check=False)
    return dict(json.loads(proc.stdout))


def test_absent_gives_back_the_users_config_toml_restarts_containerd_and_changes_nothing_again(node):
    host, flavour = node.host, node.flavour
    rc, _recap, out = converge(host, containerd_default_runtime=True)
    assert rc == 0, out
    assert json.loads(host.get(RECORD))["files"][CONFIG]["import_added"] == "/etc/containerd/conf.d/*.toml"
    listing, pid = etc_listing(host), main_pid(host)

    plan = containerd_absent(host, check=True)
    assert plan["changed"] is True and etc_listing(host) == listing and main_pid(host) == pid
    assert [(i["kind"], i["target"], i["action"]) for i in plan["items"]] == [
        ("setting", f"{CONFIG} imports", "edit"), ("file", DROP_IN, "remove"),
        ("file", "/etc/containerd/conf.d", "remove"), ("setting", "containerd", "restart")]  # fmt: skip

    done = containerd_absent(host)
    assert done["changed"] is True and done["restarted"] is True, done
    assert [(i["kind"], i["target"], i["action"]) for i in done["items"]] == [
        (i["kind"], i["target"], i["action"]) for i in plan["items"]
    ]
    assert host.get(CONFIG) == flavour.config  # byte for byte the user's
    left = host.run(["ls", "-A", "/etc/containerd"]).stdout.split()
    assert "conf.d" not in left and done["backup_file"].rsplit("/", 1)[1] in left, left
    assert host.run(["test", "-e", RECORD], check=False).returncode != 0
    assert main_pid(host) != pid
    wait_active(host)
    cri = flavour.cri(dump(host))
    assert "nvidia" not in cri["containerd"]["runtimes"] and flavour.other_runtime in cri["containerd"]["runtimes"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert host.run(["ctr", "run", "--rm", IMAGE, "after-removal", "/bin/sh", "-c", "echo ok"]).stdout.strip() == "ok"

    listing, pid = etc_listing(host), main_pid(host)
    again = containerd_absent(host)
    assert again["changed"] is False and again["items"] == [] and again["restarted"] is False, again
    assert etc_listing(host) == listing and main_pid(host) == pid


@pytest.mark.parametrize("prepared", ["containerd-1.7"], indirect=True)
def test_absent_rolls_back_when_containerd_fails_and_finishes_a_removal_killed_before_its_restart(node):
    host, flavour = node.host, node.flavour
    assert containerd_absent(host, state="present")["restarted"] is True
    applied = {path: host.get(path) for path in (CONFIG, DROP_IN, RECORD)}
    files = host.run(["ls", "-A", "/etc/containerd"]).stdout

    # containerd does not start without the drop-in: both files and the record back, containerd running them.
    host.put(FAIL_ABSENT_UNIT, FAIL_ABSENT_UNIT_TEXT.encode())
    host.run(["systemctl", "daemon-reload"])
    failed = containerd_absent(host)
    assert failed["failed"] is True and failed["gpu_install_error"]["code"] == 7, failed
    assert failed["gpu_install_error"]["reason"].startswith("containerd did not come back"), failed
    assert {path: host.get(path) for path in applied} == applied
    assert host.run(["ls", "-A", "/etc/containerd"]).stdout == files  # this run's backup gone too
    assert host.run(["systemctl", "is-active", "containerd"], check=False).stdout.strip() == "active"
    wait_active(host)
    host.run(["sh", "-c", f"rm -f {FAIL_ABSENT_UNIT}; systemctl daemon-reload"])

    # A removal killed after taking the files back and before the restart: the record is still there, containerd
    # still runs NVIDIA's runtime. The next removal restarts it and drops the record.
    time.sleep(1.5)
    host.run(["sh", "-c", f"rm -r /etc/containerd/conf.d && cat > {CONFIG}"], input=flavour.config.decode())
    pid = main_pid(host)
    finished = containerd_absent(host)
    assert finished["changed"] is True and finished["restarted"] is True, finished
    assert [(i["target"], i["action"]) for i in finished["items"]] == [("containerd", "restart")]
    assert main_pid(host) != pid and host.run(["test", "-e", RECORD], check=False).returncode != 0
    assert containerd_absent(host)["changed"] is False
