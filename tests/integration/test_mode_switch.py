"""Switching a host between runtime mode and cdi mode, both ways, on a real systemd trixie host through the CLI.

One CDI spec of kind nvidia.com/gpu per host: runtime mode keeps the NVIDIA Container Toolkit's
/var/run/cdi/nvidia.yaml (its nvidia-cdi-refresh units enabled), cdi mode gpu-install's
/etc/cdi/gpu-install-nvidia.json (the toolkit's units masked). Each mode takes the other's back; a spec neither
made is refused (exit 3) before any change.

FIXTURES: tests/fixtures/mirror.py serves NVIDIA's toolkit (built from its source, packaged as NVIDIA packages
it, with the nvidia-cdi-refresh units) in place of NVIDIA's unreachable repository. There is no GPU here, so the
applies are image builds and nothing can generate a spec; the specs are FIXTURE files written where their writers
write them: the toolkit's refresh (/var/run/cdi/nvidia.yaml), gpu-install's `cdi` (/etc/cdi/gpu-install-nvidia.json),
an earlier release's runtime mode (/etc/cdi/nvidia.yaml and its boot unit), and someone else's (/etc/cdi/vendor.yaml).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hosts import Host
from test_docker_role import info
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402
from fixtures.units import LEGACY_CDI_REFRESH_UNIT  # noqa: E402

TOOLKIT_SPEC = "/var/run/cdi/nvidia.yaml"
OWN_SPEC = "/etc/cdi/gpu-install-nvidia.json"
LEGACY_SPEC = "/etc/cdi/nvidia.yaml"
FOREIGN_SPEC = "/etc/cdi/vendor.yaml"
UNIT = "gpu-install-cdi-refresh.service"
TOOLKIT_UNITS = ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service")
RECORD = "/var/lib/gpu-install/container.json"
DAEMON_JSON = "/etc/docker/daemon.json"

# FIXTURE: a spec as `nvidia-ctk cdi generate` writes one (kind nvidia.com/gpu), with no device behind it.
SPEC = "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits: {}\ncontainerEdits: {}\n"
# FIXTURE: the boot unit earlier releases installed in runtime mode, as their nvidia_container role rendered it.
LEGACY_UNIT = LEGACY_CDI_REFRESH_UNIT


def cli(host: Host, settings: dict, *argv: str) -> tuple[int, dict]:
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    host.put("/etc/gpu-install/config.yml", json.dumps(settings))
    proc = host.run(["gpu-install", *argv, "--json"], check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def exists(host: Host, path: str) -> bool:
    return host.run(["test", "-e", path], check=False).returncode == 0


def unit_state(host: Host, unit: str) -> str:
    said = host.run(["systemctl", "is-enabled", unit], check=False).stdout.strip()
    return "absent" if said in ("", "not-found") else said


def state(host: Host) -> dict:
    """What a switch changes: the units, the specs, daemon.json and gpu-install's record."""
    return {
        "units": {u: unit_state(host, u) for u in (*TOOLKIT_UNITS, UNIT)},
        "specs": {p: exists(host, p) for p in (TOOLKIT_SPEC, OWN_SPEC, LEGACY_SPEC)},
        "daemon.json": host.get(DAEMON_JSON).decode() if exists(host, DAEMON_JSON) else None,
        "record": host.get(RECORD).decode() if exists(host, RECORD) else None,
    }


def assert_idempotent(host: Host, settings: dict) -> None:
    rc, again = cli(host, settings, "apply", "--yes", "--full")
    assert rc == 0, again.get("error")
    assert again["changed"] == 0, again["changes"]


def test_a_host_switches_from_runtime_to_cdi_mode_and_back_with_one_nvidia_spec_at_a_time(trixie_host, tmp_path):
    host = trixie_host
    gw = gateway(host)
    # An earlier release's runtime mode left its spec and its boot unit (FIXTURE).
    host.put(LEGACY_SPEC, SPEC)
    host.put(f"/etc/systemd/system/{UNIT}", LEGACY_UNIT)
    host.run(["systemctl", "enable", UNIT])
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        runtime = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        cdi = {**runtime, "nvidia_container_mode": "cdi"}

        # Runtime mode: the toolkit's units keep its spec; the earlier release's spec and unit are taken back.
        rc, result = cli(host, runtime, "apply", "--yes")
        assert rc == 0, result.get("error")
        now = state(host)
        assert now["units"] == {TOOLKIT_UNITS[0]: "enabled", TOOLKIT_UNITS[1]: "enabled", UNIT: "absent"}, now
        assert not now["specs"][LEGACY_SPEC], now
        assert json.loads(now["record"]) == {"schema": 1, "mode": "runtime", "cdi_specs": [TOOLKIT_SPEC]}
        assert json.loads(now["daemon.json"])["default-runtime"] == "nvidia"
        assert info(host)["DefaultRuntime"] == "nvidia"
        assert_idempotent(host, runtime)

        # The toolkit's refresh wrote its spec (FIXTURE), and someone else wrote another: cdi mode refuses the
        # other one only, before any change.
        host.put(TOOLKIT_SPEC, SPEC)
        host.put(FOREIGN_SPEC, SPEC)
        before = state(host)
        rc, refused = cli(host, cdi, "apply", "--yes")
        assert rc == 3, refused
        reason = refused["error"]["reason"]
        assert reason.startswith(FOREIGN_SPEC + " already defines the CDI devices nvidia.com/gpu"), reason
        assert TOOLKIT_SPEC not in reason, reason
        assert state(host) == before
        host.run(["rm", FOREIGN_SPEC])

        # runtime -> cdi: plan shows the switch and changes nothing.
        before = state(host)
        rc, planned = cli(host, cdi, "plan")
        assert rc == 0, planned.get("error")
        tasks = " | ".join(c["task"] for c in planned["changes"])
        for what in ("mask the toolkit's nvidia-cdi-refresh units", "Remove the other mode's CDI specs", "daemon.json"):
            assert what in tasks, tasks
        assert state(host) == before

        rc, result = cli(host, cdi, "apply", "--yes")
        assert rc == 0, result.get("error")
        now = state(host)
        assert now["units"] == {TOOLKIT_UNITS[0]: "masked", TOOLKIT_UNITS[1]: "masked", UNIT: "enabled"}, now
        assert now["specs"] == {TOOLKIT_SPEC: False, OWN_SPEC: False, LEGACY_SPEC: False}, now  # own: at boot
        for unit in TOOLKIT_UNITS:
            assert host.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "inactive", unit
        assert json.loads(now["record"]) == {"schema": 1, "mode": "cdi", "cdi_specs": [OWN_SPEC]}
        daemon = json.loads(now["daemon.json"])
        # runc by name: dockerd's reload ignores a removed default-runtime (moby daemon/reload_unix.go).
        assert daemon["default-runtime"] == "runc", daemon
        # NVIDIA's runtime is still installed: its entry stays for `--runtime nvidia`, no longer the default.
        assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime", daemon
        assert daemon["features"]["cdi"] is True, daemon  # Docker 26 reads CDI specs with features.cdi
        docker = info(host)
        assert docker["DefaultRuntime"] == "runc" and "nvidia" in docker["Runtimes"], docker
        assert_idempotent(host, cdi)

        # cdi -> runtime: gpu-install's spec (FIXTURE, as `gpu-install cdi` writes it at boot) and unit go, the
        # toolkit's units come back.
        host.put(OWN_SPEC, json.dumps({"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": []}))
        before = state(host)
        rc, planned = cli(host, runtime, "plan")
        assert rc == 0, planned.get("error")
        assert state(host) == before
        rc, result = cli(host, runtime, "apply", "--yes")
        assert rc == 0, result.get("error")
        now = state(host)
        assert now["units"] == {TOOLKIT_UNITS[0]: "enabled", TOOLKIT_UNITS[1]: "enabled", UNIT: "absent"}, now
        assert not now["specs"][OWN_SPEC], now
        assert json.loads(now["record"])["mode"] == "runtime"
        assert info(host)["DefaultRuntime"] == "nvidia"
        assert_idempotent(host, runtime)
