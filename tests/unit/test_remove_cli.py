"""gpu-install remove: its grammar, what it prints and returns from a run's results, and when it asks.

The playbook itself (gpu_install.nvidia.remove) changes the host it runs on, this machine included: here a
stand-in for ``engine.run_playbook`` hands back RunResults shaped as the engine collects them (the removal
module's plan and take-back results under ``results["removal_plan"]`` and ``results["removal"]``), and records
how it was called. The engine's collecting of those results is tested on the events ansible-runner sends.
The real runs are the integration tests'.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpu_install import cli, engine, settings, signals
from gpu_install.commands import _common, remove
from gpu_install.errors import GpuInstallError
from gpu_install.parser import build_parser

PLAN_ITEMS = [
    {
        "kind": "setting",
        "target": "/etc/docker/daemon.json default-runtime",
        "action": "restore",
        "detail": "restores runc",
    },
    {"kind": "setting", "target": "/etc/docker/daemon.json runtimes.nvidia", "action": "remove", "detail": ""},
    {"kind": "unit", "target": "docker", "action": "restart", "detail": "features.cdi goes"},
    {"kind": "package", "target": "nvidia-container-toolkit", "action": "purge", "detail": "version 1.17.8-1"},
    {"kind": "file", "target": "/etc/cdi/gpu-install-nvidia.json", "action": "remove", "detail": None},
]
KEPT = [
    {"target": "docker.io", "why": "Docker is never removed"},
    {"target": "nvidia-driver", "why": "the driver stays without --driver"},
]


def _result(tmp_path: Path, *, check: bool, plan: list | None = None, done: list | None = None, **kw: Any):
    results: dict[str, dict[str, Any]] = {}
    if plan is not None:
        results["removal_plan"] = {
            "step": "plan",
            "items": plan,
            "kept": KEPT,
            "blocking_containers": kw.pop("blocking", []),
            "restart_needed": ["docker"],
            "changed": False,
        }
    if done is not None:
        results["removal"] = {"step": "take_back", "items": done, "kept": KEPT, "changed": bool(done)}
    base = {"status": "successful", "rc": 0, "elapsed": 12.5}
    base.update(kw)
    return engine.RunResult(
        check=check, run_id="r1", artifacts=tmp_path / "a", log=tmp_path / "stdout", results=results, **base
    )


# --- the grammar ----------------------------------------------------------------------------------------------


def test_remove_reads_its_flags_and_defaults_to_a_plain_asking_run():
    args = build_parser().parse_args(["remove"])
    assert (args.command, args.config, args.driver, args.check, args.yes, args.json) == (
        "remove",
        None,
        False,
        False,
        False,
        False,
    )
    args = build_parser().parse_args(["remove", "-c", "/etc/x.yml", "--driver", "--check", "-y", "--json"])
    assert (args.config, args.driver, args.check, args.yes, args.json) == ("/etc/x.yml", True, True, True, True)


def test_remove_is_in_the_help_between_apply_and_verify(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listed = re.findall(r"^    (\S+)", capsys.readouterr().out, flags=re.M)
    assert listed[listed.index("apply") : listed.index("verify") + 1] == ["apply", "remove", "verify"]


def test_removal_is_never_a_setting(tmp_path):
    """A settings file apply reads cannot carry the driver's removal: it is refused as an unknown key."""
    path = tmp_path / "config.yml"
    path.write_text("gpu_install_remove_driver: true\n")
    with pytest.raises(GpuInstallError) as exc:
        settings.load(str(path))
    assert exc.value.code == 4 and "gpu_install_remove_driver" in exc.value.reason


# --- the engine keeps both steps' results ---------------------------------------------------------------------


def _event(kind: str, res: dict) -> dict:
    return {"event": kind, "event_data": {"task": "t", "resolved_action": "gpu_install.nvidia.removal", "res": res}}


def test_engine_keeps_the_removal_modules_plan_and_take_back_results_by_step(tmp_path):
    run = engine.RunResult(check=False, run_id="r", artifacts=tmp_path, log=tmp_path / "stdout")
    plan = {"step": "plan", "items": PLAN_ITEMS, "kept": KEPT, "changed": False, "invocation": {"module_args": {}}}
    engine._collect(run, _event("runner_on_ok", plan), False)
    done = {"step": "take_back", "items": PLAN_ITEMS[:2], "kept": KEPT, "changed": True, "_ansible_no_log": False}
    engine._collect(run, _event("runner_on_ok", done), False)
    assert run.results["removal_plan"] == {"step": "plan", "items": PLAN_ITEMS, "kept": KEPT, "changed": False}
    assert run.results["removal"] == {"step": "take_back", "items": PLAN_ITEMS[:2], "kept": KEPT, "changed": True}


def test_engine_files_a_failed_step_by_its_invocation_when_the_result_has_no_step(tmp_path):
    run = engine.RunResult(check=False, run_id="r", artifacts=tmp_path, log=tmp_path / "stdout")
    failed = {"failed": True, "msg": "apt-get failed", "invocation": {"module_args": {"step": "take_back"}}}
    engine._collect(run, _event("runner_on_failed", failed), False)
    assert run.results["removal"]["msg"] == "apt-get failed" and "removal_plan" not in run.results
    engine._collect(run, _event("runner_on_ok", {"changed": False}), False)  # no step at all: not filed
    assert set(run.results) == {"removal"}


# --- what it prints and returns -------------------------------------------------------------------------------


def test_an_item_renders_as_action_kind_target_and_detail():
    assert remove.render_item(PLAN_ITEMS[0]) == (
        "restore setting /etc/docker/daemon.json default-runtime (restores runc)"
    )
    assert remove.render_item(PLAN_ITEMS[4]) == "remove file /etc/cdi/gpu-install-nvidia.json"


def test_the_plan_lists_every_item_in_the_modules_order_then_what_stays(tmp_path):
    lines = remove.plan_lines(_result(tmp_path, check=True, plan=PLAN_ITEMS))
    assert lines == [
        "Plan: 5 item(s) to take back",
        "  - restore setting /etc/docker/daemon.json default-runtime (restores runc)",
        "  - remove setting /etc/docker/daemon.json runtimes.nvidia",
        "  - restart unit docker (features.cdi goes)",
        "  - purge package nvidia-container-toolkit (version 1.17.8-1)",
        "  - remove file /etc/cdi/gpu-install-nvidia.json",
        "Stays:",
        "  - docker.io: Docker is never removed",
        "  - nvidia-driver: the driver stays without --driver",
    ]


def test_the_plan_names_the_containers_that_block_removal(tmp_path):
    gpu = {"id": "3f2a", "name": "trainer", "image": "cuda:12", "runtime": "nvidia"}
    lines = remove.plan_lines(_result(tmp_path, check=True, plan=PLAN_ITEMS, blocking=[gpu]))
    assert lines[-2:] == [
        "Blocking (running under the nvidia runtime; stop them first):",
        "  - trainer (cuda:12, runtime nvidia)",
    ]


def test_a_plan_refused_for_running_containers_names_them_and_does_not_say_nothing_to_remove(tmp_path):
    gpu = {"id": "3f2a", "name": "trainer", "image": "cuda:12", "runtime": "nvidia"}
    refused = _result(tmp_path, check=True, plan=[], blocking=[gpu])
    refused.results["removal_plan"]["failed"] = True
    lines = remove.plan_lines(refused)
    assert remove.NOTHING not in lines and "  - trainer (cuda:12, runtime nvidia)" in lines


def test_the_summary_names_what_is_still_there(tmp_path):
    run = _result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS[:4])
    run.results["removal"]["left"] = PLAN_ITEMS[4:]
    lines = remove.summary_lines(run)
    i = lines.index("Still there (run remove again):")
    assert lines[i + 1] == "  - remove file /etc/cdi/gpu-install-nvidia.json"


def test_an_empty_plan_says_gpu_install_changed_nothing(tmp_path):
    assert remove.plan_lines(_result(tmp_path, check=True, plan=[]))[0] == remove.NOTHING


def test_the_summary_counts_what_went_names_what_stays_and_the_log(tmp_path):
    lines = remove.summary_lines(_result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS))
    assert lines[0] == "Removed: 5 item(s)"
    assert lines[1:6] == [f"  - {remove.render_item(i)}" for i in PLAN_ITEMS]
    assert lines[6:9] == [
        "Stays:",
        "  - docker.io: Docker is never removed",
        "  - nvidia-driver: the driver stays without --driver",
    ]
    assert lines[-1] == f"Summary: 5 removed, 0 failed, reboot required: no, 12.5s. Log: {tmp_path / 'stdout'}"
    assert not any(line.startswith("Reboot") for line in lines)


def test_the_summary_asks_for_a_reboot_when_the_driver_went(tmp_path):
    driver = [{"kind": "driver", "target": "nvidia-current", "action": "remove", "detail": "DKMS module"}]
    lines = remove.summary_lines(_result(tmp_path, check=False, plan=driver, done=driver, reboot_required=True))
    assert "Reboot to finish: " + remove.DRIVER_REBOOT_REASON in lines
    assert lines[-1].startswith("Summary: 1 removed, 0 failed, reboot required: yes")


def test_json_carries_the_plan_what_was_done_and_what_stays(tmp_path):
    real = _result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS[:3])
    assert remove.removal_json(real) == {"removal": {"plan": PLAN_ITEMS, "done": PLAN_ITEMS[:3], "kept": KEPT}}
    check = _result(tmp_path, check=True, plan=PLAN_ITEMS, done=PLAN_ITEMS)  # a check run takes nothing back
    assert remove.removal_json(check) == {"removal": {"plan": PLAN_ITEMS, "done": [], "kept": KEPT}}


# --- the command: when it asks, what it runs ------------------------------------------------------------------


class Runs:
    """Stands in for engine.run_playbook: records each call and returns the next prepared RunResult."""

    def __init__(self, *results: engine.RunResult) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, dict, bool]] = []

    def __call__(self, playbook: str, values: dict, *, check: bool, progress: Any = None) -> engine.RunResult:
        self.calls.append((playbook, dict(values), check))
        return self.results.pop(0)


@pytest.fixture
def host(monkeypatch, tmp_path):
    """Root's path through remove without a settings file, with its lock and logs under tmp_path."""
    monkeypatch.setattr(settings, "DEFAULT_PATH", tmp_path / "absent.yml")
    monkeypatch.setattr(_common, "LOCK_PATH", tmp_path / "gpu-install.lock")
    monkeypatch.setenv("GPU_INSTALL_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setattr(remove, "require_root", lambda command: None)  # root or not, whoever runs the tests

    def install(*results: engine.RunResult) -> Runs:
        runs = Runs(*results)
        monkeypatch.setattr(engine, "run_playbook", runs)
        return runs

    return install


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("argv", [["remove"], ["remove", "--driver"], ["remove", "--json"]])
def test_remove_without_yes_where_it_cannot_ask_is_usage_exit_2_and_runs_nothing(host, capsys, argv):
    runs = host()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and runs.calls == []
    reason = "remove needs --yes when it cannot ask (no terminal, or --json)."
    if "--json" in argv:
        assert json.loads(out) == {"schema": 1, "error": {"code": 2, "reason": reason}}
    else:
        assert err == f"gpu-install: error: {reason}\n"


def test_check_runs_the_remove_playbook_once_in_check_mode_and_prints_the_plan(host, capsys, tmp_path):
    runs = host(_result(tmp_path, check=True, plan=PLAN_ITEMS))
    rc = cli.main(["remove", "--check", "--driver"])
    out, _err = capsys.readouterr()
    assert rc == 0
    assert [(p, v["gpu_install_remove_driver"], c) for p, v, c in runs.calls] == [
        ("gpu_install.nvidia.remove", True, True)
    ]
    assert out.splitlines() == remove.plan_lines(_result(tmp_path, check=True, plan=PLAN_ITEMS))


def test_check_with_a_blocking_container_exits_with_the_plans_error(host, capsys, tmp_path):
    gpu = {"id": "3f2a", "name": "trainer", "image": "cuda:12", "runtime": "nvidia"}
    failure = {
        "host": "localhost",
        "task": "Refuse",
        "error": {"gpu_install_error": {"code": 6, "reason": "trainer runs under nvidia."}, "msg": "x"},
    }
    plan = _result(tmp_path, check=True, plan=PLAN_ITEMS, blocking=[gpu], failures=[failure], status="failed", rc=2)
    host(plan)
    rc = cli.main(["remove", "--check"])
    out, err = capsys.readouterr()
    assert rc == 6 and "  - trainer (cuda:12, runtime nvidia)" in out and "trainer runs under nvidia." in err


def test_yes_runs_once_for_real_and_summarises(host, capsys, tmp_path):
    runs = host(_result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS))
    rc = cli.main(["remove", "--yes"])
    out, _err = capsys.readouterr()
    assert rc == 0
    assert [(p, v["gpu_install_remove_driver"], c) for p, v, c in runs.calls] == [
        ("gpu_install.nvidia.remove", False, False)
    ]
    assert out.splitlines()[0] == "Removed: 5 item(s)" and "Summary: 5 removed" in out


def test_asking_shows_the_plan_and_no_means_nothing_changes(host, capsys, monkeypatch, tmp_path):
    runs = host(_result(tmp_path, check=True, plan=PLAN_ITEMS))
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    rc = cli.main(["remove"])
    out, _err = capsys.readouterr()
    assert rc == 0 and [c for _p, _v, c in runs.calls] == [True]
    assert "  - purge package nvidia-container-toolkit (version 1.17.8-1)" in out
    assert "Remove these? [y/N] " in out and out.rstrip().endswith("Nothing was changed.")


def test_asking_and_yes_takes_back_after_the_plan(host, capsys, monkeypatch, tmp_path):
    runs = host(
        _result(tmp_path, check=True, plan=PLAN_ITEMS),
        _result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS),
    )
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    rc = cli.main(["remove", "--driver"])
    out, _err = capsys.readouterr()
    assert rc == 0 and [(v["gpu_install_remove_driver"], c) for _p, v, c in runs.calls] == [(True, True), (True, False)]
    assert out.index("Plan: 5 item(s)") < out.index("Remove these?") < out.index("Removed: 5 item(s)")


def test_an_empty_plan_asks_nothing_and_exits_0(host, capsys, monkeypatch, tmp_path):
    runs = host(_result(tmp_path, check=True, plan=[]))
    monkeypatch.setattr("sys.stdin", _Terminal(""))  # an answer asked for would hit EOF
    rc = cli.main(["remove"])
    out, _err = capsys.readouterr()
    assert rc == 0 and len(runs.calls) == 1
    assert out.splitlines()[0] == "Nothing to remove: gpu-install changed nothing on this host."
    assert "Remove these?" not in out


def test_a_second_remove_with_yes_says_there_was_nothing_to_remove(host, capsys, tmp_path):
    host(_result(tmp_path, check=False, plan=[], done=[]))
    assert cli.main(["remove", "--yes"]) == 0
    assert capsys.readouterr().out == "Nothing to remove: gpu-install changed nothing on this host.\n"


def test_a_removed_driver_waiting_for_a_reboot_is_exit_9(host, capsys, tmp_path):
    driver = [{"kind": "driver", "target": "nvidia-current", "action": "remove", "detail": "DKMS module"}]
    host(_result(tmp_path, check=False, plan=driver, done=driver, reboot_required=True))
    rc = cli.main(["remove", "--yes", "--driver", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 9
    assert data["error"] == {"code": 9, "reason": remove.DRIVER_REBOOT_REASON, "log": str(tmp_path / "stdout")}
    assert data["reboot_required"] is True


def test_json_result_is_applys_with_the_removal(host, capsys, tmp_path):
    host(_result(tmp_path, check=False, plan=PLAN_ITEMS, done=PLAN_ITEMS[:4]))
    rc = cli.main(["remove", "--yes", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["schema"] == 1 and data["check"] is False and "error" not in data
    assert {"run_id", "changed", "failed", "reboot_required", "changes", "log", "elapsed_s"} <= set(data)
    assert data["removal"] == {"plan": PLAN_ITEMS, "done": PLAN_ITEMS[:4], "kept": KEPT}


def test_check_json_has_the_plan_and_nothing_done(host, capsys, tmp_path):
    host(_result(tmp_path, check=True, plan=PLAN_ITEMS))
    rc = cli.main(["remove", "--check", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["check"] is True
    assert data["removal"] == {"plan": PLAN_ITEMS, "done": [], "kept": KEPT}


def test_an_interrupted_removal_says_to_run_remove_again_not_apply(host, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(signals, "_received", [15])  # SIGTERM arrived while the playbook ran
    host(_result(tmp_path, check=False, plan=PLAN_ITEMS, status="canceled", rc=1, current_task="Purge"))
    rc = cli.main(["remove", "--yes", "--json"])
    reason = json.loads(capsys.readouterr().out)["error"]["reason"]
    assert rc == 143 and reason.startswith("interrupted by SIGTERM in task 'Purge'")
    assert reason.endswith("run remove again to finish.") and "apply" not in reason
