"""The fleet door: ansible-playbook gpu_install.nvidia.site over real SSH to a mixed bookworm/trixie fleet.

The controller is this machine's ansible-playbook running the collection from the wheel under test; the hosts
are real systemd Debian hosts reached as root over SSH (pipelining on, one fork per host). One host has a
malformed /etc/docker/daemon.json on purpose, and one inventory entry is an address nobody answers on. A second
test runs the remove playbook (gpu_install.nvidia.remove) over SSH after the site playbook on two hosts that ran
Docker before (test_remove.LAYER), and compares each with its snapshot from before apply (tests/fixtures/snapshot.py).

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's container toolkit repository (unreachable from here),
signed with a key made by the test and reached through gpu_install_repositories, as a user's mirror is. There is
no GPU here: the run is an image build (gpu_install_image_build: true, nvidia_driver_source: none), which installs
and configures Docker and the toolkit and skips verify.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hosts import Host, ensure_layer
from test_docker_role import info, install_docker_io
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import TOOLKIT_VERSIONS, Mirror  # noqa: E402

SUITES = ("bookworm", "trixie", "bookworm", "trixie", "bookworm", "trixie")
BROKEN = b'{\n  "log-driver": "json-file",\n}\n'  # a trailing comma: not JSON
STATUSES = {"ok", "changed", "failed", "unreachable", "removed"}
ROW_KEYS = [
    "host", "status", "exit_code", "reason", "os", "docker", "engines", "driver_version", "toolkit_version", "gpus",
    "verify", "reboot_required", "changed",
]  # fmt: skip


def collection_from_wheel(wheel: Path, dest: Path) -> Path:
    """The collections path inside the wheel under test (gpu_install/_collection), unpacked."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    path = dest / "gpu_install" / "_collection"
    assert (path / "ansible_collections" / "gpu_install" / "nvidia" / "playbooks" / "site.yml").is_file()
    return path


def nobody_answers(gw: str) -> str:
    """An address on the hosts' bridge that no container holds (the last one of the subnet)."""
    net = ipaddress.ip_network(f"{gw}/16", strict=False)
    return str(net.broadcast_address - 1)


def start_fleet(host_factory) -> list[Host]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(host_factory, SUITES))


def playbook(
    collections: Path,
    inventory: Path,
    extra: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    name: str = "gpu_install.nvidia.site",
):
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    run_env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_PIPELINING="True",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_FORKS="10",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_LOCAL_TEMP=str(cwd / "ansible-tmp"),
        ANSIBLE_HOME=str(cwd / "ansible-home"),
    )
    run_env.pop("GPU_INSTALL_REPORT_DIR", None)
    run_env.update(env or {})
    proc = subprocess.run(
        [str(ansible_playbook), "-i", str(inventory), "-e", f"@{extra}", name],
        capture_output=True, text=True, env=run_env, cwd=cwd, timeout=1800, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def recap(out: str) -> dict[str, dict[str, int]]:
    found = {}
    for m in re.finditer(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$", out, flags=re.M):
        found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return found


def task_output(out: str, task: str) -> str:
    """What ansible-playbook printed under every TASK [task] heading (one per batch)."""
    parts = re.split(r"^(?=TASK \[|RUNNING HANDLER \[|PLAY )", out, flags=re.M)
    return "".join(p for p in parts if p.startswith(f"TASK [{task}]"))


def load_report(directory: Path) -> dict:
    data = json.loads((directory / "report.json").read_text())
    assert set(data) == {"schema", "hosts"} and data["schema"] == 1
    for row in data["hosts"]:
        assert list(row) == ROW_KEYS and row["status"] in STATUSES, row
    return data


def image_build_settings(mirror: Mirror, gw: str) -> dict:
    """The fleet's settings: image builds (no GPU here), no driver, NVIDIA's toolkit from the mirror fixture."""
    return {
        "gpu_install_image_build": True,
        "nvidia_driver_source": "none",
        "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
    }


def write_inventory(path: Path, addresses: dict[str, str], ssh_key) -> None:
    """A JSON inventory of the hosts (name -> address), reached as root over SSH with the test's key."""
    ssh_args = " ".join(o for o in ssh_key.options() if o not in ("-i", str(ssh_key.private))) + " -o ConnectTimeout=5"
    inventory = {
        "all": {
            "hosts": {name: {"ansible_host": address} for name, address in addresses.items()},
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(ssh_key.private),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        }
    }
    path.write_text(json.dumps(inventory))


def test_fleet_run_converges_the_healthy_hosts_reports_the_broken_and_unreachable_ones(
    host_factory, ssh_key, project_wheel, tmp_path
):
    hosts = start_fleet(host_factory)
    names = [f"{h.suite}-{i}" for i, h in enumerate(hosts, 1)]
    broken_name, broken = names[-1], hosts[-1]
    healthy = dict(zip(names[:-1], hosts[:-1], strict=True))
    for host in hosts:
        host.authorize_ssh_key(ssh_key.public)
    # The broken host runs Docker already; its daemon.json is then broken by hand.
    install_docker_io(broken)
    broken.put("/etc/docker/daemon.json", BROKEN)

    gw = gateway(hosts[0])
    collections = collection_from_wheel(project_wheel, tmp_path / "wheel")
    addresses = {**{name: host.ip for name, host in zip(names, hosts, strict=True)}, "gone-1": nobody_answers(gw)}
    write_inventory(tmp_path / "inventory.json", addresses, ssh_key)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = image_build_settings(mirror, gw)
        extra = tmp_path / "settings.json"
        extra.write_text(json.dumps({**settings, "gpu_install_report_dir": str(tmp_path / "report-1")}))

        # First run: one batch (the default), every host at once.
        rc, out = playbook(collections, tmp_path / "inventory.json", extra, tmp_path)
        assert rc == 2, out  # failed hosts
        first = load_report(tmp_path / "report-1")
        rows = {row["host"]: row for row in first["hosts"]}
        assert sorted(rows) == sorted([*names, "gone-1"])
        assert [row["status"] for row in first["hosts"]][:2] == ["failed", "unreachable"]  # failures first
        counted = recap(out)
        for name, host in healthy.items():
            row = rows[name]
            assert (row["status"], row["exit_code"], row["reason"]) == ("changed", 0, None), row
            assert row["changed"] == counted[name]["changed"] > 0, (name, out)
            assert row["os"]["id"] == "debian"
            assert row["os"]["version"] == {"bookworm": "12", "trixie": "13"}[host.suite]
            assert row["docker"]["flavour"] == "docker.io" and row["docker"]["version"]
            assert row["engines"] == [{"name": "docker", "version": row["docker"]["version"]}], row["engines"]
            assert row["toolkit_version"] == TOOLKIT_VERSIONS[-1].split("-")[0]
            assert (row["driver_version"], row["gpus"], row["verify"], row["reboot_required"]) == (
                None, [], "skipped", False,
            )  # fmt: skip
        assert info(healthy[names[0]])["DefaultRuntime"] == "nvidia"

        row = rows[broken_name]
        assert (row["status"], row["exit_code"]) == ("failed", 4), row
        assert "daemon.json" in row["reason"]
        assert row["changed"] == counted[broken_name]["changed"]
        assert broken.get("/etc/docker/daemon.json") == BROKEN

        # The healthy hosts keep a receipt of their converged state (the next run's fast path, checked over
        # SSH by the converged module); the failed one has none.
        for host in healthy.values():
            assert json.loads(host.get("/var/lib/gpu-install/converged.json"))["schema"] == 1
        assert broken.run(["test", "-e", "/var/lib/gpu-install/converged.json"], check=False).returncode == 1

        gone = rows["gone-1"]
        assert (gone["status"], gone["exit_code"]) == ("unreachable", 10), gone
        assert gone["reason"].startswith("the host did not answer: ") and gone["verify"] is None

        page = (tmp_path / "report-1" / "report.html").read_text()
        for name in rows:
            assert f'class="host">{name}</td>' in page

        # The CLI on the broken host says the same sentence with the same code, and leaves the file as it was.
        broken.run(["mkdir", "-p", "/etc/gpu-install"])
        broken.put("/etc/gpu-install/config.yml", json.dumps(settings))
        proc = broken.run(["gpu-install", "apply", "--yes", "--json"], check=False)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["error"]["reason"] == row["reason"]
        assert broken.get("/etc/docker/daemon.json") == BROKEN

        # Second run: rolling batches (2 hosts, then the rest), the report directory from the environment.
        extra.write_text(json.dumps({**settings, "gpu_install_serial": [2, "100%"]}))
        rc, out = playbook(
            collections, tmp_path / "inventory.json", extra, tmp_path, env={"GPU_INSTALL_REPORT_DIR": "report-2"}
        )
        assert rc == 2, out
        assert out.count("PLAY [Make hosts run GPU containers]") == 2, out
        second = load_report(tmp_path / "report-2")
        rows = {row["host"]: row for row in second["hosts"]}
        for name in healthy:
            assert (rows[name]["status"], rows[name]["changed"]) == ("ok", 0), (rows[name], out)
            # Converged hosts skip the roles (the fast path), and the report still has their facts.
            assert f"skipping: [{name}]" in task_output(out, "Converge the host"), out
            assert rows[name]["docker"]["flavour"] == "docker.io" and rows[name]["toolkit_version"]
        assert (rows[broken_name]["status"], rows[broken_name]["exit_code"]) == ("failed", 4)
        assert rows["gone-1"]["status"] == "unreachable"
        assert broken.get("/etc/docker/daemon.json") == BROKEN
        assert not (tmp_path / "gpu-install-report").exists()


def test_fleet_remove_playbook_takes_back_two_applied_hosts_and_reports_them_removed(
    host_factory, ssh_key, project_wheel, tmp_path
):
    """gpu_install.nvidia.remove over SSH after the site playbook: both hosts are as they were before apply
    (tests/fixtures/snapshot.py), and the report gives each the status removed with exit code 0."""
    from test_remove import LAYER

    from fixtures.snapshot import diff, render, snapshot

    def docker_host(suite: str) -> Host:
        return host_factory(suite, image=ensure_layer(suite, "docker-io", LAYER))

    with ThreadPoolExecutor(max_workers=2) as pool:
        hosts = dict(zip(("bookworm-1", "trixie-2"), pool.map(docker_host, ("bookworm", "trixie")), strict=True))
    for host in hosts.values():
        host.authorize_ssh_key(ssh_key.public)
    before = {name: snapshot(host) for name, host in hosts.items()}

    gw = gateway(hosts["bookworm-1"])
    collections = collection_from_wheel(project_wheel, tmp_path / "wheel")
    write_inventory(tmp_path / "inventory.json", {name: host.ip for name, host in hosts.items()}, ssh_key)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = image_build_settings(mirror, gw)
        extra = tmp_path / "settings.json"
        extra.write_text(json.dumps({**settings, "gpu_install_report_dir": str(tmp_path / "report-apply")}))
        rc, out = playbook(collections, tmp_path / "inventory.json", extra, tmp_path)
        assert rc == 0, out
        assert {row["status"] for row in load_report(tmp_path / "report-apply")["hosts"]} == {"changed"}

        extra.write_text(json.dumps({**settings, "gpu_install_report_dir": str(tmp_path / "report-remove")}))
        rc, out = playbook(collections, tmp_path / "inventory.json", extra, tmp_path, name="gpu_install.nvidia.remove")
        assert rc == 0, out
        rows = {row["host"]: row for row in load_report(tmp_path / "report-remove")["hosts"]}
        assert sorted(rows) == sorted(hosts)
        counted = recap(out)
        for name, row in rows.items():
            assert (row["status"], row["exit_code"]) == ("removed", 0), row
            assert row["changed"] == counted[name]["changed"] > 0, (name, out)
            assert row["verify"] is None, row
        page = (tmp_path / "report-remove" / "report.html").read_text()
        for name in hosts:
            assert f'class="host">{name}</td>' in page
        assert page.count(">removed</span>") >= len(hosts), page

        for name, host in hosts.items():
            d = diff(before[name], snapshot(host))
            assert not d, f"{name} is not as it was before apply:\n" + render(d)
