"""Faults during `gpu-install apply` on real systemd bookworm hosts, and the table they add up to.

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's container toolkit repository (unreachable from here):
signed, reached through gpu_install_repositories as a user's mirror is; its toolkit packages are small
stand-ins. Settings are an image build's (gpu_install_image_build: true, nvidia_driver_source: none), runtime
mode; Docker is Debian's docker.io, installed before the first apply; the user's daemon.json has keys that must
survive (faults_support.USER_DAEMON_JSON).

A "loss" is any of: daemon.json missing or invalid JSON, a user key lost or changed, a temp file left after the
next apply, the next apply not converging (exit 0, dockerd's default runtime nvidia, dpkg clean), a wrong exit
code. Every trial's losses are counted in the table (printed and written to $GPU_INSTALL_TEST_CACHE/log/
faults.md); a test fails when its trials lost anything.
"""

from __future__ import annotations

import json
import os
import random
import sys
import warnings
from pathlib import Path

import pytest
from faults_support import (
    SEED,
    TABLE,
    USER_DAEMON_JSON,
    apply,
    check,
    docker_default_runtime,
    dpkg_interrupted,
    prepare_host,
    record,
    reset,
    start_apply,
    wait_apply,
    wait_for_line,
)
from hosts import Host
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402

# Trials per kill phase: 7 (21 SIGKILL trials in all); GPU_INSTALL_FAULT_TRIALS=N for a shorter or longer set.
TRIALS = int(os.environ.get("GPU_INSTALL_FAULT_TRIALS", "7"))
KILL_PHASES = {
    # phase: (how many trials, kill points drawn from the seeded generator)
    "apt install (the toolkit fixture)": (TRIALS, lambda rng: f"dpkg:{rng.randint(1, 12)}"),
    "daemon.json write": (TRIALS, lambda rng: f"task:Merge the NVIDIA runtime+{rng.randint(0, 400)}"),
    "dockerd reload/restart": (TRIALS, lambda rng: f"task:Apply daemon.json to dockerd+{rng.randint(0, 800)}"),
}
GROUPS = (*KILL_PHASES, "signals", "concurrency+dockerd stopped", "disk full/read-only/dockerd crash")


@pytest.fixture
def mirror_host(bookworm_host: Host, tmp_path: Path):
    host = bookworm_host
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "docker_ready_timeout": 10,
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        prepare_host(host, settings)
        yield host


def converged(host: Host, losses: list[str]) -> None:
    """The next apply converges: exit 0, nothing of ours left behind, the user's keys kept."""
    rc, result = apply(host)
    if rc != 0:
        journal = host.run(["journalctl", "-u", "docker", "--no-pager", "-o", "cat", "-n", "25"], check=False).stdout
        losses.append(f"next apply exit {rc}: {result.get('error')}; docker's journal:\n{journal}")
    state = check(host)
    if not (state["valid"] and state["user_keys"] and state["nvidia"]):
        losses.append(f"daemon.json after the next apply: {state}")
    if state["temps"]:
        losses.append(f"temp files left: {state['temps']}")
    if docker_default_runtime(host) != "nvidia":
        losses.append(f"dockerd's default runtime is {docker_default_runtime(host)!r}")
    if dpkg_interrupted(host):
        losses.append("dpkg still interrupted")


class FaultTable(UserWarning):
    """Carries the table to the terminal (pytest's warnings summary), the one channel xdist workers have."""


def finish(group: str, rows: list[dict]) -> None:
    table = record(group, rows, len(GROUPS))
    if table is not None:
        # A warning reaches the terminal from an xdist worker too: pytest prints it in the warnings summary.
        warnings.warn(FaultTable(f"the fault table (also in {TABLE}):\n\n{table}"), stacklevel=1)
    lost = [row for row in rows if row["losses"]]
    assert not lost, json.dumps(lost, indent=2)


@pytest.mark.parametrize("phase", list(KILL_PHASES))
def test_sigkill_at_seeded_points_loses_nothing_and_the_next_apply_converges(mirror_host, phase):
    host = mirror_host
    trials, draw = KILL_PHASES[phase]
    rng = random.Random(f"{SEED}:{phase}")
    points, losses, notes = [], [], []
    interrupted_dpkg = 0
    for n in range(trials):
        if n:
            reset(host)
        point = draw(rng)
        points.append(point)
        trial_losses: list[str] = []
        # The killer must not see the previous trial's PID or progress lines.
        host.run(["rm", "-f", "/run/apply-k.pid", "/run/apply-k.rc", "/root/apply-k.err", "/root/killer.out"])
        host.run(["sh", "-c", f"setsid python3 /root/killer.py '{point}' /run/apply-k.pid /root/apply-k.err "
                              "> /root/killer.out 2>&1 < /dev/null &"])  # fmt: skip
        start_apply(host, "k")
        rc, _err = wait_apply(host, "k")
        killed = host.run(["cat", "/root/killer.out"], check=False).stdout.strip()
        if rc != 137:  # SIGKILL: a trial whose kill did not land proves nothing, so it counts as a loss
            trial_losses.append(f"the kill did not land: the apply exited {rc}")
        state = check(host)
        if not (state["valid"] and state["user_keys"]):
            trial_losses.append(f"after the kill: {state}")
        if dpkg_interrupted(host):
            interrupted_dpkg += 1
        converged(host, trial_losses)
        losses += [f"{point}: {x}" for x in trial_losses]
        notes.append(f"{point} -> {killed}")
    outcome = "daemon.json valid, user keys kept; next apply converged"
    if phase.startswith("apt"):
        outcome += f"; dpkg left interrupted {interrupted_dpkg}x, recovered by the next apply"
    row = {
        "fault": f"SIGKILL during {phase}",
        "trials": trials,
        "outcome": outcome,
        "losses": len(losses),
        "details": ", ".join(points),
        "why": losses,
        "notes": notes,
    }
    finish(phase, [row])


def _signal_trial(host: Host, signame: str, code: int, losses: list[str]) -> str:
    start_apply(host, "s")
    wait_for_line(host, "s", "Install the NVIDIA Container Toolkit")
    pid = host.run(["cat", "/run/apply-s.pid"]).stdout.strip()
    host.run(["kill", f"-{signame}", pid])
    rc, err = wait_apply(host, "s")
    if rc != code:
        losses.append(f"SIG{signame}: exit {rc}, not {code}")
    said = next((ln for ln in err.splitlines() if "interrupted by" in ln), "")
    if f"interrupted by SIG{signame}" not in said or "in task '" not in said and "between tasks" not in said:
        losses.append(f"SIG{signame}: the message does not say where it stopped: {err[-600:]!r}")
    if "changed so far" not in said or "run apply again" not in said:
        losses.append(f"SIG{signame}: the message does not say what was done and what was not: {said!r}")
    state = check(host)
    if not (state["valid"] and state["user_keys"]):
        losses.append(f"SIG{signame}: daemon.json after the stop: {state}")
    converged(host, losses)
    return said


def test_sigint_and_sigterm_stop_the_run_say_where_and_exit_130_143(mirror_host):
    host = mirror_host
    losses: list[str] = []
    said = {}
    for n, (signame, code) in enumerate((("INT", 130), ("TERM", 143))):
        if n:
            reset(host)
        said[signame] = _signal_trial(host, signame, code, losses)
    rows = [
        {
            "fault": f"SIG{s} during apply (at the toolkit install)",
            "trials": 1,
            "outcome": f"exit {c}; " + (said[s].split("error: ", 1)[-1][:160].replace("|", "/") or "no message"),
            "losses": sum(1 for x in losses if x.startswith(f"SIG{s}")),
            "details": "signal sent to the gpu-install PID once the task's progress line appeared",
        }
        for s, c in (("INT", 130), ("TERM", 143))
    ]
    rows[-1]["losses"] += sum(1 for x in losses if not x.startswith("SIG"))
    finish("signals", rows)
    assert not losses, losses


def test_a_second_apply_is_refused_with_exit_6_and_a_stopped_dockerd_is_started(mirror_host):
    host = mirror_host
    losses: list[str] = []
    start_apply(host, "a")
    wait_for_line(host, "a", "Install the NVIDIA Container Toolkit")
    first = host.run(["cat", "/run/apply-a.pid"]).stdout.strip()
    rc, result = apply(host)
    reason = (result.get("error") or {}).get("reason", "")
    if rc != 6 or f"PID {first}" not in reason:
        losses.append(f"second apply: exit {rc}, {reason!r}")
    rc_first, err = wait_apply(host, "a")
    if rc_first != 0:
        losses.append(f"the first apply: exit {rc_first}: {err[-400:]}")
    concurrent = {
        "fault": "two applies at once",
        "trials": 1,
        "outcome": f"second exit {rc}: {reason[:120]}; first exit {rc_first}",
        "losses": len(losses),
        "details": "second started while the first ran its toolkit install",
    }
    reset(host)
    stopped_losses: list[str] = []
    host.run(["systemctl", "stop", "docker.socket", "docker.service"])
    rc, result = apply(host)
    if rc != 0:
        stopped_losses.append(f"exit {rc}: {result.get('error')}")
    active = host.run(["systemctl", "is-active", "docker"], check=False).stdout.strip()
    if active != "active" or docker_default_runtime(host) != "nvidia":
        stopped_losses.append(f"dockerd {active}, default runtime {docker_default_runtime(host)!r}")
    state = check(host)
    if not (state["valid"] and state["user_keys"] and state["nvidia"]) or state["temps"]:
        stopped_losses.append(f"daemon.json: {state}")
    stopped = {
        "fault": "dockerd not running before apply",
        "trials": 1,
        "outcome": f"exit {rc}; dockerd {active}, default runtime nvidia",
        "losses": len(stopped_losses),
        "details": "systemctl stop docker.socket docker.service first",
    }
    finish("concurrency+dockerd stopped", [concurrent, stopped])
    assert not losses + stopped_losses, losses + stopped_losses


def _write_fault(host: Host, kind: str, losses: list[str]) -> str:
    """/etc/docker on a 64 KiB tmpfs (filled), or bind-mounted read-only; apply must exit 10, file intact."""
    original = host.get("/etc/docker/daemon.json")
    host.run(["sh", "-c", "cp -a /etc/docker /root/etc-docker && mount -t tmpfs -o size=64k tmpfs /etc/docker "
                          "&& cp -a /root/etc-docker/. /etc/docker/"])  # fmt: skip
    if kind == "disk full":
        host.run(["sh", "-c", "dd if=/dev/zero of=/etc/docker/filler bs=4k 2>/dev/null; true"])
    else:
        host.run(["mount", "-o", "remount,ro", "/etc/docker"])
    try:
        rc, result = apply(host)
        reason = (result.get("error") or {}).get("reason", "")
        if rc != 10:
            losses.append(f"{kind}: exit {rc}: {reason}")
        if host.get("/etc/docker/daemon.json") != original:
            losses.append(f"{kind}: daemon.json changed")
        left = host.run(["sh", "-c", "ls -a /etc/docker | grep -c 'gpu-install' || true"]).stdout.strip()
        if left != "0":
            losses.append(f"{kind}: {left} gpu-install file(s) left in /etc/docker")
    finally:
        host.run(["sh", "-c", "umount /etc/docker; rm -rf /root/etc-docker"])
    converged(host, losses)
    return f"exit {rc}: {reason[:140]}"


def test_disk_full_read_only_and_a_dockerd_that_rejects_the_file(mirror_host):
    host = mirror_host
    rows = []
    for n, kind in enumerate(("disk full", "read-only")):
        if n:
            reset(host)
        losses: list[str] = []
        said = _write_fault(host, kind, losses)
        rows.append(
            {
                "fault": f"{kind} /etc/docker at write time",
                "trials": 1,
                "outcome": said.replace("|", "/") + "; original intact, no temp files",
                "losses": len(losses),
                "details": "64 KiB tmpfs on /etc/docker" + (", filled" if kind == "disk full" else ", remounted ro"),
                "why": losses,
            }
        )
    reset(host)
    losses = []
    # The user adds a key dockerd rejects after dockerd started: the reload fails, the file is put back (exit 7).
    bad = dict(USER_DAEMON_JSON, **{"no-such-option": True})
    host.put("/etc/docker/daemon.json", json.dumps(bad, indent=2) + "\n")
    before = host.get("/etc/docker/daemon.json")
    rc, result = apply(host)
    reason = (result.get("error") or {}).get("reason", "")
    if rc != 7:
        losses.append(f"exit {rc}: {reason}")
    if host.get("/etc/docker/daemon.json") != before:
        losses.append("daemon.json was not rolled back to the user's file")
    host.put("/etc/docker/daemon.json", host.get("/root/user-daemon.json"))
    converged(host, losses)
    rows.append(
        {
            "fault": "dockerd rejects the new daemon.json (unknown user key)",
            "trials": 1,
            "outcome": f"exit {rc}, rolled back: {reason[:140]}".replace("|", "/"),
            "losses": len(losses),
            "details": "after the user fixes the key, the next apply converges",
            "why": losses,
        }
    )
    finish("disk full/read-only/dockerd crash", rows)
