"""The fleet report: host records, report.json's schema, report.html, and the site playbook's batch settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import module_utils

from gpu_install import engine, settings
from gpu_install.collection import collections_path

REPO = Path(__file__).resolve().parents[2]
fleet = module_utils("fleet_report")

# What gpu_facts gives on a bookworm host with docker.io, the toolkit and one GPU (trimmed to what the report reads,
# plus keys it must ignore).
FACTS = {
    "schema": 1,
    "os": {"id": "debian", "version_id": "12", "codename": "bookworm", "name": "Debian GNU/Linux 12 (bookworm)"},
    "docker": {
        "flavour": "docker.io",
        "version": "20.10.24",
        "package": {"name": "docker.io", "version": "20.10.24+dfsg1-1"},
    },
    "driver": {"loaded": True, "version": "535.261.03", "flavour": "proprietary", "package": None},
    "container_toolkit": {"installed": True, "version": "1.17.8", "package": {"name": "nvidia-container-toolkit"}},
    "containerd": {"present": True, "package": "containerd", "version": "1.6.20", "cri_enabled": True, "kubelet": True},
    "podman": {"present": False, "version": None, "cdi": False},
    "engines": ["docker", "containerd"],
    "gpus": [
        {
            "pci_address": "0000:00:06.0",
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca",
        }
    ],
    "problems": [],
}
HOSTILE_HOST = '<script>alert("x")</script>&"gpu"\'-1'
HOSTILE_REASON = '<img src=x onerror="alert(1)"> daemon.json & </td></tr><tr><td>forged'


def test_a_converged_host_records_its_facts_and_a_passed_verify():
    record = fleet.host_record(FACTS, verify_result={"changed": False, "verified": True})
    row = fleet.host_row("gpu-1", record, changed=3)
    assert row == {
        "host": "gpu-1",
        "status": "changed",
        "exit_code": 0,
        "reason": None,
        "os": {"name": "Debian GNU/Linux 12 (bookworm)", "id": "debian", "version": "12"},
        "docker": {"flavour": "docker.io", "version": "20.10.24"},
        "engines": [{"name": "docker", "version": "20.10.24"}, {"name": "containerd", "version": "1.6.20"}],
        "driver_version": "535.261.03",
        "toolkit_version": "1.17.8",
        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca"}],
        "verify": "passed",
        "reboot_required": False,
        "changed": 3,
    }
    assert fleet.host_row("gpu-1", record, changed=0)["status"] == "ok"


def test_a_classified_failure_keeps_its_code_and_reason():
    result = {"failed": True, "msg": "x", "gpu_install_error": {"code": 4, "reason": "daemon.json is not JSON."}}
    record = fleet.host_record(FACTS, failed_task="Merge daemon.json", failed_result=result)
    row = fleet.host_row("gpu-2", record, changed=2)
    assert (row["status"], row["exit_code"], row["reason"], row["changed"]) == (
        "failed",
        4,
        "daemon.json is not JSON.",
        2,
    )
    assert row["verify"] is None  # the run never got there


@pytest.mark.parametrize(
    "result,reason",
    [
        ({"msg": "non-zero return code", "stderr": "oops"}, "task 'Do it' failed: non-zero return code"),
        ({"msg": "", "stderr": "oops"}, "task 'Do it' failed: oops"),
        ({}, "task 'Do it' failed: a task failed"),
        ({"msg": "m", "gpu_install_error": {"code": 42, "reason": "no such class"}}, "task 'Do it' failed: m"),
        ({"msg": "m", "gpu_install_error": "not a record"}, "task 'Do it' failed: m"),
    ],
)
def test_an_unclassified_failure_is_exit_1_naming_the_task_as_the_cli_says_it(result, reason, tmp_path):
    record = fleet.host_record(FACTS, failed_task="Do it", failed_result=result)
    assert (record["exit_code"], record["reason"]) == (1, reason)
    # The CLI, from the same task's failed event.
    run = engine.RunResult(check=False, run_id="r", artifacts=tmp_path, log=tmp_path / "stdout")
    engine._collect(run, {"event": "runner_on_failed", "event_data": {"task": "Do it", "res": result}}, False)
    err = run.error()
    assert err is not None and (err.code, err.reason) == (1, reason)


def test_a_host_that_did_not_answer_is_unreachable_with_exit_10():
    probe = {
        "unreachable": True,
        "msg": "Task failed: Failed to connect to the host via ssh: ssh: connect to host 192.0.2.9:\n timed out",
    }
    record = fleet.host_record(
        {}, image_build=True, failed_task="Stop here", failed_result={"msg": "x"}, unreachable=probe
    )
    row = fleet.host_row("gone", record, changed=0)
    assert (row["status"], row["exit_code"]) == ("unreachable", 10)
    assert row["reason"].startswith("the host did not answer: Failed to connect") and "\n" not in row["reason"]
    assert row["os"] is None and row["gpus"] == [] and row["verify"] is None


def test_a_host_the_run_never_reached_or_lost_is_unreachable():
    lost = fleet.unreachable_row("lost", changed=4)
    assert (lost["status"], lost["exit_code"], lost["changed"]) == ("unreachable", 10, 4)
    never = fleet.not_run_row("later")
    assert (never["status"], never["exit_code"], never["changed"]) == ("unreachable", None, 0)
    assert never["reason"].startswith("not run:")


def test_an_image_build_skips_verify_and_never_reports_a_reboot():
    record = fleet.host_record(FACTS, verify_result={"skipped": True}, image_build=True, reboot_required=True)
    assert (record["verify"], record["reboot_required"], record["exit_code"]) == ("skipped", False, 0)
    assert fleet.host_record(FACTS, verify_result=None, image_build=True)["verify"] == "skipped"


def test_a_pending_reboot_is_exit_9_with_the_clis_sentence():
    record = fleet.host_record(FACTS, verify_result={"skipped": True}, reboot_required=True)
    assert (record["verify"], record["reboot_required"], record["exit_code"]) == ("skipped", True, 9)
    assert record["reason"] == "the driver change needs a reboot to finish: reboot, then run gpu-install apply again."
    apply_py = (REPO / "installer" / "gpu_install" / "commands" / "apply.py").read_text()
    assert "codes.REBOOT_REQUIRED, codes.REBOOT_REASON" in apply_py, "apply's exit 9 no longer says the shared sentence"


def test_a_failed_verify_is_reported_as_failed():
    result = {"failed": True, "verified": False, "gpu_install_error": {"code": 8, "reason": "GPU-1 not seen."}}
    record = fleet.host_record(FACTS, verify_result=result, failed_task="Prove", failed_result=result)
    assert (record["verify"], record["exit_code"]) == ("failed", 8)


def _four_states() -> list[dict]:
    ok = fleet.host_row("b-ok", fleet.host_record(FACTS, {"verified": True}), 0)
    changed = fleet.host_row("a-changed", fleet.host_record(FACTS, {"verified": True}), 7)
    failed = fleet.host_row(
        HOSTILE_HOST,
        fleet.host_record(
            FACTS, failed_task="t", failed_result={"gpu_install_error": {"code": 4, "reason": HOSTILE_REASON}}
        ),
        1,
    )
    gone = fleet.host_row("c-gone", fleet.host_record({}, unreachable={"unreachable": True, "msg": "no route"}), 0)
    return [ok, changed, gone, failed]


def test_report_json_has_exactly_the_schema_and_lists_failures_first():
    data = fleet.report(_four_states())
    assert set(data) == {"schema", "hosts"} and data["schema"] == 1
    assert [h["status"] for h in data["hosts"]] == ["failed", "unreachable", "changed", "ok"]
    for row in data["hosts"]:
        assert list(row) == list(fleet.ROW_KEYS)
        assert row["status"] in ("ok", "changed", "failed", "unreachable")
        assert isinstance(row["gpus"], list) and isinstance(row["reboot_required"], bool)
        assert row["exit_code"] is None or isinstance(row["exit_code"], int)
        assert row["verify"] in (None, "passed", "failed", "skipped")
    assert json.loads(fleet.render_json(data)) == data
    assert fleet.counts(data) == {"failed": 1, "unreachable": 1, "changed": 1, "ok": 1, "removed": 0}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_escapes_hostile_hostnames_and_reasons():
    page = fleet.render_html(fleet.report(_four_states()))
    assert HOSTILE_HOST not in page and HOSTILE_REASON not in page
    parsed = _Page()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not any(name.startswith("on") for name, _ in parsed.attrs)
    text = "".join(parsed.text)
    assert HOSTILE_HOST in text and HOSTILE_REASON in text  # shown as text, whole
    assert parsed.tags.count("tr") == 1 + 4  # the header and one row per host: the forged row stayed text


def test_report_html_is_self_contained_with_counts_and_failures_first():
    page = fleet.render_html(fleet.report(_four_states()))
    parsed = _Page()
    parsed.feed(page)
    assert not {"script", "link", "img", "iframe"} & set(parsed.tags)
    assert not {"src", "href"} & {name for name, _ in parsed.attrs}
    assert "url(" not in page.split("</style>")[0] and "@import" not in page
    assert 'aria-label="1 failed, 1 unreachable, 1 changed, 1 ok"' in page
    rows = page[page.index("<tbody>") :]
    order = [rows.index(x) for x in ("&lt;script&gt;", "c-gone", "a-changed", "b-ok")]
    assert order == sorted(order)
    attention = page[page.index("Needs attention") : page.index("<table>")]
    assert "c-gone" in attention and "b-ok" not in attention and "(exit 4: invalid input" in attention


def test_report_html_has_an_engines_column_with_each_engines_version():
    row = fleet.host_row("gpu-1", fleet.host_record(FACTS), changed=0)
    page = fleet.render_html(fleet.report([row]))
    headers = re.findall(r"<th>([^<]*)</th>", page)
    assert headers[headers.index("Docker") + 1] == "engines"
    assert "<td>docker 20.10.24, containerd 1.6.20</td>" in page


def test_a_host_without_detected_engines_has_an_empty_engines_list():
    row = fleet.host_row("gpu-1", fleet.host_record({}), changed=0)
    assert fleet.report([row])["hosts"][0]["engines"] == []
    assert fleet.not_run_row("gpu-2")["engines"] == []


def test_report_html_of_an_empty_fleet_still_renders():
    page = fleet.render_html(fleet.report([]))
    assert "0 hosts" in page and "no hosts" in page


# --- the site playbook's settings ------------------------------------------------------------------------------


def _defaults() -> dict:
    return yaml.safe_load((REPO / "roles" / "gpu_install" / "defaults" / "main.yml").read_text())


def test_site_playbook_falls_back_to_the_roles_defaults_for_its_play_keywords():
    site = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    main = next(play for play in site if play["name"] == "Make hosts run GPU containers")
    defaults = _defaults()
    for keyword, name in (("serial", "gpu_install_serial"), ("max_fail_percentage", "gpu_install_max_fail_percentage")):
        literal = re.fullmatch(r"\{\{ " + name + r" \| default\((.*)\) \}\}", main[keyword])
        assert literal, main[keyword]
        assert yaml.safe_load(literal.group(1)) == defaults[name]
    assert site[-1]["hosts"] == "localhost" and site[-1]["gather_facts"] is False


@pytest.mark.parametrize(
    "text",
    [
        "gpu_install_serial: 1\n",
        "gpu_install_serial: '25%'\n",
        "gpu_install_serial: [1, '10%', '25%']\n",
        "gpu_install_max_fail_percentage: 0\n",
        "gpu_install_drain_delegate_to: k8s-control-1.example\n",
        "gpu_install_drain_delegate_to: ''\n",
    ],
)
def test_batch_and_drain_settings_accept_ordinary_values(tmp_path, text):
    path = tmp_path / "config.yml"
    path.write_text(text)
    values, _source = settings.load(str(path))
    assert values == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text,named",
    [
        ("gpu_install_serial: '1; reboot'\n", "gpu_install_serial"),
        ("gpu_install_serial: [1, 'all']\n", "gpu_install_serial"),
        ("gpu_install_serial: []\n", "gpu_install_serial"),
        ("gpu_install_serial: true\n", "gpu_install_serial"),
        ("gpu_install_serial: {a: 1}\n", "gpu_install_serial"),
        ("gpu_install_max_fail_percentage: 150\n", "gpu_install_max_fail_percentage"),
        ("gpu_install_drain_delegate_to: '-oProxyCommand=x'\n", "gpu_install_drain_delegate_to"),
    ],
)
def test_batch_and_drain_settings_refuse_what_they_cannot_mean(tmp_path, text, named):
    from gpu_install.errors import GpuInstallError

    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(GpuInstallError) as exc:
        settings.load(str(path))
    assert exc.value.code == 4 and named in exc.value.reason


# --- the report action in a real ansible-playbook run ----------------------------------------------------------

PLAYBOOK = """
- name: Hosts that change, fail or never run
  hosts: one:two:three
  gather_facts: false
  tasks:
    - block:
        - name: Change something
          ansible.builtin.command: "true"
          changed_when: true
          loop: [1, 2]
        - name: Change something on one host only
          ansible.builtin.command: "true"
          changed_when: inventory_hostname == 'two'
          notify: a handler
        - name: Fail on one host
          ansible.builtin.command: sh -c 'echo broken >&2; exit 3'
          when: inventory_hostname == 'three'
        - name: Record
          gpu_install.nvidia.fleet_record:
            facts: {}
          register: __gpu_install_outcome
      rescue:
        - name: Record the failure
          gpu_install.nvidia.fleet_record:
            facts: {}
            failed_task: "{{ ansible_failed_task.name }}"
            failed_result: "{{ ansible_failed_result }}"
            fail_host: true
          register: __gpu_install_outcome
  handlers:
    - name: A handler
      ansible.builtin.command: "true"
      changed_when: true
      listen: a handler

- name: Report
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the report
      gpu_install.nvidia.fleet_report:
        hosts: [one, two, three, later]
        dest: "{{ report_dir }}"
"""


def _recap(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s*: ok=\d+\s+changed=(\d+)", out, flags=re.M)}


def test_report_changed_counts_equal_the_play_recap_in_a_real_run(tmp_path):
    """The action finds the run's statistics in the controller's memory: its counts are PLAY RECAP's."""
    inventory = tmp_path / "hosts.ini"
    python = sys.executable
    inventory.write_text(
        "".join(f"{h} ansible_connection=local ansible_python_interpreter={python}\n" for h in ("one", "two", "three"))
        + "later ansible_host=192.0.2.1\n"
    )
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path()),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
    )
    env.pop("GPU_INSTALL_REPORT_DIR", None)
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run(
        [playbook, "-i", str(inventory), str(tmp_path / "pb.yml"),
         "-e", json.dumps({"report_dir": str(tmp_path / "report")})],
        capture_output=True, text=True, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # one host failed
    assert (tmp_path / "report" / "report.json").is_file(), out
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {row["host"]: row for row in data["hosts"]}
    recap = _recap(out)
    assert recap["two"] == 3  # the loop, the one-host task and its handler
    for host in ("one", "two", "three"):
        assert rows[host]["changed"] == recap[host], (host, out)
    assert (rows["one"]["status"], rows["two"]["status"]) == ("changed", "changed")
    assert (rows["three"]["status"], rows["three"]["exit_code"]) == ("failed", 1)
    assert rows["three"]["reason"] == "task 'Fail on one host' failed: non-zero return code"
    assert (rows["later"]["status"], rows["later"]["exit_code"]) == ("unreachable", None)
    assert [row["host"] for row in data["hosts"]][:2] == ["three", "later"]
    assert (tmp_path / "report" / "report.html").read_text().count("<tr>") == 1 + 4


def test_without_the_runs_statistics_the_action_says_so():
    sys.path.insert(0, str(collections_path()))
    from ansible_collections.gpu_install.nvidia.plugins.action import fleet_report as action

    assert action._running_playbook() is None  # no ansible-playbook here


def test_report_html_lists_a_host_waiting_for_a_reboot_among_those_needing_attention():
    waiting = fleet.host_row("needs-reboot", fleet.host_record(FACTS, {"skipped": True}, reboot_required=True), 9)
    page = fleet.render_html(fleet.report([*_four_states(), waiting]))
    attention = page[page.index("Needs attention") : page.index("<table>")]
    assert "needs-reboot" in attention and "exit 9: reboot required to finish" in attention


# --- removal (gpu_install.nvidia.remove) -----------------------------------------------------------------------

REMOVAL = {
    "changed": True,
    "items": [
        {"kind": "setting", "target": "/etc/docker/daemon.json default-runtime", "action": "restore", "detail": "runc"},
        {"kind": "package", "target": "nvidia-container-toolkit", "action": "purge", "detail": "version 1.17.8-1"},
        {"kind": "file", "target": "/etc/cdi/gpu-install-nvidia.json", "action": "remove", "detail": ""},
    ],
    "kept": [{"target": "docker.io", "why": "Docker is never removed"}],
}


def test_a_removed_host_is_status_removed_exit_0_naming_what_went_and_what_stays():
    record = fleet.host_record(FACTS, removed=True, removal=REMOVAL)
    row = fleet.host_row("gpu-1", record, changed=5)
    assert (row["status"], row["exit_code"], row["changed"], row["verify"]) == ("removed", 0, 5, None)
    assert row["reason"] == "gpu-install's changes were taken back (3 item(s)); 1 stay: docker.io."
    # The facts columns are the host's as detected, like any other row.
    assert row["os"]["id"] == "debian" and row["docker"]["flavour"] == "docker.io" and len(row["gpus"]) == 1
    assert list(fleet.report([row])["hosts"][0]) == list(fleet.ROW_KEYS)


def test_a_removed_host_with_nothing_to_take_back_says_so_and_unchanged_is_still_removed():
    row = fleet.host_row("clean", fleet.host_record(FACTS, removed=True, removal={"items": [], "kept": []}), 0)
    assert (row["status"], row["exit_code"]) == ("removed", 0)
    assert row["reason"] == "nothing of gpu-install's was left to take back."


def test_a_removed_host_recorded_without_the_removals_result_claims_no_count():
    row = fleet.host_row("gpu-1", fleet.host_record(FACTS, removed=True), 4)
    assert (row["status"], row["exit_code"], row["reason"]) == ("removed", 0, "gpu-install's changes were taken back.")


def test_a_removed_driver_waiting_for_a_reboot_is_exit_9_with_the_removal_sentence():
    record = fleet.host_record(FACTS, removed=True, removal=REMOVAL, reboot_required=True)
    row = fleet.host_row("gpu-1", record, changed=9)
    assert (row["status"], row["exit_code"], row["reboot_required"]) == ("removed", 9, True)
    assert row["reason"].endswith(" " + fleet.REMOVED_REBOOT_REASON)
    assert "gpu-install apply" not in row["reason"]  # apply's reboot sentence is not removal's


def test_a_failed_removal_is_failed_not_removed():
    result = {"failed": True, "gpu_install_error": {"code": 6, "reason": "containers run under nvidia: gpu."}}
    record = fleet.host_record(FACTS, removed=True, removal=REMOVAL, failed_task="Refuse", failed_result=result)
    assert (fleet.host_row("gpu-1", record, 0)["status"], record["exit_code"]) == ("failed", 6)


def test_removed_hosts_come_after_the_others_and_have_their_own_colour_in_the_html():
    removed = fleet.host_row("0-removed", fleet.host_record(FACTS, removed=True, removal=REMOVAL), 3)
    data = fleet.report([removed, *_four_states()])
    assert [h["status"] for h in data["hosts"]] == ["failed", "unreachable", "changed", "ok", "removed"]
    assert fleet.counts(data)["removed"] == 1
    page = fleet.render_html(data)
    assert 'aria-label="1 failed, 1 unreachable, 1 changed, 1 ok, 1 removed"' in page
    assert 'title="1 removed"' in page and f"background:{fleet.COLOURS['removed']}" in page
    assert f'<td style="background:{fleet.TINTS["removed"]}" class="host">0-removed</td>' in page
    attention = page[page.index("Needs attention") : page.index("<table>")]
    assert "0-removed" not in attention  # exit 0: nothing to do


def test_a_site_runs_report_shows_no_removed_state():
    page = fleet.render_html(fleet.report(_four_states()))
    assert "removed" not in page


REMOVE_PLAYBOOK = """
- name: Hosts whose removal went through, or not
  hosts: gone:stuck
  gather_facts: false
  tasks:
    - block:
        - name: Refuse on one host
          ansible.builtin.fail:
            msg: busy
          when: inventory_hostname == 'stuck'
        - name: Record the removal
          gpu_install.nvidia.fleet_record:
            facts: {}
            removed: true
            removal: {items: [{kind: file, target: /etc/cdi/gpu-install-nvidia.json, action: remove, detail: ""}]}
          register: __gpu_install_outcome
      rescue:
        - name: Record the failure
          gpu_install.nvidia.fleet_record:
            facts: {}
            removed: true
            failed_task: "{{ ansible_failed_task.name }}"
            failed_result: "{{ ansible_failed_result }}"
            fail_host: true
          register: __gpu_install_outcome

- name: Report
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the report
      gpu_install.nvidia.fleet_report:
        hosts: [gone, stuck]
        dest: "{{ report_dir }}"
"""


def test_fleet_record_removed_gives_a_removed_row_in_a_real_run(tmp_path):
    """The action's ``removed`` option through ansible-playbook; a host that failed first stays failed."""
    python = sys.executable
    (tmp_path / "hosts.ini").write_text(
        "".join(f"{h} ansible_connection=local ansible_python_interpreter={python}\n" for h in ("gone", "stuck"))
    )
    (tmp_path / "pb.yml").write_text(REMOVE_PLAYBOOK)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path()),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
    )
    env.pop("GPU_INSTALL_REPORT_DIR", None)
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run(
        [playbook, "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "pb.yml"),
         "-e", json.dumps({"report_dir": str(tmp_path / "report")})],
        capture_output=True, text=True, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # one host failed
    rows = {row["host"]: row for row in json.loads((tmp_path / "report" / "report.json").read_text())["hosts"]}
    assert (rows["gone"]["status"], rows["gone"]["exit_code"]) == ("removed", 0), out
    assert rows["gone"]["reason"] == "gpu-install's changes were taken back (1 item(s))."
    assert (rows["stuck"]["status"], rows["stuck"]["exit_code"]) == ("failed", 1)
