"""A package manager lock held by a real process: wait, then exit class 6 naming it; nothing half-done."""

from __future__ import annotations

import time

from hosts import Host
from test_docker_role import converge, failure, prepare

HOLDER = (
    "import fcntl, os, time\n"
    "fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR | os.O_CREAT)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX)  # the same kind of lock apt and dpkg take\n"
    "open('/run/holder.pid', 'w').write(str(os.getpid()))\n"
    "time.sleep(300)\n"
)


def hold_dpkg_lock(host: Host) -> int:
    host.put("/root/holder.py", HOLDER.encode())
    host.run(["sh", "-c", "setsid python3 /root/holder.py >/dev/null 2>&1 < /dev/null &"])
    for _ in range(50):
        proc = host.run(["cat", "/run/holder.pid"], check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return int(proc.stdout.strip())
        time.sleep(0.1)
    raise AssertionError("the lock holder did not start")


def test_held_dpkg_lock_is_waited_for_then_exit_6_names_the_holder(bookworm_host):
    host = bookworm_host
    prepare(host, None)
    status_before = host.get("/var/lib/dpkg/status")
    pid = hold_dpkg_lock(host)
    rc, _recap, out = converge(host, {"gpu_install_lock_timeout": 3})
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 6, error
    assert f"PID {pid}" in error["reason"]
    assert "holder.py" in error["reason"]
    assert host.get("/var/lib/dpkg/status") == status_before
    assert host.run(["dpkg-query", "-W", "docker.io"], check=False).returncode != 0


def test_a_lock_released_while_waiting_lets_the_install_go_on(bookworm_host):
    host = bookworm_host
    prepare(host, None)
    pid = hold_dpkg_lock(host)
    host.run(["sh", "-c", f"(sleep 3; kill {pid}) >/dev/null 2>&1 < /dev/null &"])
    rc, _recap, out = converge(host, {"gpu_install_lock_timeout": 120})
    assert rc == 0, out
    assert host.run(["dpkg-query", "-W", "docker.io"]).returncode == 0
