"""containerd's configuration (plugins/module_utils/containerd.py) and the gpu_install.nvidia.containerd_config module.

The module tests run the containerd this machine has (Debian 12's 1.6, a dependency of docker.io, which scripts/test
installs) for its version and `config dump`; the merge against containerd 1.7 and 2.1 is proved in
tests/integration/test_containerd_merge.py.
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import string
from pathlib import Path

import pytest
import tomllib
from conftest import ansible_doc, module_utils
from conftest import run_module as _run_module
from hypothesis import given, settings
from hypothesis import strategies as st

ct = module_utils("containerd")

GLOB = "/etc/containerd/conf.d/*.toml"
CORPUS = Path(__file__).resolve().parent / "containerd_corpus"
R16, R17, R2 = ct.release((1, 6, 20)), ct.release((1, 7, 24)), ct.release((2, 1, 9))
KEYS = {"changed", "path", "drop_in", "config_version", "plugin_id", "backup_file", "drop_in_backup_file",
        "restarted", "diff", "msg"}  # fmt: skip


def added(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines only in before, lines only in after), line endings kept."""
    a, b = before.splitlines(True), after.splitlines(True)
    return [x for x in a if x not in b], [x for x in b if x not in a]


# --- the imports line ----------------------------------------------------------------------------------------


def test_import_is_inserted_right_after_version_when_there_is_none():
    text = '# site\nversion = 2 # v2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "p:1"\n'
    after = ct.add_import(text, GLOB)
    assert after == text.replace("# v2\n", f'# v2\nimports = ["{GLOB}"]\n')


def test_import_goes_after_the_last_top_level_key_without_version():
    text = (CORPUS / "docker-containerd-io.toml").read_text()
    after = ct.add_import(text, GLOB)
    assert after.replace(f'imports = ["{GLOB}"]\n', "", 1) == text
    assert after.index("imports") > after.index("disabled_plugins") and tomllib.loads(after)["imports"] == [GLOB]


def test_import_goes_first_in_a_file_with_only_tables():
    text = "[grpc]\n  address = '/run/x.sock'\n"
    assert ct.add_import(text, GLOB) == f'imports = ["{GLOB}"]\n' + text


def test_import_joins_an_empty_single_line_array():
    text = "version = 2\nimports = []\n"
    assert ct.add_import(text, GLOB) == f'version = 2\nimports = ["{GLOB}"]\n'


def test_import_is_appended_to_a_single_line_array_keeping_its_comment():
    text = "version = 2\nimports = ['/etc/site.toml'] # site\n[debug]\nlevel = 'info'\n"
    after = ct.add_import(text, GLOB)
    assert after == text.replace("'/etc/site.toml']", f"'/etc/site.toml', \"{GLOB}\"]")


def test_import_after_a_trailing_comma_in_one_line():
    text = 'imports = ["/a.toml", ]\n'
    assert ct.add_import(text, GLOB) == f'imports = ["/a.toml", "{GLOB}" ]\n'


def test_multi_line_imports_without_trailing_comma_change_on_the_last_items_line():
    text = (CORPUS / "imports-multiline-v2.toml").read_text()
    after = ct.add_import(text, GLOB)
    gone, new = added(text, after)
    assert gone == ['  "/etc/containerd/runtimes/*.toml" # extra runtimes\n']
    assert new == [f'  "/etc/containerd/runtimes/*.toml", "{GLOB}" # extra runtimes\n']
    assert tomllib.loads(after)["imports"][-1] == GLOB


def test_multi_line_imports_with_trailing_comma_gain_one_line_before_the_bracket():
    text = 'version = 2\nimports = [\n    "/a.toml",  # a\n    "/b.toml",\n]\n[x]\ny = 1\n'
    after = ct.add_import(text, GLOB)
    assert added(text, after) == ([], [f'    "{GLOB}",\n'])
    assert tomllib.loads(after)["imports"] == ["/a.toml", "/b.toml", GLOB]


def test_crlf_file_keeps_its_line_endings_and_every_other_byte():
    data = (CORPUS / "crlf-v2.toml").read_bytes()
    after = ct.add_import(data.decode(), GLOB).encode()
    assert after == data.replace(b"version = 2\r\n", f'version = 2\r\nimports = ["{GLOB}"]\r\n'.encode(), 1)


def test_an_array_bracket_inside_a_string_or_comment_does_not_confuse_the_scanner():
    text = 'version = 2\nimports = [\n  "/x]y.toml", # ] [\n  \'/z.toml\'\n]\nroot = "[not a header]"\n[a]\n'
    after = ct.add_import(text, GLOB)
    assert tomllib.loads(after)["imports"] == ["/x]y.toml", "/z.toml", GLOB]
    assert tomllib.loads(after)["root"] == "[not a header]"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.toml")))
def test_every_corpus_file_gains_the_import_by_one_line_and_reads_back_the_same(name):
    text = (CORPUS / name).read_bytes().decode()
    doc = tomllib.loads(text)
    after = ct.add_import(text, GLOB)
    gone, new = added(text, after)
    assert len(gone) <= 1 and len(new) == 1
    expected = dict(doc, imports=list(doc.get("imports", [])) + [GLOB])
    assert tomllib.loads(after) == expected


@pytest.mark.parametrize(
    ("pattern", "covered"),
    [
        (GLOB, True),
        ("/etc/containerd/conf.d/99-gpu-install.toml", True),
        ("/etc/containerd/conf.d/9*.toml", True),
        ("/etc/containerd/*.toml", False),  # Go's * does not cross '/'
        ("/etc/containerd/conf.d/*.conf", False),
        ("/etc/containerd/*/*.toml", True),
    ],
)
def test_an_import_covers_the_drop_in_by_name_or_glob(pattern, covered):
    assert ct.covers(pattern, "/etc/containerd/conf.d/99-gpu-install.toml") is covered


# --- TOML emitter ----------------------------------------------------------------------------------------------

keys = st.text(alphabet=string.ascii_letters + string.digits + '-_. "é\\', min_size=1, max_size=12)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
tables = st.recursive(
    st.dictionaries(keys, values, max_size=4), lambda inner: st.dictionaries(keys, inner | values, max_size=4),
    max_leaves=10,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(tables)
def test_emitter_output_reads_back_equal_through_tomllib(doc):
    assert tomllib.loads(ct.dumps(doc)) == doc


def test_emitter_quotes_dotted_plugin_ids_and_reads_back():
    doc = {
        "version": 2,
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "containerd": {
                    "runtimes": {
                        "nvidia": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"BinaryName": "/usr/bin/nvidia-container-runtime"},
                        }
                    }
                }
            }
        },
    }
    text = ct.dumps(doc)  # fmt: skip
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]' in text
    assert tomllib.loads(text) == doc


# --- versions and key paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "version", "config_version"),
    [
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", (1, 6, 20), 2),
        ("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1", (1, 7, 24), 2),
        ("containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da", (1, 7, 27), 2),
        ("containerd github.com/containerd/containerd/v2 2.1.9+unknown ", (2, 1, 9), 3),
        ("containerd github.com/containerd/containerd/v2 v2.0.0 207ad711", (2, 0, 0), 3),
    ],
)
def test_containerd_version_decides_the_config_version_it_speaks(output, version, config_version):
    assert ct.parse_version(output) == version
    assert ct.release(version).config_version == config_version


def test_containerd_older_than_1_6_is_refused_as_unsupported():
    with pytest.raises(ct.ContainerdError) as refused:
        ct.release((1, 5, 9))
    assert refused.value.code == 3 and "older than 1.6" in refused.value.reason


def test_cri_plugin_ids_and_key_paths_per_config_version():
    assert [ct.SCHEMAS[v].plugin for v in (1, 2, 3)] == [
        "cri",
        "io.containerd.grpc.v1.cri",
        "io.containerd.cri.v1.runtime",
    ]
    for sch in ct.SCHEMAS.values():
        assert sch.runtimes == ("containerd", "runtimes") and sch.enable_cdi == ("enable_cdi",)


def test_drop_in_speaks_config_tomls_version_or_containerds_own():
    assert ct.drop_in_version(R17, None) == 2 and ct.drop_in_version(R2, None) == 3
    assert ct.drop_in_version(R17, 1) == 1 and ct.drop_in_version(R2, 2) == 2 and ct.drop_in_version(R2, 1) == 3


def test_runc_options_are_copied_into_our_runtime():
    section = tomllib.loads((CORPUS / "kubeadm-node-v2.toml").read_text())["plugins"]["io.containerd.grpc.v1.cri"]
    doc = ct.drop_in_doc(R17, 2, section, ct.Options(runtime_path="/usr/bin/nvidia-container-runtime"))
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["nvidia"] == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"SystemdCgroup": True, "BinaryName": "/usr/bin/nvidia-container-runtime"},
    }
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10"  # 1.x: the whole section is carried
    assert cri["enable_cdi"] is True and cri["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]
    assert "default_runtime_name" not in cri["containerd"]


def test_the_default_runtime_is_the_template_unless_it_is_nvidia():
    section = tomllib.loads((CORPUS / "sandboxes-kata-gvisor-crun-v2.toml").read_text())["plugins"]
    cri = section["io.containerd.grpc.v1.cri"]
    assert ct.template_runtime(cri, ct.SCHEMAS[2], "nvidia")["options"]["BinaryName"] == "/usr/bin/crun"
    cri["containerd"]["default_runtime_name"] = "nvidia-cdi"
    assert "BinaryName" not in ct.template_runtime(cri, ct.SCHEMAS[2], "nvidia")["options"]  # runc's


def test_on_2x_the_drop_in_holds_only_our_keys_under_the_v3_runtime_plugin():
    section = tomllib.loads((CORPUS / "kubeadm-node-v3.toml").read_text())["plugins"]["io.containerd.cri.v1.runtime"]
    doc = ct.drop_in_doc(R2, 3, section, ct.Options(default_runtime=True))
    assert doc == {"version": 3, "plugins": {"io.containerd.cri.v1.runtime": {"containerd": {
        "runtimes": {"nvidia": {"runtime_type": "io.containerd.runc.v2",
                                "options": {"SystemdCgroup": True, "BinaryName": ct.NVIDIA_RUNTIME_PATH}}},
        "default_runtime_name": "nvidia"}}}}  # fmt: skip
    assert ct.drop_in_doc(R2, 3, section, ct.Options(mode="cdi")) is None  # CDI is on by default in 2.x


def test_a_default_left_pointing_at_our_runtime_goes_back_to_runc_when_not_asked():
    section = {"containerd": {"default_runtime_name": "nvidia"}}
    cri = {"containerd": {"default_runtime_name": "runc"}}
    assert ct.drop_in_doc(R2, 3, section, ct.Options(mode="cdi")) == {
        "version": 3,
        "plugins": {"io.containerd.cri.v1.runtime": cri},
    }


def test_user_cdi_spec_dirs_are_kept_and_ours_added():
    keys = dict(ct.wanted(R17, {"cdi_spec_dirs": ["/opt/cdi"]}, ct.SCHEMAS[2], ct.Options(mode="cdi")))
    assert keys[("cdi_spec_dirs",)] == ["/opt/cdi", "/etc/cdi", "/var/run/cdi"]
    assert ct.wanted(R2, {"enable_cdi": False}, ct.SCHEMAS[3], ct.Options(mode="cdi")) == [(("enable_cdi",), True)]


# --- malformed input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line", "col"),
    [
        (b'version = 2\n[plugins."io.containerd.grpc.v1.cri"\n', 2, 37),
        (b"version = 2\nroot = /var/lib\n", 2, 8),
        (b"a = 1\na = 2\n", 2, 6),  # a duplicate key
        (b'version = 2\nroot = "\xff"\n', 2, 9),
    ],
)
def test_malformed_toml_is_refused_with_path_line_and_column(data, line, col):
    with pytest.raises(ct.ContainerdError) as refused:
        ct.loads(data, "/etc/containerd/config.toml")
    assert refused.value.code == 4
    assert refused.value.reason.startswith("/etc/containerd/config.toml cannot be merged: ")
    assert f"at line {line}, column {col};" in refused.value.reason


def test_cdi_mode_on_containerd_1_6_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(ct.ContainerdError) as refused:
        ct.plan(str(tmp_path / "config.toml"), str(tmp_path / "d" / "x.toml"), ct.Options(mode="cdi"), (1, 6, 20))
    assert refused.value.code == 3
    assert "containerd 1.7" in refused.value.reason and "nvidia_container_mode: runtime" in refused.value.reason


def test_imports_that_is_not_a_list_is_refused(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('version = 2\nimports = "/etc/x.toml"\n')
    with pytest.raises(ct.ContainerdError) as refused:
        ct.plan(str(config), str(tmp_path / "d" / "x.toml"), ct.Options(), (1, 7, 0))
    assert refused.value.code == 4 and "`imports`" in refused.value.reason


# --- the module, run as Ansible runs it, with this machine's containerd -------------------------------------


def system_containerd() -> str:
    found = shutil.which("containerd")
    if found is None:
        pytest.fail("containerd is not installed on this machine (docker.io depends on it: scripts/test installs it)")
    return found


def run_module(tmp_path: Path, args: dict, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    args.setdefault("containerd_path", system_containerd())
    args.setdefault("restart", False)
    return _run_module("containerd_config", tmp_path.parent / (tmp_path.name + "-args.json"), args)


def test_module_six_ways_check_diff_real_then_idempotent(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    original = (CORPUS / "kubeadm-node-v2.toml").read_text()
    config.write_text(original)
    drop_in = etc / "conf.d" / "99-gpu-install.toml"
    args = {"path": str(config), "drop_in": str(drop_in), "default_runtime": True}

    rc, check = run_module(tmp_path, args, check=True)
    assert rc == 0 and check["changed"] is True and config.read_text() == original and not drop_in.parent.exists()
    rc, check_diff = run_module(tmp_path, args, check=True, diff=True)
    assert rc == 0 and check_diff["changed"] is True and sorted(os.listdir(etc)) == ["config.toml"]
    headers = [d["before_header"] for d in check_diff["diff"]]
    assert headers == [str(config), str(drop_in)]
    assert check_diff["diff"][0]["before"] == original and check_diff["diff"][1]["before"] == ""
    rc, real = run_module(tmp_path, args)
    assert rc == 0 and real["changed"] is True and real["restarted"] is False
    assert config.read_text() == check_diff["diff"][0]["after"]  # check mode showed the exact change
    assert drop_in.read_text() == check_diff["diff"][1]["after"]
    assert real["config_version"] == 2 and real["plugin_id"] == "io.containerd.grpc.v1.cri"
    assert Path(real["backup_file"]).read_text() == original and real["drop_in_backup_file"] is None
    assert stat.S_IMODE(drop_in.stat().st_mode) == 0o644
    cri = tomllib.loads(drop_in.read_text())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["default_runtime_name"] == "nvidia" and "enable_cdi" not in cri  # 1.6: no CDI
    files = {p: p.read_bytes() for p in (config, drop_in)}

    for mode in ({"check": True}, {"check": True, "diff": True}, {}):
        rc, again = run_module(tmp_path, args, **mode)
        assert rc == 0 and again["changed"] is False, mode
        assert again["diff"] == [] and again["backup_file"] is None
        assert {p: p.read_bytes() for p in (config, drop_in)} == files
    assert KEYS <= set(real) and KEYS <= set(again) and KEYS - {"msg"} <= set(check)


def test_module_creates_a_missing_config_with_version_and_imports_only(tmp_path):
    config = tmp_path / "etc" / "config.toml"
    drop_in = tmp_path / "etc" / "conf.d" / "99-gpu-install.toml"
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(drop_in)})
    assert rc == 0 and result["changed"] is True and result["backup_file"] is None
    assert config.read_text() == f'version = 2\nimports = ["{drop_in.parent}/*.toml"]\n'
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    runtimes = tomllib.loads(drop_in.read_text())["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert set(runtimes) == {"runc", "nvidia"}  # containerd 1.x would drop its own runc otherwise


def test_module_leaves_a_config_that_already_imports_the_drop_in_untouched(tmp_path):
    config = tmp_path / "config.toml"
    text = (CORPUS / "imports-glob-v2.toml").read_text().replace("/etc/containerd/", f"{tmp_path}/")
    (tmp_path / "site.toml").write_text("version = 2\n")
    config.write_text(text)
    rc, result = run_module(
        tmp_path, {"path": str(config), "drop_in": str(tmp_path / "conf.d" / "99-gpu-install.toml")}
    )
    assert rc == 0 and result["changed"] is True and result["backup_file"] is None
    assert config.read_text() == text and [d["before_header"] for d in result["diff"]] == [result["drop_in"]]


def test_module_refuses_malformed_toml_writing_nothing(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n[plugins\n")
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(tmp_path / "conf.d" / "x.toml")})
    assert rc == 1 and result["failed"] is True
    assert result["gpu_install_error"]["code"] == 4 and "at line 2, column" in result["gpu_install_error"]["reason"]
    assert sorted(os.listdir(tmp_path)) == ["config.toml"] and config.read_text() == "version = 2\n[plugins\n"
    assert KEYS - {"msg"} <= set(result)


def test_module_refuses_a_file_read_after_the_drop_in_that_would_undo_it_writing_nothing(tmp_path):
    """containerd 1.x: conf.d/99-nvidia.toml (nvidia-ctk's) sorts after 99-gpu-install.toml and would replace the CRI
    section; config.toml does not import conf.d yet, but would once gpu-install adds the glob."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    nvidia = (CORPUS / "nvidia-ctk-99-nvidia-v2.toml").read_text()
    (conf_d / "99-nvidia.toml").write_text(nvidia)
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n")
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(conf_d / "99-gpu-install.toml")})
    assert rc == 1 and result["gpu_install_error"]["code"] == 4
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith(f"{conf_d / '99-nvidia.toml'} is read after {conf_d / '99-gpu-install.toml'}"), reason
    assert "remove it, or rename it to sort before 99-gpu-install.toml" in reason
    assert config.read_text() == "version = 2\n" and sorted(os.listdir(conf_d)) == ["99-nvidia.toml"]
    assert sorted(os.listdir(tmp_path)) == ["conf.d", "config.toml"]


def test_module_restores_everything_when_containerd_refuses_the_merged_configuration(tmp_path):
    """A file in conf.d that config.toml does not import yet comes in with gpu-install's glob; containerd refuses it
    (a bare plugin id in a version 2 file), so config dump of the candidate fails: both files as they were, no
    backups, no candidate left."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "00-site.toml").write_text("version = 2\n[plugins.cri]\n  sandbox_image = 'p:1'\n")
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n")
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(conf_d / "99-gpu-install.toml")})
    assert rc == 1 and result["gpu_install_error"]["code"] == 4
    reason = result["gpu_install_error"]["reason"]
    assert reason.startswith("containerd does not accept the new configuration (") and 'plugin key URI "cri"' in reason
    assert config.read_text() == "version = 2\n" and sorted(os.listdir(conf_d)) == ["00-site.toml"]
    assert sorted(os.listdir(tmp_path)) == ["conf.d", "config.toml"]


def test_module_refuses_a_config_containerd_itself_cannot_load(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('version = 2\nimports = ["/nonexistent/site.toml"]\n')
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(tmp_path / "conf.d" / "x.toml")})
    assert rc == 1 and result["gpu_install_error"]["code"] == 4
    assert result["gpu_install_error"]["reason"].startswith(f"containerd cannot load {config} as it is")
    assert not (tmp_path / "conf.d").exists()


def test_module_refuses_cdi_mode_on_this_containerd_1_6(tmp_path):
    rc, result = run_module(tmp_path, {"path": str(tmp_path / "c.toml"), "mode": "cdi"})
    assert rc == 1 and result["gpu_install_error"]["code"] == 3 and os.listdir(tmp_path) == []


def test_module_refuses_when_containerd_is_missing(tmp_path):
    rc, result = run_module(tmp_path, {"path": str(tmp_path / "c.toml"), "containerd_path": str(tmp_path / "none")})
    assert rc == 1 and result["gpu_install_error"]["code"] == 3 and "never installs it" in result["msg"]


def test_module_documentation_reads_with_ansible_doc():
    doc = ansible_doc("containerd_config")["doc"]
    assert doc["attributes"]["check_mode"]["support"] == "full" and doc["attributes"]["diff_mode"]["support"] == "full"
    assert {"path", "drop_in", "mode", "runtime_name", "runtime_path", "default_runtime", "restart", "timeout",
            "backup"} <= set(doc["options"])  # fmt: skip


def test_module_configures_a_disabled_cri_plugin_all_the_same_with_a_warning(tmp_path):
    config = tmp_path / "config.toml"
    original = (CORPUS / "docker-containerd-io.toml").read_text()
    config.write_text(original)
    drop_in = tmp_path / "conf.d" / "99-gpu-install.toml"
    rc, result = run_module(tmp_path, {"path": str(config), "drop_in": str(drop_in)})
    assert rc == 0 and result["changed"] is True
    assert "disables containerd's CRI plugin" in str(result["warnings"])
    assert config.read_text() == original.replace(
        'disabled_plugins = ["cri"]\n', f'disabled_plugins = ["cri"]\nimports = ["{drop_in.parent}/*.toml"]\n'
    )
    cri = tomllib.loads(drop_in.read_text())["plugins"]["cri"]  # version 1 beside a version 1 config.toml
    assert cri["containerd"]["runtimes"]["nvidia"]["options"]["BinaryName"] == ct.NVIDIA_RUNTIME_PATH


def test_module_follows_a_symlinked_config_and_keeps_its_mode_and_owner(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    target = real / "config.toml"
    target.write_text((CORPUS / "kubeadm-node-v2.toml").read_text())
    os.chmod(target, 0o600)
    if os.geteuid() == 0:
        os.chown(target, 1234, 1234)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    rc, result = run_module(tmp_path, {"path": str(link), "drop_in": str(tmp_path / "conf.d" / "99-gpu-install.toml")})
    assert rc == 0 and result["changed"] is True and result["path"] == str(target)
    assert link.is_symlink() and os.readlink(link) == str(target)
    st_ = target.stat()
    assert stat.S_IMODE(st_.st_mode) == 0o600 and "imports = [" in target.read_text()
    if os.geteuid() == 0:
        assert (st_.st_uid, st_.st_gid) == (1234, 1234)
    assert Path(result["backup_file"]).parent == real


def test_a_python_without_tomllib_or_tomli_is_refused_naming_python3_tomli(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tomllib", None)  # an import of a None entry raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ct.ContainerdError) as refused:
        ct.loads(b"version = 2\n", "/etc/containerd/config.toml")
    assert refused.value.code == 3 and "python3-tomli" in refused.value.reason


def test_a_later_file_undoes_the_drop_in_on_1x_by_any_cri_table_on_2x_only_by_our_keys():
    section = {"max_container_log_line_size": 1}
    later = [("/c/zz.toml", {"version": 3, "plugins": {"io.containerd.cri.v1.runtime": section}})]
    ours = [("containerd", "runtimes", "nvidia"), ("enable_cdi",)]
    assert ct.later_conflicts(R2, later, ours) == []
    assert ct.later_conflicts(R17, [("/c/zz.toml", {"version": 2, "plugins": {"io.containerd.grpc.v1.cri": {}}})], ours)
    section["enable_cdi"] = False
    assert ct.later_conflicts(R2, later, ours) == ["/c/zz.toml"]


def test_import_order_splits_around_the_drop_in_as_go_sorts_a_glob(tmp_path):
    for name in ("10-a.toml", "99-gpu-install.toml", "99-nvidia.toml", "x.conf"):
        (tmp_path / name).write_text("version = 2\n")
    (tmp_path / "site.toml").write_text("version = 2\n")
    doc = {"imports": [str(tmp_path / "site.toml"), str(tmp_path / "*.toml"), str(tmp_path / "site.toml")]}
    before, after = ct.import_order(str(tmp_path / "config.toml"), doc, str(tmp_path / "99-gpu-install.toml"))
    assert before == [str(tmp_path / "site.toml"), str(tmp_path / "10-a.toml")]
    assert after == [str(tmp_path / "99-nvidia.toml")]


def test_process_start_time_is_read_from_proc_as_unix_time():
    import subprocess
    import time

    before = time.time()
    proc = subprocess.Popen(["sleep", "5"])
    try:
        started = ct.process_started(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert started is not None and before - 1.5 <= started <= time.time() + 1.5  # /proc/stat btime is whole seconds
    assert ct.process_started(2**22 + 1) is None  # above pid_max: no such process


@settings(max_examples=200, deadline=None)
@given(tables, st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=3)))
def test_any_emitted_file_gains_the_import_by_one_line_and_keeps_every_value(doc, imports):
    doc = {k: v for k, v in doc.items() if k != "imports"}
    if imports is not None:
        doc["imports"] = imports
    text = ct.dumps(doc)
    after = ct.add_import(text, GLOB)
    assert tomllib.loads(after) == dict(doc, imports=list(imports or []) + [GLOB])
    gone, new = added(text, after)
    assert len(gone) <= 1 and len(new) <= 1
