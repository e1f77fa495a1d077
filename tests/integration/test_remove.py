"""`gpu-install remove` on real systemd Debian hosts: the host comes back to what it was before apply.

Every test starts from a host that runs Docker (Debian's docker.io, installed in a prepared layer, ``LAYER``)
and takes a snapshot (tests/fixtures/snapshot.py: installed packages, every path under /etc, unit file states,
the daemons' activity, /var/lib/gpu-install) before apply. After remove the snapshot must be the same, except
what the test's user changed on purpose in between, which stays (a daemon.json key, a package of their own that
depends on one apply installed; a rule of gpu-install's they edited goes from /etc, backed up under
/var/backups/gpu-install first).

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's container toolkit repository (unreachable from here),
signed with a key made by the test and reached through gpu_install_repositories, as a user's mirror is; the
toolkit in it is NVIDIA's real one built from NVIDIA's source (only libnvidia-container is a stand-in). There is
no GPU here: the applies are image builds (gpu_install_image_build: true, nvidia_driver_source: none). The
user's package (``user_package``) is a .deb the test builds in the host with dpkg-deb, as a site builds its own
agent packages.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hosts import Host, HostFactory, ensure_layer
from test_docker_role import tiny_image
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402
from fixtures.snapshot import diff, render, snapshot, without  # noqa: E402

# Docker as the hosts' users have it before gpu-install comes: Debian's docker.io from the suite's archive, with
# its recommends (trixie's docker client, docker-cli, is one), as test_docker_role.install_docker_io installs it.
LAYER = "apt-get update -q\nDEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io\n"
DAEMON_JSON = "/etc/docker/daemon.json"
USER_KEY = {"log-level": "warn"}  # a key the user adds to daemon.json after apply
UDEV_RULE = "/etc/udev/rules.d/71-nvidia-dev-char.rules"  # written by apply in runtime mode
USER_LINE = "# site: the monitoring agent reads these links"  # the user's edit of that rule
BACKUPS = "/var/backups/gpu-install"
USER_PACKAGE = "site-gpu-agent"
USER_DEPENDENCY = "libnvidia-container1"  # what the user's package depends on, installed by apply
# Kinds whose target is a path on the host (a `setting` target is "PATH KEY").
PATH_KINDS = {"file", "setting", "key", "repository", "hold", "state"}


@pytest.fixture
def docker_hosts(host_factory: HostFactory) -> Iterator[Callable[[str], Host]]:
    """``docker_hosts(suite)``: a fresh host of the suite running Debian's docker.io; removed after the test."""
    made: list[Host] = []

    def make(suite: str) -> Host:
        host = host_factory(suite, image=ensure_layer(suite, "docker-io", LAYER))
        made.append(host)
        return host

    try:
        yield make
    finally:
        for host in made:
            host_factory.remove(host)


def settings(mirror: Mirror | None, gw: str, **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"gpu_install_image_build": True, "nvidia_driver_source": "none", **more}
    if mirror is not None:
        found["gpu_install_repositories"] = mirror.repositories(gw, ids=("nvidia_container_toolkit",))
    return found


def write_settings(host: Host, values: dict[str, Any]) -> None:
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    host.put("/etc/gpu-install/config.yml", json.dumps(values))


def cli(host: Host, *argv: str) -> tuple[int, dict[str, Any]]:
    proc = host.run(["gpu-install", *argv, "--json"], check=False)
    assert proc.stdout.strip(), f"rc {proc.returncode}: {proc.stderr[-3000:]}"
    return proc.returncode, json.loads(proc.stdout)


def apply(host: Host) -> None:
    rc, result = cli(host, "apply", "--yes")
    assert rc == 0, result.get("error")
    assert result["changed"] > 0


def remove(host: Host, *argv: str) -> tuple[int, dict[str, Any]]:
    rc, result = cli(host, "remove", *argv)
    assert result["schema"] == 1, result
    return rc, result


def line(item: dict[str, str]) -> str:
    """The plan item as the CLI prints it (common contract)."""
    return f"{item['action']} {item['kind']} {item['target']}" + (f" ({item['detail']})" if item["detail"] else "")


def lines(items: list[dict[str, str]]) -> str:
    return "\n".join(line(i) for i in items) or "(nothing)"


def check_plan(host: Host) -> list[dict[str, str]]:
    """`remove --check`: the plan, with nothing changed on the host."""
    before = snapshot(host)
    rc, planned = remove(host, "--check")
    assert rc == 0, planned.get("error")
    plan = planned["removal"]["plan"]
    for item in plan:
        assert set(item) == {"kind", "target", "action", "detail"}, item
    assert planned["check"] is True
    assert not (d := diff(before, snapshot(host))), "remove --check changed the host:\n" + render(d)
    return plan


def run_remove(host: Host, plan: list[dict[str, str]]) -> dict[str, Any]:
    """`remove --yes`: exits 0, and what it did is the plan `--check` showed, item for item."""
    began = time.monotonic()
    rc, result = remove(host, "--yes")
    assert rc == 0, result.get("error")
    removal = result["removal"]
    assert removal["plan"] == plan, f"the run's plan:\n{lines(removal['plan'])}\n--check's plan:\n{lines(plan)}"
    assert removal["done"] == plan, f"done:\n{lines(removal['done'])}\nplanned:\n{lines(plan)}"
    assert result["changed"] > 0
    print(f"remove took {time.monotonic() - began:.1f} s: {len(plan)} items")
    return result


def assert_second_remove_changes_nothing(host: Host) -> None:
    before = snapshot(host)
    assert check_plan(host) == []
    rc, again = remove(host, "--yes")
    assert rc == 0, again.get("error")
    assert (again["removal"]["plan"], again["removal"]["done"], again["changed"]) == ([], [], 0), again["removal"]
    assert not (d := diff(before, snapshot(host))), "a second remove changed the host:\n" + render(d)


def owned_files(host: Host, packages: list[str]) -> set[str]:
    """The paths dpkg lists for the packages (their files and conffiles), read before they go."""
    if not packages:
        return set()
    out = host.run(["dpkg-query", "-L", *packages], check=False).stdout
    return {p for p in out.splitlines() if p.startswith("/")}


def assert_plan_is_what_changed(
    plan: list[dict[str, str]], applied: dict[str, Any], after: dict[str, Any], package_files: set[str]
) -> None:
    """Everything the host lost between apply and remove is in the plan (itself, or a file of a package it
    purges), and every plan item shows in that difference: the plan lists what remove did and nothing else."""
    d = diff(applied, after)
    packages = {i["target"] for i in plan if i["kind"] == "package"}
    paths = {i["target"].split(" ", 1)[0] for i in plan if i["kind"] in PATH_KINDS}
    units = {i["target"] for i in plan if i["kind"] == "unit"}
    removed_packages = set(d.get("packages", {}).get("removed", {}))
    assert removed_packages == packages, f"packages gone {sorted(removed_packages)}, planned {sorted(packages)}"

    files = d.get("files", {})
    touched = set(files.get("removed", {})) | set(files.get("changed", {}))
    # A package's files, a planned unit's enablement links (in *.wants), and the directories above them.
    unit_names = units | {Path(p).name for p in package_files if "/systemd/system/" in p}

    def explained(path: str) -> bool:
        if path in paths or path in package_files:
            return True
        if ".wants/" in path or ".requires/" in path or path.startswith("/etc/systemd/system/"):
            if Path(path).name in unit_names:
                return True
        return any(p.startswith(path + "/") for p in paths | package_files)

    unexplained = sorted(p for p in touched if not explained(p))
    unit_changes = d.get("units", {})
    unexplained += sorted(
        f"unit {u}" for u in {*unit_changes.get("removed", {}), *unit_changes.get("changed", {})} if u not in unit_names
    )
    assert not unexplained, f"changed or gone without a plan item: {unexplained}\nplan:\n{lines(plan)}"
    missing = sorted(
        p for p in paths if p not in touched and not p.startswith("/var/lib/gpu-install") and p.startswith("/etc")
    )
    assert not missing, f"planned but unchanged: {missing}\nplan:\n{lines(plan)}"
    if any(i["kind"] == "state" for i in plan):
        assert applied["state_dir"] and not after["state_dir"], "the state item was planned but the state stays"


def user_package(host: Host, depends: str) -> None:
    """The user builds and installs their own small package that depends on ``depends``."""
    control = (
        f"Package: {USER_PACKAGE}\nVersion: 1.0\nArchitecture: all\nMaintainer: Site Ops <ops@example.com>\n"
        f"Depends: {depends}\nDescription: the site's GPU agent (made by gpu-install's tests)\n"
    )
    script = (
        "set -e; d=$(mktemp -d); mkdir -p $d/DEBIAN $d/usr/share/site-gpu-agent; "
        "printf '%s' \"$CONTROL\" > $d/DEBIAN/control; echo agent > $d/usr/share/site-gpu-agent/README; "
        f"dpkg-deb --root-owner-group --build $d /tmp/{USER_PACKAGE}.deb >/dev/null; dpkg -i /tmp/{USER_PACKAGE}.deb"
    )
    host.run(["sh", "-c", script], env={"CONTROL": control})


def user_daemon_key(host: Host) -> None:
    """The user adds a key of their own to the daemon.json apply wrote."""
    config = json.loads(host.get(DAEMON_JSON))
    config.update(USER_KEY)
    host.put(DAEMON_JSON, json.dumps(config, indent=2) + "\n")


def start_container(host: Host, name: str, *flags: str) -> str:
    """A long-running container (a shell waiting on its open stdin) of the host's tiny image; its start time."""
    image = tiny_image(host)
    host.run(["docker", "run", "-d", "-i", "--name", name, "--network", "none", *flags, image, "/bin/sh"])
    return started(host, name)


def started(host: Host, name: str) -> str:
    fmt = "{{.State.Running}} {{.State.StartedAt}} {{.State.Pid}} {{.HostConfig.Runtime}}"
    return host.run(["docker", "inspect", "-f", fmt, name]).stdout.strip()


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_runtime_mode_remove_gives_back_the_host_as_before_apply_keeping_the_users_changes(
    docker_hosts, suite, tmp_path
):
    host = docker_hosts(suite)
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        write_settings(host, settings(mirror, gw))
        before = snapshot(host)
        apply(host)

        # The user's changes after apply: a daemon.json key, and a package depending on one apply installed.
        user_daemon_key(host)
        user_package(host, USER_DEPENDENCY)
        host.put(UDEV_RULE, host.get(UDEV_RULE) + f"{USER_LINE}\n".encode())
        runc = start_container(host, "runc-job", "--runtime", "runc")
        assert runc.startswith("true ") and runc.endswith(" runc"), runc

        applied = snapshot(host)
        plan = check_plan(host)
        assert plan, "the plan of an applied host is empty"
        # The plan as a person reads it: every item's line, and what stays names the user's package.
        printed = host.run(["gpu-install", "remove", "--check"], env={"COLUMNS": "500"}).stdout
        for item in plan:
            assert f"  - {line(item)}" in printed.splitlines(), (line(item), printed)
        assert any(USER_DEPENDENCY in row and USER_PACKAGE in row for row in printed.splitlines()), printed
        planned_packages = [i["target"] for i in plan if i["kind"] == "package"]
        assert USER_DEPENDENCY not in planned_packages, lines(plan)
        assert "docker.io" not in planned_packages, lines(plan)
        package_files = owned_files(host, planned_packages)

        result = run_remove(host, plan)
        # The rule the user edited goes from /etc (it is gpu-install's), backed up first with the user's line.
        (rule,) = [i for i in plan if i["target"] == UDEV_RULE]
        assert "edited after apply" in rule["detail"] and BACKUPS in rule["detail"], rule
        saved = host.run(["grep", "-rlF", "--", USER_LINE, BACKUPS], check=False).stdout.split()
        assert saved, f"no backup of the edited {UDEV_RULE} under {BACKUPS}"
        kept = result["removal"]["kept"]
        assert any(k["target"] == USER_DEPENDENCY and USER_PACKAGE in k["why"] for k in kept), kept
        assert started(host, "runc-job") == runc, "the runc container did not keep running through remove"

        after = snapshot(host)
        assert json.loads(host.get(DAEMON_JSON)) == USER_KEY
        d = diff(before, after)
        d = without(d, "packages", "added", USER_PACKAGE, USER_DEPENDENCY)
        d = without(d, "files", "added", DAEMON_JSON)
        assert not d, "remove left the host unlike before apply:\n" + render(d)
        assert_plan_is_what_changed(plan, applied, after, package_files)

        assert_second_remove_changes_nothing(host)
        assert started(host, "runc-job") == runc


def test_cdi_mode_remove_gives_back_the_host_and_says_dockerd_restarts_for_features_cdi(docker_hosts):
    host = docker_hosts("trixie")
    write_settings(host, settings(None, "", nvidia_container_mode="cdi"))
    before = snapshot(host)
    apply(host)
    assert json.loads(host.get(DAEMON_JSON))["features"]["cdi"] is True
    applied = snapshot(host)

    plan = check_plan(host)
    # features.cdi goes, as a key of daemon.json or with the whole file gpu-install wrote ...
    assert any(i["target"] in (f"{DAEMON_JSON} features.cdi", f"{DAEMON_JSON} features", DAEMON_JSON) for i in plan), (
        lines(plan)
    )
    # ... and Docker 26 reads features only at start: the plan says dockerd restarts.
    restarts = [i for i in plan if i["action"] == "restart"]
    assert restarts and "docker" in restarts[0]["target"], lines(plan)
    package_files = owned_files(host, [i["target"] for i in plan if i["kind"] == "package"])

    run_remove(host, plan)
    after = snapshot(host)
    assert not (d := diff(before, after)), "remove left the host unlike before apply:\n" + render(d)
    assert_plan_is_what_changed(plan, applied, after, package_files)
    docker = json.loads(host.run(["docker", "info", "--format", "{{json .}}"]).stdout)
    assert docker["DefaultRuntime"] == "runc" and "nvidia" not in docker["Runtimes"], docker["Runtimes"]
    assert not docker.get("CDISpecDirs"), docker.get("CDISpecDirs")  # dockerd restarted without features.cdi
    assert_second_remove_changes_nothing(host)


def test_remove_refuses_while_a_container_runs_under_nvidias_runtime_and_goes_on_once_it_stops(docker_hosts, tmp_path):
    host = docker_hosts("bookworm")
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        write_settings(host, settings(mirror, gw))
        before = snapshot(host)
        apply(host)
        # NVIDIA's runtime asked for no device (void) passes the container to runc: it runs on this GPU-less host.
        gpu_job = start_container(host, "gpu-job", "--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=void")
        assert gpu_job.startswith("true ") and gpu_job.endswith(" nvidia"), gpu_job
        runc = start_container(host, "runc-job", "--runtime", "runc")
        applied = snapshot(host)

        rc, refused = remove(host, "--yes")
        assert rc == 6, refused
        reason = refused["error"]["reason"]
        assert "gpu-job" in reason and "runc-job" not in reason, reason
        assert "stop" in reason, reason
        assert not (d := diff(applied, snapshot(host))), "a refused remove changed the host:\n" + render(d)
        assert started(host, "gpu-job") == gpu_job

        host.run(["docker", "stop", "--time", "1", "gpu-job"])  # its shell, as PID 1, ignores SIGTERM
        plan = check_plan(host)
        run_remove(host, plan)
        assert not (d := diff(before, snapshot(host))), "remove left the host unlike before apply:\n" + render(d)
        assert started(host, "runc-job") == runc


# Started as a transient systemd unit so that SIGKILL reaches every process of the run at once (the CLI,
# ansible-runner's ansible-playbook in its own session, apt-get and dpkg): the cgroup is killed, as a host's
# power loss or an OOM kill of the unit would. It is killed once dpkg runs to remove a package.
KILL_SCRIPT = r"""
import json, os, subprocess, sys, time
unit = "gpuit-remove"
subprocess.run(["systemd-run", "--unit", unit, "--collect", "-p", "StandardOutput=file:/tmp/remove-killed.out",
                "-p", "StandardError=file:/tmp/remove-killed.err", "/usr/local/bin/gpu-install", "remove", "--yes",
                "--json"], check=True, capture_output=True)
began = time.monotonic()
seen, checked = None, began
while seen is None and time.monotonic() - began < 900:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "dpkg" and set(argv) & {"--remove", "--purge", "-r", "-P"}:
            seen = argv
            break
    if seen is None and time.monotonic() - checked > 0.5:
        checked = time.monotonic()
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip()
        if state not in ("active", "activating"):
            break
    time.sleep(0.01)
if seen is not None:
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=True)
    while subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip() in (
            "active", "activating", "deactivating"):
        time.sleep(0.1)
json.dump({"seen": seen, "after_s": round(time.monotonic() - began, 1)}, sys.stdout)
"""


def test_remove_killed_mid_purge_is_finished_by_the_next_remove(docker_hosts, tmp_path):
    host = docker_hosts("trixie")
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        write_settings(host, settings(mirror, gw))
        before = snapshot(host)
        apply(host)
        plan = check_plan(host)
        assert any(i["kind"] == "package" for i in plan), lines(plan)

        killed = json.loads(host.run(["python3", "-c", KILL_SCRIPT], timeout=1000).stdout)
        out = host.run(["cat", "/tmp/remove-killed.out", "/tmp/remove-killed.err"], check=False).stdout
        assert killed["seen"], f"remove ended before dpkg removed a package: {killed}\n{out[-3000:]}"
        print(f"killed {killed['after_s']} s into remove, while running {' '.join(killed['seen'])}")
        mid = snapshot(host)
        assert diff(before, mid), "the killed remove had already finished"

        rc, result = remove(host, "--yes")
        assert rc == 0, result.get("error")
        assert not (d := diff(before, snapshot(host))), "remove after a killed one did not converge:\n" + render(d)
        assert_second_remove_changes_nothing(host)


def test_remove_on_a_host_gpu_install_never_touched_plans_nothing_and_changes_nothing(docker_hosts):
    host = docker_hosts("bookworm")
    # The user's own daemon.json, which is none of gpu-install's business.
    host.put(DAEMON_JSON, json.dumps({"log-level": "warn", "default-runtime": "runc"}, indent=2) + "\n")
    before = snapshot(host)
    assert check_plan(host) == []
    rc, result = remove(host, "--yes")
    assert rc == 0, result.get("error")
    assert (result["removal"]["plan"], result["removal"]["done"], result["changed"]) == ([], [], 0), result
    assert not (d := diff(before, snapshot(host))), "remove changed an untouched host:\n" + render(d)
