"""Shared helpers of the benchmarks in bench/: timing, A/B interleaving, the Markdown table, test hosts.

Every benchmark here times a thing against its floor (the least that thing could cost) in the same
run, the variants alternating (A, B, A, B, ... after one unmeasured warm-up of each), so that the
noise of a shared machine hits both alike; it prints min/median/max and the ratio of the medians, and
exits 1 when the ratio misses the target. Tests never assert on time: these scripts are run by hand.

Test hosts are the integration tests' real systemd Debian hosts (tests/integration/hosts.py): the
benchmarks that need one start it through the same HostFactory, with this checkout's wheel.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "tests" / "integration"

# The settings of a GPU-less apply that needs no vendor repository: an image build (everything installed
# and configured, nothing that needs a GPU), no driver, the container runtime in CDI mode (Docker 26 from
# Debian trixie reads CDI specs; no NVIDIA repository). Debian's docker.io comes through apt-cacher-ng.
APPLY_SETTINGS: dict[str, object] = {
    "gpu_install_image_build": True,
    "nvidia_driver_source": "none",
    "nvidia_container_mode": "cdi",
}
SUITE = "trixie"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> float:
    """Seconds from start to exit of argv; exits the benchmark when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{out[-3000:]}")
    return elapsed


def interleave(variants: Mapping[str, Callable[[], float]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Each variant's times over ``runs`` rounds, the variants alternating, after unmeasured warm-ups."""
    for _ in range(warmup):
        for name, fn in variants.items():
            log(f"warm-up: {name}")
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        for name, fn in variants.items():
            t = fn()
            times[name].append(t)
            log(f"run {i + 1}/{runs}: {name}: {t:.3f} s")
    return times


def table(times: Mapping[str, Sequence[float]], unit: str = "s") -> str:
    scale, fmt = (1000.0, "{:.1f}") if unit == "ms" else (1.0, "{:.2f}")
    lines = [
        f"| variant | runs | min ({unit}) | median ({unit}) | max ({unit}) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, values in times.items():
        cells = [fmt.format(v * scale) for v in (min(values), statistics.median(values), max(values))]
        lines.append(f"| {name} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_line(label: str, value: float, target: float, *, at_most: bool = True) -> tuple[str, bool]:
    ok = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    return f"{label}: {value:.2f}x (target {sign} {target:.2f}x): {'met' if ok else 'MISSED'}", ok


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    """One line on where the figures come from (the machine is shared: say so with them)."""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        model = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()}: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, load {load}"


def header(title: str, command: Sequence[str]) -> None:
    print(f"## {title}")
    print()
    print("```")
    print(" ".join(command))
    print("```")
    print()
    print(machine())
    print()


# --- test hosts ---------------------------------------------------------------------------------


def _hosts_module():  # type: ignore[no-untyped-def]
    if str(INTEGRATION) not in sys.path:
        sys.path.insert(0, str(INTEGRATION))
    import hosts

    return hosts


@contextlib.contextmanager
def host_factory(suites: Sequence[str] = (SUITE,)) -> Iterator[object]:
    """A HostFactory with this checkout's wheel (built once, as the integration tests build it)."""
    hosts = _hosts_module()
    # The integration tests' sessions remove gpuit- containers whose gpuit.owner process they cannot see
    # (another session's, in another PID namespace, looks gone; the host image itself carries the label of the
    # process that built it). The benchmark's hosts carry their own label for their owner, and gpuit.owner=1
    # from their image (pid 1 is alive in every namespace), so that a test session started meanwhile leaves
    # them alone; this process removes them at the end.
    hosts.OWNER_LABEL = BENCH_LABEL
    _reap_own(hosts)
    with tempfile.TemporaryDirectory(prefix="gpu-install-bench-") as tmp:
        log("building the wheel of this checkout")
        wheel = hosts.build_wheel(Path(tmp))
        factory = hosts.HostFactory(wheel, {s: _bench_image(hosts, t) for s, t in hosts.prepare(list(suites)).items()})
        try:
            yield factory
        finally:
            factory.close()


BENCH_LABEL = "gpuit.bench-owner"


def _bench_image(hosts, tag: str) -> str:  # type: ignore[no-untyped-def]
    """The host image relabelled gpuit.owner=1 (see host_factory)."""
    bench = tag.replace(hosts.REPO + ":", "local/gpu-install-bench:", 1)
    if not hosts.image_exists(bench):
        hosts.docker("build", "-q", "-t", bench, "-", input=f"FROM {tag}\nLABEL gpuit.owner=1\n".encode())
    return bench


def _reap_own(hosts) -> None:  # type: ignore[no-untyped-def]
    """Remove hosts left by a benchmark that was killed (its process is gone)."""
    fmt = f'{{{{.Names}}}} {{{{.Label "{BENCH_LABEL}"}}}}'
    out = hosts.docker("ps", "-a", "--filter", f"label={BENCH_LABEL}", "--format", fmt).stdout.decode()
    for line in out.splitlines():
        name, _, owner = line.partition(" ")
        if owner.isdigit() and not hosts._pid_alive(int(owner)):
            log(f"removing {name}, left by a benchmark that is gone")
            hosts.docker("rm", "-f", "-v", name, check=False)
            hosts.docker("volume", "rm", "-f", f"{name}-docker", check=False)


def ssh_key(directory: Path) -> object:
    return _hosts_module().SshKey.generate(directory)


def put_settings(host: object, settings: Mapping[str, object]) -> None:
    host.run(["mkdir", "-p", "/etc/gpu-install"])  # type: ignore[attr-defined]
    host.put("/etc/gpu-install/config.yml", json.dumps(settings))  # type: ignore[attr-defined]


def apply(host: object, *, check_changed: int | None = None) -> dict:
    """``gpu-install apply --yes --json`` in the host; its JSON result (exits the benchmark on failure)."""
    proc = host.run(["gpu-install", "apply", "--yes", "--json"], check=False)  # type: ignore[attr-defined]
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        sys.exit(f"apply printed no JSON (rc {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    if proc.returncode != 0:
        sys.exit(f"apply failed (rc {proc.returncode}): {result.get('error')}")
    if check_changed is not None and result.get("changed") != check_changed:
        sys.exit(f"apply changed {result.get('changed')} things, expected {check_changed}: {result.get('changes')}")
    return result


# Runs in the host: per task (summed over hosts), the time from its start to each host's result.
_PROFILE_SCRIPT = r"""
import datetime, glob, json, os
runs = sorted(glob.glob('/var/log/gpu-install/runs/*-apply-*'), key=os.path.getmtime)
events = sorted(glob.glob(runs[-1] + '/artifacts/*/job_events/*.json'),
                key=lambda p: int(os.path.basename(p).split('-')[0]))
starts, spans, times, kinds = {}, {}, [], {}
for path in events:
    with open(path) as fh:
        ev = json.load(fh)
    t = datetime.datetime.fromisoformat(ev['created']).timestamp()
    times.append(t)
    data = ev.get('event_data') or {}
    uuid = data.get('task_uuid')
    if ev['event'] in ('playbook_on_task_start', 'playbook_on_handler_task_start'):
        name = (data.get('role') or '-') + ': ' + str(data.get('task'))
        starts[uuid] = (t, name, data.get('task_action'))
    elif ev['event'] in ('runner_on_ok', 'runner_on_failed', 'runner_on_skipped', 'runner_on_unreachable') \
            and uuid in starts:  # a result (not runner_on_start, nor runner_on_file_diff: they would count twice)
        t0, name, action = starts[uuid]
        spans[name] = (spans.get(name, (0, action))[0] + t - t0, action)
        kind = ev['event'][len('runner_on_'):]
        kinds[kind] = kinds.get(kind, 0) + 1
top = sorted(([n, s, a] for n, (s, a) in spans.items()), key=lambda x: -x[1])
print(json.dumps({'wall': max(times) - min(times), 'tasks': len(starts), 'kinds': kinds,
                  'in_tasks': sum(s for _, s, _ in top), 'top': top[:TOP]}))
"""


def task_profile(host: object, top: int = 12) -> str:
    """Where the last apply's time went, from ansible-runner's job events (per task, summed over hosts)."""
    script = _PROFILE_SCRIPT.replace("TOP", str(int(top)))
    out = json.loads(host.run(["python3", "-c", script]).stdout)  # type: ignore[attr-defined]
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(out["kinds"].items()))
    lines = [
        f"Last apply, from ansible-runner's job events: playbook {out['wall']:.2f} s, {out['tasks']} tasks started"
        f" (results: {kinds}), {out['in_tasks']:.2f} s from task start to result in all; the longest:",
        "",
        "| task | module | s |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {name} | {action} | {secs:.2f} |" for name, secs, action in out["top"]]
    return "\n".join(lines)
