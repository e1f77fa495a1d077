"""Drain and undrain around driver changes, and switching the driver's branch, on real systemd Debian hosts.

The driver packages are the signed mirror's stand-ins (a FIXTURE standing in for NVIDIA's CUDA repository,
which cannot be reached from here): branches 550 and 570 shaped as NVIDIA publishes them (nvidia-open-B over
nvidia-driver and libnvidia-ml1 B.x). apt, dpkg, DKMS and the kernel headers are Debian's own. The drain and
undrain commands are shell text as an operator writes them; they record, when they run, which driver dpkg
has installed at that moment, so the order of drain, driver change and undrain is read from the host itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import roles
from hosts import Host, SshKey
from roles import failure
from test_driver_role import serve_runfile
from test_repositories import gateway, run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import DRIVER_BRANCH_VERSIONS, Mirror  # noqa: E402

HOLD = "/etc/apt/preferences.d/gpu-install-nvidia-driver.pref"
MARKER = "/var/lib/gpu-install/nvidia-driver-drained"
LOG = "/root/drain.log"
V550, V570 = DRIVER_BRANCH_VERSIONS["550"], DRIVER_BRANCH_VERSIONS["570"]


def recorder(word: str, log: str = LOG) -> str:
    """A drain/undrain command: appends WORD, the host's name and the installed libnvidia-ml1 (or none)."""
    return (
        f"echo \"{word} $GPU_INSTALL_HOST $(dpkg-query -W -f '${{Version}}' libnvidia-ml1 2>/dev/null || echo none)\""
        f" >> {log}"
    )


def installed(host: Host) -> dict[str, str]:
    """dpkg's packages, name -> "status version" (ii: installed; rc: removed, configuration kept; packages
    dpkg knows as not installed are left out)."""
    out = host.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Package}|${Version}\\n"]).stdout
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {name: f"{abbrev.strip()} {version}" for abbrev, name, version in rows if abbrev[1:2] != "n"}


def log_lines(host: Host) -> list[str]:
    proc = host.run(["cat", LOG], check=False)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


@pytest.fixture
def cuda_host(bookworm_host: Host, tmp_path: Path) -> Iterator[tuple[Host, Mirror]]:
    """A bookworm host whose apt has the fixture's CUDA repository (driver branches 550 and 570) configured."""
    gw = gateway(bookworm_host)
    mirror = Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw))
    mirror.add_driver_branches(("550", "570"))
    with mirror:
        rc, result = run_module(bookworm_host, {"use": ["cuda"], "overrides": mirror.repositories(gw, ids=("cuda",))})
        assert rc == 0, result
        yield bookworm_host, mirror


def settings(branch: str, **extra: Any) -> dict[str, Any]:
    return {
        "gpu_install_image_build": True,  # the hosts have no GPU: an image build is what they can be
        "nvidia_driver_source": "auto",
        "nvidia_driver_branch": branch,
        **extra,
    }


def test_drain_and_undrain_run_around_a_driver_change_and_not_on_a_converged_run(cuda_host):
    host, _mirror = cuda_host
    wanted = settings("550", gpu_install_drain_command=recorder("drain"),
                      gpu_install_undrain_command=recorder("undrain"))  # fmt: skip

    rc, _recap, out = roles.converge(host, "nvidia_driver", wanted, check=True)
    assert rc == 0, out
    assert "would run gpu_install_drain_command on localhost before:" in out, out
    assert "install nvidia-open-550" in out and "would run gpu_install_undrain_command" in out, out
    assert log_lines(host) == [], "a plan ran the drain command"

    rc, recap, out = roles.converge(host, "nvidia_driver", wanted)
    assert rc == 0, out
    # Drained while no driver was installed, undrained once 550 was in place; GPU_INSTALL_HOST named the host.
    assert log_lines(host) == ["drain localhost none", f"undrain localhost {V550}"]
    assert installed(host)["nvidia-open-550"] == f"ii {V550}"
    assert host.run(["test", "-e", MARKER], check=False).returncode != 0, "the node was left marked drained"

    status = host.get("/var/lib/dpkg/status")
    rc, recap, out = roles.converge(host, "nvidia_driver", wanted, check=True)
    assert rc == 0 and recap["changed"] == 0, out
    rc, recap, out = roles.converge(host, "nvidia_driver", wanted)
    assert rc == 0 and recap["changed"] == 0, out
    assert log_lines(host) == ["drain localhost none", f"undrain localhost {V550}"], "a converged host was drained"
    assert host.get("/var/lib/dpkg/status") == status


def test_a_failing_drain_stops_the_host_before_any_package_change(bookworm_host):
    host = bookworm_host
    before = host.get("/var/lib/dpkg/status")
    wanted = settings(
        "550",
        gpu_install_drain_command="echo 'node gpu-7 still runs job 4711' >&2; exit 3",
        gpu_install_undrain_command=recorder("undrain"),
    )
    rc, recap, out = roles.converge(host, "nvidia_driver", wanted)
    assert rc != 0 and recap["failed"] == 1, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 6, error
    assert "gpu_install_drain_command failed on localhost (exit 3: node gpu-7 still runs job 4711)" in error["reason"]
    assert "driver was not changed" in error["reason"]
    # The plan had packages to install (headers, DKMS, the driver): none of them went in.
    assert host.get("/var/lib/dpkg/status") == before
    for path in (HOLD, MARKER, LOG):
        assert host.run(["test", "-e", path], check=False).returncode != 0, f"{path} exists"


def test_switching_branch_550_to_570_purges_the_old_and_installs_the_new_in_one_run(cuda_host):
    host, _mirror = cuda_host
    rc, _recap, out = roles.converge(host, "nvidia_driver", settings("550"))
    assert rc == 0, out
    assert installed(host)["libnvidia-ml1"] == f"ii {V550}"
    assert "Pin: version 550.*" in host.get(HOLD).decode()

    switch = settings("570", gpu_install_drain_command=recorder("drain"),
                      gpu_install_undrain_command=recorder("undrain"))  # fmt: skip
    status = host.get("/var/lib/dpkg/status")
    rc, _recap, plan = roles.converge(host, "nvidia_driver", switch, check=True)
    assert rc == 0, plan
    for line in (f"purge libnvidia-ml1 {V550}", f"purge nvidia-driver {V550}", f"purge nvidia-open-550 {V550}",
                 "install nvidia-open-570"):  # fmt: skip
        assert line in plan, (line, plan)
    assert host.get("/var/lib/dpkg/status") == status and log_lines(host) == []

    rc, recap, out = roles.converge(host, "nvidia_driver", switch)
    assert rc == 0, out
    now = installed(host)
    assert now["nvidia-open-570"] == f"ii {V570}"
    assert now["nvidia-driver"] == f"ii {V570}" and now["libnvidia-ml1"] == f"ii {V570}"
    assert "nvidia-open-550" not in now, now.get("nvidia-open-550")  # purged: not even its configuration is left
    assert "Pin: version 570.*" in host.get(HOLD).decode()
    assert log_lines(host) == [f"drain localhost {V550}", f"undrain localhost {V570}"]

    rc, recap, out = roles.converge(host, "nvidia_driver", switch)
    assert rc == 0 and recap["changed"] == 0, out


# FIXTURE: a stand-in for NVIDIA's runfile whose installer, like NVIDIA's, leaves /usr/bin/nvidia-uninstall
# behind; the stand-in uninstaller records its call and removes itself, as NVIDIA's removes the driver.
RUNFILE_LOG = "/var/log/gpu-install-test-stand-in-runfile.log"
RUNFILE_WITH_UNINSTALLER = f"""#!/bin/sh
# gpu-install test fixture: stands in for nvidia-installer; installs a stand-in nvidia-uninstall.
echo "install $*" >> {RUNFILE_LOG}
printf '%s\\n' '#!/bin/sh' '# gpu-install test fixture: stands in for NVIDIA nvidia-uninstall.' \\
    'echo "uninstall $*" >> {RUNFILE_LOG}' 'rm -f /usr/bin/nvidia-uninstall' > /usr/bin/nvidia-uninstall
chmod 755 /usr/bin/nvidia-uninstall
"""


def task_output(out: str, name: str) -> str:
    """What ansible-playbook printed for the task whose name starts with name."""
    chunks = [c for c in out.split("TASK [") if c.split(" : ", 1)[-1].startswith(name)]
    assert len(chunks) == 1, (name, out)
    return chunks[0]


def test_switching_from_a_runfile_to_packages_runs_nvidias_uninstaller_first(cuda_host, tmp_path):
    host, _mirror = cuda_host
    with serve_runfile(tmp_path / "runfile", RUNFILE_WITH_UNINSTALLER) as (url, sha256):
        runfile = {"gpu_install_image_build": True, "nvidia_driver_source": "runfile",
                   "nvidia_driver_runfile_url": url, "nvidia_driver_runfile_sha256": sha256}  # fmt: skip
        rc, _recap, out = roles.converge(host, "nvidia_driver", runfile)
    assert rc == 0, out
    assert host.run(["test", "-x", "/usr/bin/nvidia-uninstall"], check=False).returncode == 0
    assert host.run(["test", "-e", "/var/lib/gpu-install/nvidia-driver-runfile.sha256"], check=False).returncode == 0

    rc, _recap, plan = roles.converge(host, "nvidia_driver", settings("550"), check=True)
    assert rc == 0, plan
    assert "changed:" in task_output(plan, "Remove the runfile's driver with NVIDIA's uninstaller"), plan
    assert len(host.get(RUNFILE_LOG).decode().splitlines()) == 1, "a plan ran the uninstaller"

    rc, _recap, out = roles.converge(host, "nvidia_driver", settings("550"))
    assert rc == 0, out
    calls = host.get(RUNFILE_LOG).decode().splitlines()
    assert calls[0].startswith("install --silent") and calls[1:] == ["uninstall --silent"], calls
    assert host.run(["test", "-e", "/usr/bin/nvidia-uninstall"], check=False).returncode != 0
    assert host.run(["test", "-e", "/var/lib/gpu-install/nvidia-driver-runfile.sha256"], check=False).returncode != 0
    assert installed(host)["nvidia-open-550"] == f"ii {V550}"

    rc, recap, out = roles.converge(host, "nvidia_driver", settings("550"))
    assert rc == 0 and recap["changed"] == 0, out


# -- delegated to the controller, over SSH, as a fleet runs ----------------------------------------------


def test_a_delegated_drain_runs_on_the_controller_with_the_hosts_inventory_name(
    cuda_host, ssh_key: SshKey, project_wheel: Path, tmp_path: Path
):
    host, _mirror = cuda_host
    host.authorize_ssh_key(ssh_key.public)
    with zipfile.ZipFile(project_wheel) as wheel:
        wheel.extractall(tmp_path / "wheel")
    collections = tmp_path / "wheel" / "gpu_install" / "_collection"
    assert (collections / "ansible_collections" / "gpu_install" / "nvidia" / "roles" / "nvidia_driver").is_dir()
    controller_log = tmp_path / "controller-drain.log"

    def record(word: str) -> str:
        return f'echo "{word} $GPU_INSTALL_HOST $(hostname)" >> {controller_log}'

    (tmp_path / "inventory.json").write_text(json.dumps({
        "gpu_nodes": {"hosts": {"gpu-node-7": {
            "ansible_host": host.ip,
            "ansible_user": "root",
            "ansible_python_interpreter": "/opt/gpu-install/venv/bin/python",
            "ansible_ssh_private_key_file": str(ssh_key.private),
            "ansible_ssh_common_args": " ".join(ssh_key.options()[2:]),
        }}},
    }))  # fmt: skip
    (tmp_path / "site.yml").write_text(
        "---\n- name: nvidia_driver role\n  hosts: gpu_nodes\n  gather_facts: false\n"
        "  roles:\n    - role: gpu_install.nvidia.nvidia_driver\n"
    )
    wanted = settings(
        "550",
        gpu_install_drain_command=record("drain"),
        gpu_install_undrain_command=record("undrain"),
        gpu_install_drain_delegate_to="localhost",
    )
    (tmp_path / "vars.json").write_text(json.dumps(wanted))
    # SSH's control sockets need a short path (a Unix socket's path is at most 107 bytes): not under tmp_path.
    with tempfile.TemporaryDirectory(prefix="cp-", dir="/tmp") as control_dir:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.json"),
             "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "site.yml")],
            capture_output=True, text=True, check=False, timeout=1500,
            env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1",
                 "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_HOST_KEY_CHECKING": "False",
                 "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    here = socket.gethostname()
    assert controller_log.read_text().splitlines() == [f"drain gpu-node-7 {here}", f"undrain gpu-node-7 {here}"]
    assert installed(host)["nvidia-open-550"] == f"ii {V550}"
    assert host.run(["hostname"]).stdout.strip() != here, "the host and the controller cannot be told apart"
