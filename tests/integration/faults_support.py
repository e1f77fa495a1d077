"""Helpers of test_faults.py: a prepared host, an apply run in the background, a killer inside the host, the table.

The killer (KILLER, run by python3 inside the host) waits for its kill point, then freezes (SIGSTOP) and kills
(SIGKILL) the whole process tree of the running `gpu-install apply`: the CLI, ansible-playbook, its workers,
the module, apt-get and dpkg. Kill points are chosen by a seeded random generator (SEED) and reported:
  dpkg:N          the N-th dpkg status change written to /var/log/dpkg.log after the apply started
  task:TEXT+MS    MS milliseconds after the progress line of the task whose name contains TEXT
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from hosts import CACHE, Host

SEED = 20261125
USER_DAEMON_JSON = {"log-level": "warn", "labels": ["keep=me"], "max-concurrent-downloads": 4}
TOOLKIT = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}

KILLER = r"""
import os, signal, sys, time
point, pidfile, errfile = sys.argv[1], sys.argv[2], sys.argv[3]
def wait_pid():
    while True:
        try:
            return int(open(pidfile).read())
        except (OSError, ValueError):
            time.sleep(0.005)
def tree(root):
    kids = {}
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                ppid = int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out
root = wait_pid()
seen = ''
if point.startswith('dpkg:'):
    n = int(point[5:])
    start = os.path.getsize('/var/log/dpkg.log') if os.path.exists('/var/log/dpkg.log') else 0
    while True:
        try:
            with open('/var/log/dpkg.log') as fh:
                fh.seek(start)
                lines = [ln for ln in fh.read().splitlines() if ' status ' in ln]
        except OSError:
            lines = []
        if len(lines) >= n:
            seen = lines[n - 1]
            break
        time.sleep(0.001)
else:
    text, ms = point[5:].rsplit('+', 1)
    while True:
        try:
            if text in open(errfile).read():
                break
        except OSError:
            pass
        time.sleep(0.002)
    time.sleep(int(ms) / 1000)
victims = []
for _ in range(3):  # freeze first, so that nothing forks past the kill
    for p in tree(root):
        if p not in victims:
            victims.append(p)
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
for p in victims:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
print(f'killed {len(victims)} processes; {seen}')
"""

CHECK = r"""
import glob, json, os, sys
user = json.loads(sys.argv[1])
out = {"temps": sorted(glob.glob('/etc/docker/.*.gpu-install.tmp') + glob.glob('/etc/docker/*.gpu-install.rollback'))}
try:
    doc = json.load(open('/etc/docker/daemon.json'))
    out["valid"] = isinstance(doc, dict)
    out["user_keys"] = all(doc.get(k) == v for k, v in user.items())
    out["nvidia"] = doc.get("default-runtime") == "nvidia" and "nvidia" in doc.get("runtimes", {})
except (OSError, ValueError) as exc:
    out.update(valid=False, user_keys=False, nvidia=False, why=str(exc))
print(json.dumps(out))
"""


def prepare_host(host: Host, settings: dict) -> None:
    """docker.io installed and running with the user's daemon.json; the settings in /etc/gpu-install."""
    host.run(["apt-get", "update", "-q"], env=APT_ENV)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"], env=APT_ENV)
    text = json.dumps(USER_DAEMON_JSON, indent=2) + "\n"
    host.put("/root/user-daemon.json", text)
    host.put("/etc/docker/daemon.json", text)
    host.run(["systemctl", "restart", "docker"])
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    host.put("/etc/gpu-install/config.yml", json.dumps(settings))
    host.put("/root/killer.py", KILLER)
    host.put("/root/check.py", CHECK)


def reset(host: Host) -> None:
    """Back to the state before the first apply: toolkit purged, the user's own daemon.json, dockerd running it."""
    script = (
        "dpkg --configure -a >/dev/null 2>&1; "
        f"dpkg --purge --force-remove-reinstreq --force-depends {' '.join(TOOLKIT)} >/dev/null 2>&1; "
        'test -z "$(dpkg --audit)"; '
        "rm -f /etc/docker/.*.gpu-install.tmp /etc/docker/*.gpu-install.bak; "
        "rm -f /var/lib/gpu-install/docker-daemon-json.json; "
        "cp /root/user-daemon.json /etc/docker/daemon.json && systemctl reset-failed docker; systemctl restart docker"
    )
    host.run(["sh", "-c", script])
    if dpkg_interrupted(host):
        raise AssertionError(f"{host.name}: the reset left dpkg unfinished: {host.run(['dpkg', '--audit']).stdout}")


def start_apply(host: Host, tag: str) -> None:
    """`gpu-install apply --yes` in the background; its PID in /run/apply-TAG.pid, rc in /run/apply-TAG.rc."""
    host.run(["rm", "-f", f"/run/apply-{tag}.pid", f"/run/apply-{tag}.rc", f"/root/apply-{tag}.err"])
    script = (
        "#!/bin/sh\n"
        f"sh -c 'echo $$ > /run/apply-{tag}.pid.tmp; mv /run/apply-{tag}.pid.tmp /run/apply-{tag}.pid; "
        f"exec gpu-install apply --yes > /root/apply-{tag}.out 2> /root/apply-{tag}.err'\n"
        f"echo $? > /run/apply-{tag}.rc\n"
    )
    host.put(f"/root/apply-{tag}.sh", script, 0o755)
    host.run(["sh", "-c", f"setsid /root/apply-{tag}.sh >/dev/null 2>&1 < /dev/null &"])


def wait_apply(host: Host, tag: str, limit: float = 600) -> tuple[int, str]:
    """Wait for the background apply's exit status (a bound against a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        proc = host.run(["cat", f"/run/apply-{tag}.rc"], check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            err = host.run(["cat", f"/root/apply-{tag}.err"], check=False).stdout
            return int(proc.stdout.strip()), err
        time.sleep(0.2)
    raise AssertionError(f"apply {tag} did not end")


def wait_for_line(host: Host, tag: str, text: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if text in host.run(["cat", f"/root/apply-{tag}.err"], check=False).stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"apply {tag} never printed {text!r}")


def apply(host: Host) -> tuple[int, dict]:
    proc = host.run(["gpu-install", "apply", "--yes", "--json"], check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def check(host: Host) -> dict:
    return json.loads(host.run(["python3", "/root/check.py", json.dumps(USER_DAEMON_JSON)]).stdout)


def dpkg_interrupted(host: Host) -> bool:
    audit = host.run(["dpkg", "--audit"], check=False).stdout.strip()
    updates = host.run(["sh", "-c", "ls /var/lib/dpkg/updates | grep -c '^[0-9]' || true"]).stdout.strip()
    return bool(audit) or updates not in ("", "0")


def docker_default_runtime(host: Host) -> str:
    return host.run(["docker", "info", "--format", "{{.DefaultRuntime}}"], check=False).stdout.strip()


# -- the table ------------------------------------------------------------------------------------------------
ROWS_DIR = CACHE / "log" / "faults-rows"
TABLE = CACHE / "log" / "faults.md"


def run_key() -> str:
    """The same for every xdist worker of one pytest run."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"


def record(group: str, rows: list[dict], groups_total: int) -> str | None:
    """Add a group's rows to this run's record; returns the whole table once every group has reported."""
    ROWS_DIR.mkdir(parents=True, exist_ok=True)
    with open(ROWS_DIR / f"{run_key()}.jsonl", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps({"group": group, "rows": rows}) + "\n")
        fh.flush()
        fh.seek(0)
        groups = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
        fcntl.flock(fh, fcntl.LOCK_UN)
    for old in ROWS_DIR.glob("*.jsonl"):
        if old.name != f"{run_key()}.jsonl" and time.time() - old.stat().st_mtime > 86400:
            old.unlink(missing_ok=True)
    if len({g["group"] for g in groups}) < groups_total:
        return None
    table = render([row for g in sorted(groups, key=lambda g: g["group"]) for row in g["rows"]])
    tmp = TABLE.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(table)
    os.replace(tmp, TABLE)
    return table


def render(rows: list[dict]) -> str:
    lines = [
        f"# gpu-install fault trials (seed {SEED})",
        "",
        "| fault | trials | outcome | losses | kill points / details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['fault']} | {row['trials']} | {row['outcome']} | {row['losses']} | {row['details']} |")
    return "\n".join(lines) + "\n"


def write_local(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
