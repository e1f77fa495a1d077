"""The containerd merge proved with the real binaries: Debian trixie's containerd 1.7 and sid's 2.1
(tests/fixtures/containerd_bins.py).

For every config.toml of tests/unit/containerd_corpus and each binary that reads its version, in a temporary
directory (the corpus' /etc/containerd/ paths rewritten below it, for this test only):
``containerd --config config.toml config dump`` before and after gpu-install's merge (config.toml edited, drop-in
written, by the module_utils the module runs) must be equal except for the keys gpu-install sets (its runtime
entry, the default runtime name when asked or when it named our runtime, enable_cdi and cdi_spec_dirs, and the
top-level imports), the user's other runtimes and sandbox image survive, config.toml changes by one line at most,
and a second merge changes nothing. ``config dump`` loads and merges a configuration without a running daemon.

The evidence tests show what each containerd does with imported files (docs/containerd.md cites them). The last
test runs the module_utils in a systemd trixie host with Debian's containerd (a layer of tests/integration/hosts.py):
restart, a restart left pending by a killed run, and the rollback when containerd does not start.
"""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path

import pytest
import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))
from fixtures import containerd_bins  # noqa: E402
from gpu_install.collection import module_utils  # noqa: E402

ct = module_utils("containerd")

CORPUS = Path(__file__).resolve().parents[1] / "unit" / "containerd_corpus"
FILES = sorted(p.name for p in CORPUS.glob("*.toml"))
# The config versions each binary reads with their CRI settings (containerd 2.1 ignores a version 1 file's).
READS = {"trixie": (1, 2), "sid": (2, 3)}
# Where each binary's `config dump` (its own config version) keeps the CRI runtime section and the sandbox image.
RUNTIME_PLUGIN = {"trixie": "io.containerd.grpc.v1.cri", "sid": "io.containerd.cri.v1.runtime"}
SANDBOX = {"trixie": ("io.containerd.grpc.v1.cri", "sandbox_image"),
           "sid": ("io.containerd.cri.v1.images", "pinned_images", "sandbox")}  # fmt: skip
MODES = {
    "runtime": ct.Options(mode="runtime"),
    "runtime-default": ct.Options(mode="runtime", default_runtime=True),
    "cdi": ct.Options(mode="cdi"),
}
CRI_OFF = {"docker-containerd-io.toml"}  # disabled_plugins = ["cri"]: config dump leaves the CRI section out


def cases() -> list:
    out = []
    for name in FILES:
        version = ct.config_version(tomllib.loads((CORPUS / name).read_text()))
        for suite, reads in READS.items():
            if version in reads:
                out += [pytest.param(name, suite, mode, id=f"{name}-{suite}-{mode}") for mode in MODES]
    return out


def containerd(suite: str) -> str:
    return str(containerd_bins.binaries(suite) / "containerd")


def dump(suite: str, config: Path) -> dict:
    found, why = ct.config_dump(containerd(suite), str(config))
    assert found is not None, why
    return found


def install(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The corpus file at tmp/etc/containerd/config.toml, its /etc/containerd/ paths below tmp; the site file and
    runtimes directory its imports name exist (the site file sets a CRI key of its own, merged before ours)."""
    etc = tmp_path / "etc" / "containerd"
    (etc / "runtimes").mkdir(parents=True)
    text = (CORPUS / name).read_bytes().decode()
    version = ct.config_version(tomllib.loads(text)) or 1
    plugin = ct.SCHEMAS[version].plugin
    (etc / "site.toml").write_text(
        f'version = {version}\n[plugins."{plugin}"]\n  max_container_log_line_size = 12345\n'
    )
    config = etc / "config.toml"
    config.write_bytes(text.replace("/etc/containerd/", f"{etc}/").encode())
    return config, etc / "conf.d" / "99-gpu-install.toml"


def without_ours(d: dict, suite: str, options: ct.Options, was_default: object) -> dict:
    d = ct.deep_copy(d)
    d.pop("imports", None)
    section = d["plugins"][RUNTIME_PLUGIN[suite]]
    section["containerd"]["runtimes"].pop(options.runtime_name, None)
    if options.default_runtime or was_default == options.runtime_name:
        section["containerd"].pop("default_runtime_name", None)
    section.pop("enable_cdi", None)
    section.pop("cdi_spec_dirs", None)
    return d


@pytest.mark.parametrize(("name", "suite", "mode"), cases())
def test_merge_keeps_everything_but_our_keys_in_containerds_own_view(tmp_path, name, suite, mode):
    config, drop_in = install(tmp_path, name)
    options = MODES[mode]
    original = config.read_bytes()
    before = dump(suite, config)
    if name in CRI_OFF:
        result = ct.configure(str(config), str(drop_in), options, restart=False, containerd_path=containerd(suite))
        assert result["changed"] and "disables containerd's CRI plugin" in result["warnings"][0]
        after = dump(suite, config)
        assert RUNTIME_PLUGIN[suite] not in after["plugins"] and after.pop("imports") != before.pop("imports")
        assert after == before
        assert tomllib.loads(drop_in.read_text())["plugins"][ct.SCHEMAS[result["config_version"]].plugin]
        return

    result = ct.configure(str(config), str(drop_in), options, restart=False, containerd_path=containerd(suite))
    after = dump(suite, config)
    section = after["plugins"][RUNTIME_PLUGIN[suite]]
    runtimes = section["containerd"]["runtimes"]
    was_default = before["plugins"][RUNTIME_PLUGIN[suite]]["containerd"].get("default_runtime_name")

    assert without_ours(after, suite, options, was_default) == without_ours(before, suite, options, was_default)
    old_runtimes = before["plugins"][RUNTIME_PLUGIN[suite]]["containerd"]["runtimes"]
    for other, entry in old_runtimes.items():
        if other != options.runtime_name:
            assert runtimes[other] == entry, other
    assert ct.get_path(after["plugins"], SANDBOX[suite]) == ct.get_path(before["plugins"], SANDBOX[suite])
    if options.mode == "runtime":
        assert runtimes[options.runtime_name]["options"]["BinaryName"] == ct.NVIDIA_RUNTIME_PATH
        template = ct.template_runtime(before["plugins"][RUNTIME_PLUGIN[suite]], ct.SCHEMAS[3], options.runtime_name)
        ours = {k: v for k, v in runtimes[options.runtime_name]["options"].items() if k != "BinaryName"}
        copied = template.get("options", {})
        assert ours.items() <= copied.items()  # the user's runc options, as containerd sees them
        assert ours.get("SystemdCgroup", False) == copied.get("SystemdCgroup", False)
    expected_default = options.runtime_name if options.default_runtime else (
        "runc" if was_default == options.runtime_name else was_default)  # fmt: skip
    assert section["containerd"].get("default_runtime_name") == expected_default
    assert section["enable_cdi"] is True
    assert set(ct.CDI_SPEC_DIRS) <= set(section["cdi_spec_dirs"])

    lines = original.decode().splitlines(True), config.read_bytes().decode().splitlines(True)
    changed = [line for line in difflib.ndiff(*lines) if line[:2] in ("+ ", "- ")]
    assert len([c for c in changed if c.startswith("+ ")]) <= 1 and len([c for c in changed if c.startswith("- ")]) <= 1
    file_version = ct.config_version(tomllib.loads(original.decode()))
    assert result["config_version"] == file_version  # the drop-in speaks config.toml's version
    assert result["plugin_id"] == ct.SCHEMAS[file_version].plugin

    files = {p: p.read_bytes() for p in (config, drop_in) if p.exists()}
    again = ct.configure(str(config), str(drop_in), options, restart=False, containerd_path=containerd(suite))
    assert again["changed"] is False and again["diff"] == []
    assert {p: p.read_bytes() for p in (config, drop_in) if p.exists()} == files


def test_cdi_mode_on_2_1_removes_the_drop_in_a_runtime_mode_run_left_keeping_its_backup(tmp_path):
    config, drop_in = install(tmp_path, "kubeadm-node-v3.toml")
    before = dump("sid", config)
    first = ct.configure(str(config), str(drop_in), MODES["runtime"], restart=False, containerd_path=containerd("sid"))
    assert first["changed"] and drop_in.is_file()
    written = drop_in.read_text()
    second = ct.configure(str(config), str(drop_in), MODES["cdi"], restart=False, containerd_path=containerd("sid"))
    assert second["changed"] and not drop_in.exists()
    assert Path(second["drop_in_backup_file"]).read_text() == written
    assert [d["before_header"] for d in second["diff"]] == [str(drop_in)] and second["diff"][0]["after"] == ""
    after = dump("sid", config)
    assert after["plugins"][RUNTIME_PLUGIN["sid"]] == before["plugins"][RUNTIME_PLUGIN["sid"]]  # CDI on by default
    again = ct.configure(str(config), str(drop_in), MODES["cdi"], restart=False, containerd_path=containerd("sid"))
    assert again["changed"] is False


def test_cdi_mode_on_1_7_takes_the_runtime_a_runtime_mode_run_registered_out_again(tmp_path):
    config, drop_in = install(tmp_path, "kubeadm-node-v2.toml")
    binary = containerd("trixie")
    ct.configure(str(config), str(drop_in), MODES["runtime-default"], restart=False, containerd_path=binary)
    assert "nvidia" in dump("trixie", config)["plugins"][RUNTIME_PLUGIN["trixie"]]["containerd"]["runtimes"]
    ct.configure(str(config), str(drop_in), MODES["cdi"], restart=False, containerd_path=binary)
    cri = dump("trixie", config)["plugins"][RUNTIME_PLUGIN["trixie"]]
    assert "nvidia" not in cri["containerd"]["runtimes"] and cri["containerd"]["default_runtime_name"] == "runc"
    assert cri["enable_cdi"] is True and cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


# --- evidence: what each containerd does with an imported file --------------------------------------------------


def _evidence(tmp_path: Path, suite: str, main: str, imported: str) -> dict:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "x.toml").write_text(imported)
    config = tmp_path / "config.toml"
    config.write_text(main.replace("IMPORTS", f'imports = ["{tmp_path}/conf.d/*.toml"]'))
    return dump(suite, config)


V2_MAIN = """version = 2
IMPORTS
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "example.com/pause:1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
"""
V2_IMPORT = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
"""


def test_containerd_1_7_replaces_the_cri_section_with_an_imported_files_whole(tmp_path):
    cri = _evidence(tmp_path, "trixie", V2_MAIN, V2_IMPORT)["plugins"]["io.containerd.grpc.v1.cri"]
    assert set(cri["containerd"]["runtimes"]) == {"nvidia"}  # kata and containerd's own runc are gone
    assert cri["sandbox_image"] != "example.com/pause:1"  # back to containerd's default


def test_containerd_2_1_merges_an_imported_file_key_by_key(tmp_path):
    plugins = _evidence(tmp_path, "sid", V2_MAIN, V2_IMPORT)["plugins"]
    assert {"kata", "nvidia", "runc"} <= set(plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"])
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "example.com/pause:1"


def test_containerd_2_1_ignores_a_version_2_files_cri_settings_under_a_version_3_import(tmp_path):
    v3_import = V2_IMPORT.replace("version = 2", "version = 3").replace(
        "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"
    )
    plugins = _evidence(tmp_path, "sid", V2_MAIN, v3_import)["plugins"]
    assert "kata" not in plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] != "example.com/pause:1"


def test_containerd_1_7_refuses_a_version_2_import_under_a_version_1_file(tmp_path):
    v1_main = V2_MAIN.replace("version = 2\n", "").replace("io.containerd.grpc.v1.cri", "cri")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "x.toml").write_text(V2_IMPORT)
    config = tmp_path / "config.toml"
    config.write_text(v1_main.replace("IMPORTS", f'imports = ["{tmp_path}/conf.d/*.toml"]'))
    found, why = ct.config_dump(containerd("trixie"), str(config))
    assert found is None and 'invalid plugin key URI "cri"' in why


def test_containerd_1_7_keeps_runc_only_when_a_section_names_no_runtimes(tmp_path):
    imported = V2_IMPORT.replace(
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n  runtime_type = "io.containerd.runc.v2"',
        '[plugins."io.containerd.grpc.v1.cri"]\n  enable_cdi = true',
    )
    cri = _evidence(tmp_path, "trixie", "version = 2\nIMPORTS\n", imported)["plugins"]["io.containerd.grpc.v1.cri"]
    assert set(cri["containerd"]["runtimes"]) == {"runc"} and cri["enable_cdi"] is True


# --- restart, a restart left pending, rollback: the module_utils in a systemd host with Debian's containerd ---------

LAYER = """apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends containerd
containerd --version | grep -q ' 1\\.7\\.'
"""
CONFIG = "/etc/containerd/config.toml"
DROP_IN = "/etc/containerd/conf.d/99-gpu-install.toml"
# FIXTURE: containerd's start fails while gpu-install's drop-in exists (as in test_containerd_role.py).
FAIL_UNIT = "/etc/systemd/system/containerd.service.d/gpuit-fail.conf"
CONFIGURE = """import json, sys
from gpu_install.collection import module_utils
ct = module_utils("containerd")
try:
    print(json.dumps(ct.configure(restart=sys.argv[1] == "restart", timeout=10)))
except ct.ContainerdError as exc:
    print(json.dumps({"code": exc.code, "reason": exc.reason}))
"""


@pytest.fixture(scope="module")
def systemd_host(host_factory):
    from hosts import ensure_layer

    host = host_factory("trixie", image=ensure_layer("trixie", "containerd-module", LAYER),
                        tmpfs=("/var/lib/containerd:exec",))  # fmt: skip
    try:
        yield host
    finally:
        host_factory.remove(host)


def _configure(host, how: str) -> dict:
    import json

    from hosts import VENV

    host.put("/root/configure.py", CONFIGURE.encode())
    return json.loads(host.run([f"{VENV}/bin/python", "/root/configure.py", how]).stdout)


def _main_pid(host) -> str:
    return str(host.run(["systemctl", "show", "-p", "MainPID", "--value", "containerd"]).stdout.strip())


def _fresh(host, config: bytes) -> None:
    host.run(["sh", "-c", f"rm -rf /etc/containerd/conf.d /etc/containerd/*.bak {FAIL_UNIT}; systemctl daemon-reload"])
    host.put(CONFIG, config)
    host.run(["systemctl", "restart", "containerd"])
    host.run(["sh", "-c", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1"])


def test_containerd_is_restarted_a_pending_restart_is_caught_and_a_failed_start_is_rolled_back(systemd_host):
    host = systemd_host
    config = (CORPUS / "kubeadm-node-v2.toml").read_bytes()
    _fresh(host, config)
    pid = _main_pid(host)
    done = _configure(host, "restart")
    assert done["changed"] and done["restarted"], done
    assert _main_pid(host) != pid and "nvidia" in host.run(["containerd", "config", "dump"]).stdout
    pid = _main_pid(host)
    again = _configure(host, "restart")
    assert again["changed"] is False and again["restarted"] is False and _main_pid(host) == pid

    # A run killed between its write and the restart leaves the files newer than the running containerd.
    _fresh(host, config)
    time.sleep(1.2)
    assert _configure(host, "no-restart")["restarted"] is False
    pid = _main_pid(host)
    pending = _configure(host, "restart")
    assert pending["changed"] is True and pending["restarted"] is True and _main_pid(host) != pid, pending
    assert _configure(host, "restart")["changed"] is False

    # containerd does not start with the new configuration: both files back, containerd running the old one.
    _fresh(host, config)
    host.put(FAIL_UNIT, f"[Service]\nExecStartPre=/bin/sh -c 'test ! -e {DROP_IN}'\n".encode())
    host.run(["systemctl", "daemon-reload"])
    failed = _configure(host, "restart")
    assert failed["code"] == 7 and failed["reason"].startswith("containerd did not come back"), failed
    assert host.get(CONFIG) == config
    assert host.run(["ls", "-A", "/etc/containerd"]).stdout.split() == ["config.toml"]  # no drop-in, backup, conf.d
    assert host.run(["systemctl", "is-active", "containerd"], check=False).stdout.strip() == "active"
    host.run(["sh", "-c", f"rm -f {FAIL_UNIT}; systemctl daemon-reload"])
