# Copyright: gpu-install contributors
# Apache License 2.0
"""The fleet report of the site and remove playbooks: each host's record, report.json and report.html (stdlib only).

The site playbook records every host's outcome at the end of its run (``host_record``, through the
``gpu_install.nvidia.fleet_record`` action; the remove playbook records a host whose removal went through with
``removed``), and its last play turns the records into rows (``host_row``,
``unreachable_row``, ``not_run_row``) and writes ``report.json`` (``report``) and ``report.html``
(``render_html``) through the ``gpu_install.nvidia.fleet_report`` action. Everything a row says is decided
here, once; the actions only gather their inputs on the controller.
"""

from __future__ import annotations

import html
import json
from typing import Any, Dict, List, Optional

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors

SCHEMA = 1

# Status order in the report: what needs the operator first. ``removed``: the remove playbook took gpu-install's
# changes back from the host (gpu_install.nvidia.remove); the other states are the site playbook's.
STATUSES = ("failed", "unreachable", "changed", "ok", "removed")

# A host the controller could not reach: a host error, as the CLI names the class of a host it cannot work on.
UNREACHABLE_CODE = errors.HOST_ERROR

# The CLI's sentence for a driver that needs a reboot to load (gpu-install apply exits 9).
REBOOT_REASON = errors.REBOOT_REASON
# The sentence for a removed driver whose kernel module is still loaded (gpu-install remove --driver exits 9).
REMOVED_REBOOT_REASON = (
    "the NVIDIA driver was removed, but its kernel module stays loaded until the host restarts: reboot to finish."
)

NOT_RUN_REASON = (
    "not run: the run did not reach this host's batch (it is still running, or it stopped because a whole "
    "batch failed or more than gpu_install_max_fail_percentage percent of the hosts failed)."
)
STOPPED_ANSWERING_REASON = "the host stopped answering during the run (the connection to it was lost)."

ROW_KEYS = (
    "host",
    "status",
    "exit_code",
    "reason",
    "os",
    "docker",
    "engines",
    "driver_version",
    "toolkit_version",
    "gpus",
    "verify",
    "reboot_required",
    "changed",
)


def _text(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    return str(value)


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def host_facts(facts: Any) -> Dict[str, Any]:
    """The report's columns about the host, from the gpu_facts module's facts (as the run left them)."""
    facts = _dict(facts)
    osf = _dict(facts.get("os"))
    docker = _dict(facts.get("docker"))
    driver = _dict(facts.get("driver"))
    toolkit = _dict(facts.get("container_toolkit"))
    os_row = None
    if osf.get("id") or osf.get("name"):
        os_row = {"name": _text(osf.get("name")), "id": _text(osf.get("id")), "version": _text(osf.get("version_id"))}
    docker_row = None
    if docker.get("flavour"):
        docker_row = {"flavour": _text(docker.get("flavour")), "version": _text(docker.get("version"))}
    engines = []
    versions = {
        "docker": docker.get("version"),
        "containerd": _dict(facts.get("containerd")).get("version"),
        "podman": _dict(facts.get("podman")).get("version"),
    }
    for name in facts.get("engines") or []:
        if isinstance(name, str):
            engines.append({"name": name, "version": _text(versions.get(name))})
    driver_version = _text(driver.get("version")) or _text(_dict(driver.get("package")).get("version"))
    gpus = []
    for gpu in facts.get("gpus") or []:
        if isinstance(gpu, dict):
            gpus.append({"name": _text(gpu.get("name")), "uuid": _text(gpu.get("uuid"))})
    return {
        "os": os_row,
        "docker": docker_row,
        "engines": engines,
        "driver_version": driver_version,
        "toolkit_version": _text(toolkit.get("version")),
        "gpus": gpus,
    }


def verify_state(verify_result: Any, image_build: bool) -> Optional[str]:
    """passed, failed, skipped (image builds, a pending reboot) or None (the run did not get there)."""
    if image_build:
        return "skipped"
    result = _dict(verify_result)
    if not result:
        return None
    if result.get("skipped"):
        return "skipped"
    if result.get("failed"):
        return "failed"
    if result.get("verified") is True:
        return "passed"
    return None


def removed_reason(removal: Any) -> str:
    """The sentence for a host whose removal went through, from the removal module's take-back result.

    ``removal``: ``{"items": [...], "kept": [{"target", "why"}, ...]}`` (gpu_install.nvidia.removal, step
    take_back); what stays is named, since an operator retiring the host may want it gone too. Without it
    (None), the sentence counts nothing.
    """
    if not isinstance(removal, dict):
        return "gpu-install's changes were taken back."
    items = [i for i in removal.get("items") or [] if isinstance(i, dict)]
    kept = [k for k in removal.get("kept") or [] if isinstance(k, dict)]
    if items:
        reason = f"gpu-install's changes were taken back ({len(items)} item(s))"
    else:
        reason = "nothing of gpu-install's was left to take back"
    if kept:
        reason += f"; {len(kept)} stay: " + ", ".join(str(k.get("target")) for k in kept)
    return reason + "."


def host_record(
    facts: Any,
    verify_result: Any = None,
    image_build: bool = False,
    reboot_required: bool = False,
    failed_task: Any = None,
    failed_result: Any = None,
    unreachable: Any = None,
    removed: bool = False,
    removal: Any = None,
) -> Dict[str, Any]:
    """What one host recorded at the end of its run (or in its rescue).

    ``failed_task``/``failed_result``: the task that failed and its result (Ansible's ansible_failed_task's
    name and ansible_failed_result). ``unreachable``: the result of the connection check, when the host did
    not answer. ``removed``: the remove playbook took gpu-install's changes back (``removal``: the removal
    module's take-back result, for the reason); verify did not run, and a pending reboot (the driver removed
    with --driver) is exit 9 as the CLI gives it.
    """
    record: Dict[str, Any] = {"outcome": "ok", "exit_code": errors.OK, "reason": None}
    record.update(host_facts(facts))
    record["verify"] = verify_state(verify_result, bool(image_build))
    record["reboot_required"] = bool(reboot_required) and not image_build
    unreachable = _dict(unreachable)
    if unreachable.get("unreachable"):
        msg = " ".join(str(unreachable.get("msg") or "no answer").split())
        msg = msg[len("Task failed: ") :] if msg.startswith("Task failed: ") else msg  # ansible-core 2.19's prefix
        record.update(outcome="unreachable", exit_code=UNREACHABLE_CODE, reason="the host did not answer: " + msg)
        record["verify"] = None
    elif failed_result is not None or failed_task is not None:
        error = errors.task_failure(failed_task, failed_result)
        record.update(outcome="failed", exit_code=error["code"], reason=error["reason"])
    elif removed:
        record.update(outcome="removed", reason=removed_reason(removal), verify=None)
        if record["reboot_required"]:
            record.update(exit_code=errors.REBOOT_REQUIRED, reason=record["reason"] + " " + REMOVED_REBOOT_REASON)
    elif record["reboot_required"]:
        record.update(exit_code=errors.REBOOT_REQUIRED, reason=REBOOT_REASON)
    return record


def host_row(host: str, record: Dict[str, Any], changed: Optional[int]) -> Dict[str, Any]:
    """The report's row for a host that recorded its outcome; ``changed`` from the run's stats (None: unknown)."""
    outcome = record.get("outcome")
    if outcome in ("failed", "unreachable", "removed"):
        status = outcome
    else:
        status = "changed" if changed else "ok"
    row = {key: record.get(key) for key in ROW_KEYS}
    row.update(host=str(host), status=status, changed=changed)
    row["gpus"] = list(record.get("gpus") or [])
    row["engines"] = list(record.get("engines") or [])
    row["reboot_required"] = bool(record.get("reboot_required"))
    return row


def _empty_row(host: str, exit_code: Optional[int], reason: str, changed: Optional[int]) -> Dict[str, Any]:
    row: Dict[str, Any] = {key: None for key in ROW_KEYS}
    row.update(
        host=str(host), status="unreachable", exit_code=exit_code, reason=reason, gpus=[], engines=[], changed=changed
    )
    row["reboot_required"] = False
    return row


def unreachable_row(host: str, changed: Optional[int] = 0, reason: str = STOPPED_ANSWERING_REASON) -> Dict[str, Any]:
    """A host that never recorded its outcome because it stopped answering (``changed``: before it did)."""
    return _empty_row(host, UNREACHABLE_CODE, reason, changed)


def not_run_row(host: str) -> Dict[str, Any]:
    """A host of the play whose batch the run never reached (no code: gpu-install did not run there)."""
    return _empty_row(host, None, NOT_RUN_REASON, 0)


def order(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Failures first, then unreachable, changed, ok and removed hosts; by host name within each."""
    rank = {status: i for i, status in enumerate(STATUSES)}
    return sorted(rows, key=lambda r: (rank.get(str(r.get("status")), len(rank)), str(r.get("host"))))


def report(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """report.json's object: ``{"schema": 1, "hosts": [...]}``, failures first."""
    return {"schema": SCHEMA, "hosts": [{key: row.get(key) for key in ROW_KEYS} for row in order(rows)]}


def counts(data: Dict[str, Any]) -> Dict[str, int]:
    out = {status: 0 for status in STATUSES}
    for row in data.get("hosts") or []:
        if row.get("status") in out:
            out[row["status"]] += 1
    return out


def render_json(data: Dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# --- report.html ----------------------------------------------------------------------------------------------
# One self-contained page: inline CSS, no script, no external asset; every value from a host is escaped.

COLOURS = {"failed": "#c62828", "unreachable": "#6d4c41", "changed": "#ef8f00", "ok": "#2e7d32", "removed": "#546e7a"}
TINTS = {"failed": "#fdecea", "unreachable": "#f4eeeb", "removed": "#eef2f4"}

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px 32px; color: #1d1d1f;
       background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
.sub { color: #555; margin: 0 0 18px; }
.bar { display: flex; height: 34px; border-radius: 6px; overflow: hidden; border: 1px solid #ccc; background: #eee; }
.bar div { display: flex; align-items: center; justify-content: center; color: #fff; font-weight: 600;
           min-width: 28px; white-space: nowrap; overflow: hidden; }
.legend { display: flex; gap: 14px; margin: 12px 0 0; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #ddd; border-left: 6px solid; border-radius: 6px; padding: 8px 14px;
        min-width: 120px; }
.card b { display: block; font-size: 26px; line-height: 1.1; }
.card span { color: #444; }
.failures { background: #fff; border: 1px solid #e0b4b4; border-radius: 6px; padding: 4px 16px 4px 36px; }
.failures li { margin: 8px 0; overflow-wrap: break-word; }
.code { color: #555; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #ddd; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid #e6e6e6;
         overflow-wrap: break-word; }
th { background: #f0f0f0; position: sticky; top: 0; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfbfb; }
td.host { font-weight: 600; white-space: nowrap; }
td.reason { min-width: 28em; }
td.gpus { min-width: 10em; }
td.os { min-width: 8em; }
td.num { text-align: right; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600;
        white-space: nowrap; }
.muted { color: #888; }
.note { background: #fff8e1; border: 1px solid #ffe082; border-radius: 6px; padding: 8px 14px; }
details summary { cursor: pointer; color: #555; font-size: 12px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.scroll { overflow-x: auto; }
td.nw { white-space: nowrap; }
.yes { color: #b35c00; font-weight: 600; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(value: Any) -> str:
    if value is None or value in ("", []):
        return '<span class="muted">-</span>'
    return _e(value)


def _os(row: Dict[str, Any]) -> Any:
    osr = row.get("os") or {}
    return osr.get("name") or " ".join(x for x in (osr.get("id"), osr.get("version")) if x) or None


def _docker(row: Dict[str, Any]) -> Any:
    docker = row.get("docker") or {}
    return " ".join(x for x in (docker.get("flavour"), docker.get("version")) if x) or None


def _engines(row: Dict[str, Any]) -> Any:
    """The engines configured, e.g. "docker 26.1.5, containerd 1.7.24"."""
    names = []
    for engine in row.get("engines") or []:
        if isinstance(engine, dict) and engine.get("name"):
            names.append(" ".join(str(x) for x in (engine.get("name"), engine.get("version")) if x))
    return ", ".join(names) or None


def _gpus(row: Dict[str, Any]) -> str:
    """GPUs counted by model, their UUIDs folded away (a host may have eight)."""
    gpus = [g for g in row.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        return '<span class="muted">-</span>'
    models: Dict[str, int] = {}
    for gpu in gpus:
        name = str(gpu.get("name") or "NVIDIA GPU")
        models[name] = models.get(name, 0) + 1
    lines = "<br>".join(f"{n} &times; {_e(name)}" for name, n in models.items())
    uuids = "<br>".join(f"<code>{_e(g.get('uuid') or '-')}</code>" for g in gpus)
    return f"{lines}<details><summary>UUIDs</summary>{uuids}</details>"


def _pill(status: Any) -> str:
    colour = COLOURS.get(str(status), "#555")
    return f'<span class="pill" style="background:{colour}">{_e(status)}</span>'


def _code(code: Any) -> str:
    """The exit code and what it means (README's table), e.g. "exit 4: invalid input (settings, malformed files)"."""
    if code is None:
        return ""
    meaning = errors.EXIT_CODES.get(code) if isinstance(code, int) else None
    return f"exit {_e(code)}: {_e(meaning)}" if meaning else f"exit {_e(code)}"


def _tinted(status: Any, cell: str) -> str:
    tint = TINTS.get(str(status))
    return cell.replace("<td", f'<td style="background:{tint}"', 1) if tint else cell


def render_html(
    data: Dict[str, Any],
    title: str = "gpu-install fleet report",
    note: Optional[str] = None,
    written: Optional[str] = None,
) -> str:
    """report.html: counts by state as a stacked bar, failures first, then every host with every column."""
    rows = data.get("hosts") or []
    total = len(rows)
    tally = counts(data)
    sub = f"{total} host{'' if total == 1 else 's'}"
    if written:
        sub += f" &middot; written {_e(written)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{sub} &middot; report.json schema {_e(data.get("schema"))}</p>',
    ]
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')
    # The picture: one stacked bar, a segment per state in proportion to its hosts, then the counts. A site run's
    # report has no removed host: that state shows only where one is.
    shown = [s for s in STATUSES if s != "removed" or tally[s]]
    label = _e(", ".join(f"{tally[s]} {s}" for s in shown))
    parts.append(f'<div class="bar" role="img" aria-label="{label}">')
    for status in shown:
        if tally[status]:
            n = tally[status]
            parts.append(f'<div style="flex:{n} 1 0;background:{COLOURS[status]}" title="{n} {status}">{n}</div>')
    if not total:
        parts.append('<div style="flex:1;background:#999">no hosts</div>')
    parts.append("</div>")
    parts.append('<div class="legend">')
    for status in shown:
        parts.append(
            f'<div class="card" style="border-left-color:{COLOURS[status]}">'
            f"<b>{tally[status]}</b><span>{status}</span></div>"
        )
    parts.append("</div>")

    # Failed and unreachable hosts, and those that converged but need something (a reboot: exit 9).
    problems = [r for r in rows if r.get("status") in ("failed", "unreachable") or r.get("exit_code") not in (0, None)]
    if problems:
        parts.append(f"<h2>Needs attention ({len(problems)})</h2>")
        parts.append('<ul class="failures">')
        for row in problems:
            code = _code(row.get("exit_code"))
            parts.append(
                f"<li>{_pill(row.get('status'))} <b>{_e(row.get('host'))}</b>"
                + (f' <span class="code">({code})</span>' if code else "")
                + f"<br>{_cell(row.get('reason'))}</li>"
            )
        parts.append("</ul>")

    parts.append("<h2>Hosts</h2>")
    # What an operator scans for comes first (state, verify, reboot, versions); the long texts (OS name, reason)
    # last, and a narrow window scrolls the table, not the page.
    headers = ("host", "status", "exit", "verify", "reboot", "changed", "driver", "toolkit", "GPUs", "Docker",
               "engines", "OS", "reason")  # fmt: skip
    parts.append(
        '<div class="scroll"><table><thead><tr>{}</tr></thead><tbody>'.format("".join(f"<th>{h}</th>" for h in headers))
    )
    for row in rows:
        status = row.get("status")
        code = row.get("exit_code")
        reboot = '<span class="yes">yes</span>' if row.get("reboot_required") else "no"
        cells = [
            f'<td class="host">{_e(row.get("host"))}</td>',
            f"<td>{_pill(status)}</td>",
            f'<td class="num" title="{_code(code)}">{_cell(code)}</td>',
            f"<td>{_cell(row.get('verify'))}</td>",
            f"<td>{reboot}</td>",
            f'<td class="num">{_cell(row.get("changed"))}</td>',
            f'<td class="nw">{_cell(row.get("driver_version"))}</td>',
            f'<td class="nw">{_cell(row.get("toolkit_version"))}</td>',
            f'<td class="gpus">{_gpus(row)}</td>',
            f'<td class="nw">{_cell(_docker(row))}</td>',
            f"<td>{_cell(_engines(row))}</td>",
            f'<td class="os">{_cell(_os(row))}</td>',
            f'<td class="reason">{_cell(row.get("reason"))}</td>',
        ]
        parts.append("<tr>" + "".join(_tinted(status, c) for c in cells) + "</tr>")
    parts.append("</tbody></table></div></body></html>")
    return "\n".join(parts) + "\n"
