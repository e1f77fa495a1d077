"""daemon_json's logic: parse with positions, merge, restore, format, reload vs restart, writes."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import module_utils

dj = module_utils("daemon_json")

P = "/etc/docker/daemon.json"


def merged(text: str, record=None, **opts) -> tuple[str, object]:
    doc = dj.parse(text.encode(), P)
    m = dj.merge(doc, dj.Options(**opts), record)
    return dj.dumps(m.doc, like=text), m


def refused(data: bytes) -> str:
    with pytest.raises(dj.DaemonJsonError) as info:
        dj.parse(data, P)
    assert info.value.code == 4
    assert info.value.reason.startswith(P + " cannot be merged: ")
    assert info.value.reason.endswith("; fix or move it, then run again.")
    return info.value.reason


# --- merge -------------------------------------------------------------------------------------
def test_merge_keeps_unrelated_keys_in_place():
    text = '{\n  "log-driver": "json-file",\n  "default-runtime": "runc",\n  "debug": true\n}\n'
    out, _ = merged(text)
    assert list(json.loads(out)) == ["log-driver", "default-runtime", "debug", "runtimes"]
    assert json.loads(out)["default-runtime"] == "nvidia"


def test_merge_appends_runtimes_and_default_at_the_end_of_a_file_without_them():
    out, m = merged('{\n  "debug": true\n}\n')
    assert out == (
        '{\n  "debug": true,\n  "runtimes": {\n    "nvidia": {\n      "path": "nvidia-container-runtime"\n'
        '    }\n  },\n  "default-runtime": "nvidia"\n}\n'
    )
    assert m.record["default-runtime"] == {"had": False, "set": "nvidia"}


def test_merge_keeps_other_runtimes():
    text = '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=kvm"]}, "kata": {}}}'
    doc = json.loads(merged(text)[0])
    assert list(doc["runtimes"]) == ["runsc", "kata", "nvidia"]
    assert doc["runtimes"]["runsc"] == {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=kvm"]}


def test_merge_moves_args_to_runtime_args_with_a_warning():
    text = '{\n  "runtimes": {\n    "nvidia": {\n      "path": "nvidia-container-runtime",\n'
    text += '      "args": ["--x"]\n    }\n  }\n}'
    out, m = merged(text)
    entry = json.loads(out)["runtimes"]["nvidia"]
    assert entry == {"path": "nvidia-container-runtime", "runtimeArgs": ["--x"]}
    assert list(entry) == ["path", "runtimeArgs"]  # renamed in place
    assert len(m.warnings) == 1 and '"args"' in m.warnings[0] and "runtimeArgs" in m.warnings[0]


def test_merge_joins_args_into_existing_runtime_args_without_duplicates():
    text = '{"runtimes": {"nvidia": {"path": "p", "runtimeArgs": ["--a"], "args": ["--a", "--b"]}}}'
    entry = json.loads(merged(text)[0])["runtimes"]["nvidia"]
    assert entry == {"path": "nvidia-container-runtime", "runtimeArgs": ["--a", "--b"]}


def test_merge_keeps_extra_runtime_args_and_other_entry_keys():
    text = '{"runtimes": {"nvidia": {"runtimeArgs": ["--debug"], "path": "/old/path", "options": {"x": 1}}}}'
    entry = json.loads(merged(text)[0])["runtimes"]["nvidia"]
    assert entry == {"runtimeArgs": ["--debug"], "path": "nvidia-container-runtime", "options": {"x": 1}}


def test_merge_records_the_default_runtime_it_replaces():
    _, m = merged('{"default-runtime": "runsc"}')
    assert m.record["default-runtime"] == {"had": True, "previous": "runsc", "set": "nvidia"}


def test_merge_of_an_already_merged_file_changes_nothing():
    text = '{\n    "runtimes": {\n        "nvidia": {\n            "path": "nvidia-container-runtime"\n'
    text += '        }\n    },\n    "default-runtime": "nvidia"\n}\n'
    doc = dj.parse(text.encode())
    m = dj.merge(doc, dj.Options())
    assert dj.same(doc, m.doc)
    assert m.record == {}


def test_merge_does_not_touch_features_unless_cdi_is_asked():
    out, _ = merged('{"features": {"cdi": false, "buildkit": true}}')
    assert json.loads(out)["features"] == {"cdi": False, "buildkit": True}
    out, _ = merged('{"features": {"cdi": false, "buildkit": true}}', cdi=True)
    assert json.loads(out)["features"] == {"cdi": True, "buildkit": True}


def test_generic_resources_keep_other_kinds_and_drop_stale_gpus():
    text = '{"node-generic-resources": ["FPGA=f0", "NVIDIA-GPU=GPU-old", "NVIDIA-GPU=GPU-a"]}'
    out, _ = merged(text, generic_resources=["GPU-a", "GPU-b"])
    assert json.loads(out)["node-generic-resources"] == ["FPGA=f0", "NVIDIA-GPU=GPU-a", "NVIDIA-GPU=GPU-b"]


def test_default_runtime_false_leaves_a_foreign_default_alone():
    out, _ = merged('{"default-runtime": "runsc"}', default_runtime=False)
    assert json.loads(out)["default-runtime"] == "runsc"
    assert "nvidia" in json.loads(out)["runtimes"]


def test_dropping_our_default_names_runc_so_that_a_reload_applies_it():
    # Runtime mode made nvidia the default; cdi mode keeps the entry but not the default. dockerd's reload ignores a
    # removed default-runtime (seen on Docker 28.5: the daemon stayed on nvidia), so the file names runc.
    out, m = merged('{"debug": true}')
    back, _ = merged(out, record=m.record, default_runtime=False)
    doc = json.loads(back)
    assert doc["default-runtime"] == "runc" and "nvidia" in doc["runtimes"] and doc["debug"] is True
    assert dj.needs(json.loads(out), doc) == (True, False)
    again, _ = merged(back, default_runtime=False)
    assert json.loads(again) == doc


def test_dropping_our_default_restores_the_users_previous_one():
    out, m = merged('{"default-runtime": "crun", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}')
    back, _ = merged(out, record=m.record, default_runtime=False)
    assert json.loads(back)["default-runtime"] == "crun"


@pytest.mark.parametrize("name", ["runc", "io.containerd.runc.v2", "", " nvidia"])
def test_reserved_or_empty_runtime_names_are_refused(name):
    with pytest.raises(dj.DaemonJsonError) as info:
        dj.merge({}, dj.Options(runtime_name=name))
    assert info.value.code == 4


# --- absent ------------------------------------------------------------------------------------
def test_absent_restores_the_recorded_default_runtime():
    out, m = merged('{\n  "default-runtime": "runsc",\n  "runtimes": {"runsc": {"path": "/usr/bin/runsc"}}\n}\n')
    back, m2 = merged(out, record=m.record, state="absent")
    assert json.loads(back) == {"default-runtime": "runsc", "runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}
    assert m2.record == {}


def test_absent_without_a_record_drops_a_default_naming_ours():
    back, _ = merged('{"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "x"}, "kata": {}}}', state="absent")
    assert json.loads(back) == {"runtimes": {"kata": {}}}


def test_absent_without_a_record_keeps_a_foreign_default():
    back, _ = merged('{"default-runtime": "runsc", "runtimes": {"nvidia": {"path": "x"}}}', state="absent")
    assert json.loads(back) == {"default-runtime": "runsc", "runtimes": {}}


def test_absent_takes_out_only_what_we_added():
    original = '{\n  "debug": true,\n  "features": {"buildkit": true}\n}\n'
    out, m = merged(original, cdi=True, generic_resources=["GPU-1"])
    back, _ = merged(out, record=m.record, state="absent")
    assert dj.same(dj.parse(back.encode()), dj.parse(original.encode()))


def test_absent_keeps_a_cdi_setting_the_user_changed_since():
    out, m = merged("{}", cdi=True)
    user = out.replace('"cdi": true', '"cdi": false')
    back, _ = merged(user, record=m.record, state="absent")
    assert json.loads(back) == {"features": {"cdi": False}}


# --- formatting --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ('{\n  "a": 1\n}', "  "),
        ('{\n    "a": 1\n}', "    "),
        ('{\n\t"a": 1\n}', "\t"),
        ('{"a": 1}', "    "),
        ("", "    "),
    ],
)
def test_indentation_is_detected_from_the_original(text, unit):
    assert dj.indent_of(text) == unit


def test_numbers_keep_their_text():
    out, _ = merged('{"a": 1e3, "b": 1.50, "c": -0, "d": 1E+2, "e": 12345678901234567890123}')
    for t in ("1e3", "1.50", "-0", "1E+2", "12345678901234567890123"):
        assert t in out


def test_unicode_is_kept_as_written():
    out, _ = merged('{"labels": ["site=東京", "owner=J\\u00fcrgen", "x=\\/"]}')
    assert "site=東京" in out and "J\\u00fcrgen" in out and "\\/" in out


def test_crlf_line_endings_are_kept():
    out, _ = merged('{\r\n  "debug": true\r\n}\r\n')
    assert out.count("\r\n") == out.count("\n")


def test_empty_and_whitespace_files_count_as_an_empty_object():
    assert dj.parse(b"") == {}
    assert dj.parse(b" \n\t\n") == {}


# --- refusals ----------------------------------------------------------------------------------
def test_trailing_comma_is_refused_with_line_and_column():
    reason = refused(b'{\n  "debug": true,\n}\n')
    assert "a trailing comma at line 2, column 16" in reason


def test_comment_is_refused_with_line_and_column():
    assert "a comment (JSON has none) at line 2, column 3" in refused(b'{\n  // x\n  "a": 1\n}')


def test_duplicate_key_is_refused_at_the_second_occurrence():
    assert 'the key "debug" appears twice' in refused(b'{\n "debug": true,\n "debug": false\n}')
    assert "line 3, column 2" in refused(b'{\n "debug": true,\n "debug": false\n}')


def test_truncated_file_is_refused():
    assert "ends early" in refused(b'{\n  "runtimes": {\n')


def test_bom_and_other_encodings_are_refused():
    assert "byte-order mark at line 1, column 1" in refused(b"\xef\xbb\xbf{}")
    assert "UTF-16" in refused('{"a": 1}'.encode("utf-16"))
    assert "UTF-16" in refused('{"a": 1}'.encode("utf-16-le"))
    assert "not UTF-8 (0xfc) at line 2, column 10" in refused('{\n  "a": "J\u00fcrgen"\n}'.encode("latin-1"))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"[]", "the top level is an array"),
        (b'"x"', "the top level is a string"),
        (b"{'a': 1}", "single-quoted"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": 01}', "malformed number"),
        (b'{"a": "\x01"}', "control character"),
        (b'{"a": "\\x"}', "invalid escape"),
        (b'{"a": 1} x', "extra data"),
        (b"{a: 1}", "a key in double quotes"),
        (b'{"runtimes": []}', '"runtimes" is a list, not an object'),
        (b'{"features": "cdi"}', '"features" is a string, not an object'),
        (b'{"default-runtime": 1}', '"default-runtime" is a number, not a string'),
        (b'{"default-runtime": true}', '"default-runtime" is a boolean, not a string'),
        (b'{"runtimes": {"nvidia": "x"}}', '"runtimes.nvidia" is a string, not an object'),
        (b'{"runtimes": {"nvidia": {"args": "--x"}}}', '"runtimes.nvidia.args" is a string, not a list'),
        (b'{"node-generic-resources": "x"}', '"node-generic-resources" is a string, not a list'),
        (b"[" * 300 + b"]" * 300, "nesting deeper"),
    ],
)
def test_malformed_input_is_refused_naming_what_was_found(data, words):
    assert words in refused(data)


def test_structure_refusals_point_at_the_value():
    assert "line 3, column 15" in refused(b'{\n  "debug": true,\n  "runtimes": [\n  ]\n}')


# --- reload vs restart -------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["default-runtime", "runtimes", "debug"])
def test_a_reloadable_key_taken_away_needs_a_restart(key):
    before = {"runtimes": {"nvidia": {}}, "default-runtime": "nvidia", "debug": True}
    after = {k: v for k, v in before.items() if k != key}
    assert dj.needs(before, after) == (False, True)


def test_runtime_changes_need_only_a_reload():
    assert dj.needs({}, {"runtimes": {"nvidia": {}}, "default-runtime": "nvidia"}) == (True, False)


def test_features_or_generic_resources_need_a_restart():
    assert dj.needs({}, {"runtimes": {}, "features": {"cdi": True}}) == (False, True)
    assert dj.needs({}, {"node-generic-resources": ["NVIDIA-GPU=GPU-1"]}) == (False, True)


def test_nothing_changed_needs_nothing():
    assert dj.needs({"a": 1}, {"a": 1}) == (False, False)


# --- configure (files) -------------------------------------------------------------------------
def configure(tmp_path, path, **kw):
    kw.setdefault("state_dir", str(tmp_path / "state"))
    kw.setdefault("validate_mode", "never")
    opts = kw.pop("options", dj.Options())
    return dj.configure(str(path), opts, **kw)


def test_configure_writes_a_new_file_0644(tmp_path):
    target = tmp_path / "docker" / "daemon.json"
    result = configure(tmp_path, target)
    assert result["changed"] is True and result["backup_file"] is None
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert json.loads(target.read_text())["default-runtime"] == "nvidia"
    assert result["reload_needed"] is True and result["restart_needed"] is False


def test_configure_absent_on_a_missing_file_creates_nothing(tmp_path):
    target = tmp_path / "daemon.json"
    result = configure(tmp_path, target, options=dj.Options(state="absent"))
    assert result["changed"] is False and not target.exists()


def test_configure_check_mode_writes_nothing(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": true}')
    result = configure(tmp_path, target, check_mode=True)
    assert result["changed"] is True
    assert result["diff"]["before"] == '{"debug": true}'
    assert target.read_text() == '{"debug": true}'
    assert sorted(os.listdir(tmp_path)) == ["daemon.json"]


def test_configure_keeps_a_backup_beside_the_target(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text('{"debug": true}\n')
    result = configure(tmp_path, target)
    backup = result["backup_file"]
    assert backup.startswith(str(target) + ".") and backup.endswith(".gpu-install.bak")
    assert open(backup).read() == '{"debug": true}\n'


def test_a_refused_file_is_left_byte_identical_with_nothing_beside_it(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_bytes(b'{"debug": true,}')
    with pytest.raises(dj.DaemonJsonError):
        configure(tmp_path, target)
    assert target.read_bytes() == b'{"debug": true,}'
    assert os.listdir(tmp_path) == ["daemon.json"]


FAKE_DOCKERD = """#!/bin/sh
if [ "$1" = "--help" ]; then echo "      --validate    Validate daemon configuration and exit"; exit 0; fi
if grep -q '"nvidia"' "$3"; then
  echo "unable to configure the Docker daemon with file $3: the following directives don't match any \
configuration option: nvidia" >&2
  exit 1
fi
echo "configuration OK"
"""


def test_validation_failure_fails_with_dockerds_own_line_and_leaves_the_file(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text(FAKE_DOCKERD)
    fake.chmod(0o755)
    target = tmp_path / "daemon.json"
    target.write_text("{}\n")
    with pytest.raises(dj.DaemonJsonError) as info:
        configure(tmp_path, target, validate_mode="auto", dockerd_path=str(fake))
    assert info.value.code == 4
    assert "the following directives don't match any configuration option: nvidia" in info.value.reason
    assert str(target) in info.value.reason and "gpu-install-validate" not in info.value.reason
    assert target.read_text() == "{}\n"
    assert sorted(os.listdir(tmp_path)) == ["daemon.json", "dockerd"]


def test_validation_passes_and_the_file_is_written(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text(FAKE_DOCKERD)
    fake.chmod(0o755)
    target = tmp_path / "daemon.json"
    opts = dj.Options(runtime_name="gpu")
    assert configure(tmp_path, target, validate_mode="always", dockerd_path=str(fake), options=opts)["changed"]


def test_validate_always_without_validate_support_is_refused(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'Usage: dockerd [OPTIONS]'\n")
    fake.chmod(0o755)
    with pytest.raises(dj.DaemonJsonError) as info:
        configure(tmp_path, tmp_path / "daemon.json", validate_mode="always", dockerd_path=str(fake))
    assert info.value.code == 3
    assert not (tmp_path / "daemon.json").exists()


def test_validate_auto_skips_a_dockerd_without_validate(tmp_path):
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'Usage: dockerd [OPTIONS]'\nexit 0\n")
    fake.chmod(0o755)
    assert configure(tmp_path, tmp_path / "daemon.json", validate_mode="auto", dockerd_path=str(fake))["changed"]


def test_an_unwritable_state_dir_fails_before_the_file_changes(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text('{"default-runtime": "runsc"}')
    (tmp_path / "state").write_text("a file, not a directory")
    with pytest.raises(dj.DaemonJsonError) as info:
        configure(tmp_path, target)
    assert info.value.code == 10
    assert target.read_text() == '{"default-runtime": "runsc"}'


def test_cdi_mode_takes_out_a_runtime_an_earlier_run_registered_and_gives_back_the_default(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"default-runtime": "runsc", "runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}\n')
    state = str(tmp_path / "state")
    dj.configure(str(path), dj.Options(), state_dir=state, validate_mode="never")
    assert json.loads(path.read_text())["default-runtime"] == "nvidia"
    dj.configure(str(path), dj.Options(runtime=False, cdi=True), state_dir=state, validate_mode="never")
    after = json.loads(path.read_text())
    assert after["default-runtime"] == "runsc"
    assert "nvidia" not in after["runtimes"]
    assert after["features"] == {"cdi": True}
    again = dj.configure(str(path), dj.Options(runtime=False, cdi=True), state_dir=state, validate_mode="never")
    assert again["changed"] is False


def test_nothing_to_set_creates_no_file(tmp_path):
    path = tmp_path / "daemon.json"
    result = dj.configure(str(path), dj.Options(runtime=False), state_dir=str(tmp_path / "s"), validate_mode="never")
    assert result["changed"] is False
    assert not path.exists()
