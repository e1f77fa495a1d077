"""The nvidia_persistenced role on real systemd Debian hosts.

nvidia-persistenced comes from Debian's archive (bookworm's contrib, enabled in the test hosts) through the role
itself, or through apt-get where a test needs it installed beforehand. What these hosts cannot have is stood in
for by FIXTURES, each written by the test that uses it and named below:

* UBUNTU_UNIT: Ubuntu's nvidia-compute-utils unit, verbatim (static, ``--no-persistence-mode``), put in place of
  Debian's unit;
* STAND_IN_*: scripts at /usr/local/nvidia/bin/nvidia-persistenced standing in for the binary of a driver tree
  that ships no unit (a runfile install, a driver in /usr/local/nvidia);
* a loaded NVIDIA driver: no NVIDIA kernel module can be loaded here, so ansible-playbook runs in a mount
  namespace of its own where an empty /sys/module/nvidia appears (the driver's own sign that it is loaded);
  systemd, outside that namespace, starts the unit for real;
* a host without systemd as PID 1: ansible-playbook runs in a mount namespace where /run/systemd is empty, as in
  a chroot or a container.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import roles
from hosts import Host
from roles import failure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.units import UBUNTU_UNIT  # noqa: E402

DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/gpu-install.conf"
WRITTEN_UNIT = "/etc/systemd/system/nvidia-persistenced.service"
DEBIAN_UNIT = "/lib/systemd/system/nvidia-persistenced.service"
TREE_BINARY = "/usr/local/nvidia/bin/nvidia-persistenced"
NOT_STARTED = "it is not started now because no NVIDIA driver is loaded"

# FIXTURE: stands in for a driver tree's nvidia-persistenced that is never started.
STAND_IN_IDLE = """#!/bin/sh
# Test fixture standing in for a driver tree's nvidia-persistenced; no test starts it.
exit 1
"""
# FIXTURE: stands in for nvidia-persistenced where a driver is loaded: it daemonizes as the real one does
# (Type=forking, a pid file in /run/nvidia-persistenced) and records its arguments.
STAND_IN_DAEMON = """#!/bin/sh
# Test fixture standing in for nvidia-persistenced: daemonize, write the pid file, record the arguments.
mkdir -p /run/nvidia-persistenced
echo "$@" > /run/nvidia-persistenced/gpu-install-test-args
sleep infinity </dev/null >/dev/null 2>&1 &
echo $! > /run/nvidia-persistenced/nvidia-persistenced.pid
"""
# FIXTURE: stands in for an nvidia-persistenced that cannot start although the driver is loaded.
STAND_IN_FAILING = """#!/bin/sh
# Test fixture standing in for an nvidia-persistenced that fails to start, with the real one's message.
echo "nvidia-persistenced failed to initialize. Check syslog for more details." >&2
exit 1
"""
LOADED_DRIVER = "mount -t tmpfs gpuit-fixture /sys/module && mkdir /sys/module/nvidia"
NO_SYSTEMD = "mount -t tmpfs gpuit-fixture /run/systemd"


class Namespaced:
    """The host, with ansible-playbook run in a mount namespace of its own prepared by ``setup`` (a fixture)."""

    def __init__(self, host: Host, setup: str) -> None:
        self._host = host
        self._setup = setup

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        if argv and argv[0].endswith("/ansible-playbook"):
            argv = ["unshare", "--mount", "sh", "-c", f'{self._setup} && exec "$@"', "sh", *argv]
        return self._host.run(argv, **kwargs)


def converge(host: Host, extra: dict[str, Any], check: bool = False, setup: str = "") -> tuple[int, dict, str]:
    target: Any = Namespaced(host, setup) if setup else host
    return roles.converge(target, "nvidia_persistenced", extra, check)


def systemctl(host: Host, *args: str) -> str:
    return host.run(["systemctl", *args], check=False).stdout.strip()


def exists(host: Host, path: str) -> bool:
    return host.run(["test", "-e", path], check=False).returncode == 0


def installed(host: Host, package: str) -> bool:
    status = host.run(["dpkg-query", "-W", "-f", "${Status}", package], check=False).stdout
    return status == "install ok installed"


def apt_install(host: Host, *packages: str) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    host.run(["apt-get", "update", "-q"], env=env)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def unit_files(host: Host) -> str:
    return host.run(["sh", "-c", "ls -la /etc/systemd/system /etc/systemd/system/*.wants"]).stdout


# -- (1) Debian's package -----------------------------------------------------------------------------------------
def test_debian_package_is_installed_and_enabled_and_not_started_without_a_driver(debian_host):
    host = debian_host
    rc, recap, out = converge(host, {"nvidia_driver_source": "distro"})
    assert rc == 0 and recap["changed"] >= 1, out
    assert installed(host, "nvidia-persistenced")
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "enabled"
    fragment = systemctl(host, "show", "-p", "FragmentPath", "--value", "nvidia-persistenced")
    assert fragment in (DEBIAN_UNIT, "/usr" + DEBIAN_UNIT)  # the package's own unit
    assert not exists(host, DROPIN) and not exists(host, WRITTEN_UNIT)  # Debian's unit needs nothing
    assert systemctl(host, "is-active", "nvidia-persistenced") != "active"
    assert NOT_STARTED in out, out

    rc, recap, out = converge(host, {"nvidia_driver_source": "distro"})
    assert rc == 0 and recap["changed"] == 0, out
    assert NOT_STARTED in out


# -- (2) a unit that passes --no-persistence-mode ----------------------------------------------------------------
def test_ubuntu_unit_gets_a_drop_in_that_runs_it_without_no_persistence_mode(bookworm_host):
    host = bookworm_host
    apt_install(host, "nvidia-persistenced")  # the binary, from Debian's package
    host.run(["systemctl", "disable", "nvidia-persistenced"])
    host.put(DEBIAN_UNIT, UBUNTU_UNIT)  # FIXTURE: Ubuntu's unit in place of Debian's
    host.run(["systemctl", "daemon-reload"])
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "static"

    rc, _recap, out = converge(host, {"nvidia_driver_source": "distro"}, check=True)
    assert rc == 0, out
    assert not exists(host, DROPIN)
    assert "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose" in out  # the diff

    rc, recap, out = converge(host, {"nvidia_driver_source": "distro"})
    assert rc == 0 and recap["changed"] >= 2, out  # the drop-in, the enable
    cat = systemctl(host, "cat", "nvidia-persistenced")
    assert f"# {DROPIN}\n" in cat, cat
    assert "ExecStart=\nExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose\n" in cat
    exec_start = systemctl(host, "show", "-p", "ExecStart", "--value", "nvidia-persistenced")
    assert "argv[]=/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose ;" in exec_start, exec_start
    assert "--no-persistence-mode" not in exec_start
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "enabled"  # the drop-in's [Install]
    assert NOT_STARTED in out

    dropin = host.get(DROPIN)
    rc, recap, out = converge(host, {"nvidia_driver_source": "distro"})
    assert rc == 0 and recap["changed"] == 0, out
    assert host.get(DROPIN) == dropin


# -- (3) no unit shipped --------------------------------------------------------------------------------------------
def test_a_driver_tree_without_a_unit_gets_one_written_and_enabled(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_IDLE, mode=0o755)
    rc, recap, out = converge(host, {"nvidia_driver_source": "none"})
    assert rc == 0 and recap["changed"] >= 2, out  # the unit, the enable
    unit = host.get(WRITTEN_UNIT).decode()
    assert unit.startswith("# Written by gpu-install")
    assert f"ExecStart={TREE_BINARY} --verbose\n" in unit
    assert systemctl(host, "show", "-p", "FragmentPath", "--value", "nvidia-persistenced") == WRITTEN_UNIT
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "enabled"
    assert systemctl(host, "is-active", "nvidia-persistenced") != "active"
    assert not installed(host, "nvidia-persistenced")
    assert NOT_STARTED in out

    rc, recap, out = converge(host, {"nvidia_driver_source": "none"})
    assert rc == 0 and recap["changed"] == 0, out
    assert host.get(WRITTEN_UNIT).decode() == unit


# -- (4) check mode -----------------------------------------------------------------------------------------------
def test_check_mode_changes_nothing(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_IDLE, mode=0o755)  # the unit it would write shows in the diff
    before = unit_files(host)
    rc, _recap, out = converge(host, {"nvidia_driver_source": "none"}, check=True)
    assert rc == 0, out
    assert f"ExecStart={TREE_BINARY} --verbose" in out
    assert not exists(host, WRITTEN_UNIT)
    assert unit_files(host) == before
    host.run(["rm", TREE_BINARY])

    dpkg = host.get("/var/lib/dpkg/status")
    rc, _recap, out = converge(host, {"nvidia_driver_source": "distro"}, check=True)
    assert rc == 0, out
    assert re.search(r"^install nvidia-persistenced \d", out, re.M), out  # the plan names the package and version
    assert host.get("/var/lib/dpkg/status") == dpkg
    assert not installed(host, "nvidia-persistenced")
    assert unit_files(host) == before


# -- refusals and what is left alone --------------------------------------------------------------------------------
def test_source_none_without_the_binary_is_refused_naming_what_to_do_except_in_an_image_build(bookworm_host):
    host = bookworm_host
    before = unit_files(host)
    rc, recap, out = converge(host, {"nvidia_driver_source": "none", "gpu_install_image_build": True})
    assert rc == 0 and recap["changed"] == 0, out
    assert "there is nothing to enable in this image" in out

    rc, _recap, out = converge(host, {"nvidia_driver_source": "none"})
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 3
    assert "nvidia_driver_source: none" in error["reason"] and "nvidia_persistenced_enabled: false" in error["reason"]
    assert unit_files(host) == before and not installed(host, "nvidia-persistenced")


def test_disabled_setting_leaves_the_service_alone(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_IDLE, mode=0o755)
    before = unit_files(host)
    rc, recap, out = converge(host, {"nvidia_persistenced_enabled": False, "nvidia_driver_source": "distro"})
    assert rc == 0 and recap["changed"] == 0, out
    assert "nvidia-persistenced is left as it is" in out
    assert unit_files(host) == before and not installed(host, "nvidia-persistenced")


# -- where systemd does not run ---------------------------------------------------------------------------------------
def test_without_systemd_the_service_step_is_skipped_and_said(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_IDLE, mode=0o755)
    rc, _recap, out = converge(host, {"nvidia_driver_source": "none"}, setup=NO_SYSTEMD)
    assert rc == 0, out
    assert "persistence daemon service step is skipped because systemd is not running" in out
    assert exists(host, WRITTEN_UNIT)  # the file is written all the same
    host.run(["systemctl", "daemon-reload"])
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "disabled"


# -- where a driver is loaded (FIXTURE: LOADED_DRIVER) ----------------------------------------------------------------
def test_image_build_enables_only_and_a_loaded_driver_starts_it(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_DAEMON, mode=0o755)
    extra = {"nvidia_driver_source": "none", "gpu_install_image_build": True}
    rc, _recap, out = converge(host, extra, setup=LOADED_DRIVER)
    assert rc == 0, out
    assert "it is not started now because this is an image build" in out
    assert systemctl(host, "is-enabled", "nvidia-persistenced") == "enabled"
    assert systemctl(host, "is-active", "nvidia-persistenced") != "active"

    rc, recap, out = converge(host, {"nvidia_driver_source": "none"}, setup=LOADED_DRIVER)
    assert rc == 0 and recap["changed"] == 1, out  # started
    assert systemctl(host, "is-active", "nvidia-persistenced") == "active"
    assert host.get("/run/nvidia-persistenced/gpu-install-test-args").decode().strip() == "--verbose"
    pid = systemctl(host, "show", "-p", "MainPID", "--value", "nvidia-persistenced")

    rc, recap, out = converge(host, {"nvidia_driver_source": "none"}, setup=LOADED_DRIVER)
    assert rc == 0 and recap["changed"] == 0, out
    assert systemctl(host, "show", "-p", "MainPID", "--value", "nvidia-persistenced") == pid


def test_a_daemon_that_fails_to_start_with_a_loaded_driver_fails_with_its_journal_line(bookworm_host):
    host = bookworm_host
    host.put(TREE_BINARY, STAND_IN_FAILING, mode=0o755)
    rc, _recap, out = converge(host, {"nvidia_driver_source": "none"}, setup=LOADED_DRIVER)
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 1
    assert "nvidia-persistenced failed to initialize. Check syslog for more details." in error["reason"], error
    assert "journalctl -u nvidia-persistenced" in error["reason"]
