"""containerd's removal (state: absent of gpu_install.nvidia.containerd_config, plugins/module_utils/containerd.py).

The text edit that takes gpu-install's import out of config.toml again (the inverse of ``add_import``), the record
configure keeps for it, the read-only plan in the shared item shape, and the module run as Ansible runs it with this
machine's containerd (Debian 12's 1.6). Restart and rollback against containerd 1.7 and 2.1 running under systemd:
tests/integration/test_containerd_remove.py.
"""

from __future__ import annotations

import json
import os
import shutil
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


def sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def round_trip(text: str) -> str:
    """add_import, then remove_import with the record configure keeps."""
    after = ct.add_import(text, GLOB)
    line_created = "imports" not in tomllib.loads(text)
    return ct.remove_import(after, GLOB, "config.toml", line_created, sha(text))


# --- the text edit ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.toml")))
def test_every_corpus_file_is_byte_identical_after_the_import_is_added_and_taken_out(name):
    text = (CORPUS / name).read_bytes().decode()
    assert round_trip(text) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("version = 2\n[debug]\n  level = 'info'\n", id="created-line-after-version"),
        pytest.param("[grpc]\n  address = '/run/x.sock'\n", id="created-line-first-in-a-file-of-tables"),
        pytest.param("version = 2", id="created-line-after-a-last-line-without-newline"),
        pytest.param("version = 2\nimports = []\n", id="entry-added-into-an-empty-array"),
        pytest.param("version = 2\nimports = ['/etc/site.toml'] # site\n[debug]\n", id="single-line-with-comment"),
        pytest.param('imports = ["/a.toml", ]\n', id="single-line-with-trailing-comma"),
        pytest.param('imports = ["/a.toml" ]\n', id="single-line-space-before-bracket"),
        pytest.param(
            'version = 2\nimports = [\n    "/a.toml",  # a\n    "/b.toml",\n]\n[x]\ny = 1\n',
            id="multi-line-with-trailing-comma",
        ),  # fmt: skip
        pytest.param('version = 2\nimports = [\n  "/a.toml",\n  "/b.toml" # b\n]\n', id="multi-line-without-comma"),
        pytest.param("version = 2\r\nimports = [\r\n  '/a.toml',\r\n]\r\n[x]\r\n", id="crlf-multi-line"),
        pytest.param("# site\r\nversion = 2\r\n\r\n[plugins]\r\n", id="crlf-created-line"),
        pytest.param(
            'version = 2\nimports = [\n  "/x]y.toml", # ] [\n  \'/z.toml\'\n]\nroot = "[h]"\n[a]\n',
            id="brackets-in-strings-and-comments",
        ),  # fmt: skip
    ],
)
def test_the_import_comes_out_by_the_inverse_edit_leaving_every_other_byte(text):
    assert round_trip(text) == text


def test_without_the_files_checksum_the_recorded_line_decides_between_created_line_and_empty_array():
    for original, line_created in (("version = 2\n", True), ("version = 2\nimports = []\n", False)):
        after = ct.add_import(original, GLOB)
        assert after == f'version = 2\nimports = ["{GLOB}"]\n'
        assert ct.remove_import(after, GLOB, "c.toml", line_created) == original


def test_the_files_checksum_decides_where_two_originals_give_the_same_text():
    # ["/a", ] and ["/a" ] both become ["/a", "G" ]: only the record of the file before tells them apart.
    for original in ('imports = ["/a", ]\n', 'imports = ["/a" ]\n'):
        after = ct.add_import(original, GLOB)
        assert after == f'imports = ["/a", "{GLOB}" ]\n'
        assert ct.remove_import(after, GLOB, "c.toml", False, sha(original)) == original


def test_a_file_edited_around_the_entry_keeps_the_users_changes_and_loses_only_the_entry():
    text = f'version = 2\nimports = [\n  "/a.toml",\n  "{GLOB}", # added by them after ours\n  "/b.toml",\n]\n'
    out = ct.remove_import(text, GLOB, "c.toml", False, sha("something else"))
    assert tomllib.loads(out) == {"version": 2, "imports": ["/a.toml", "/b.toml"]}
    assert out == 'version = 2\nimports = [\n  "/a.toml",\n  # added by them after ours\n  "/b.toml",\n]\n'


def test_a_file_without_the_entry_is_returned_unchanged():
    text = "version = 2\nimports = ['/etc/site.toml']\n"
    assert ct.remove_import(text, GLOB, "c.toml") == text


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(alphabet=string.ascii_letters, min_size=1, max_size=8), st.integers(), max_size=3),
    st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=3)),
    st.sampled_from(["\n", "\r\n"]),
)
def test_any_emitted_file_round_trips_byte_for_byte(doc, imports, eol):
    doc = {k: v for k, v in doc.items() if k != "imports"}
    if imports is not None:
        doc["imports"] = imports
    text = ct.dumps(doc).replace("\n", eol)
    assert round_trip(text) == text


# --- the module: configure then absent, six ways -------------------------------------------------------------


def system_containerd() -> str:
    found = shutil.which("containerd")
    if found is None:
        pytest.fail("containerd is not installed on this machine (docker.io depends on it: scripts/test installs it)")
    return found


class Paths:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.etc = tmp_path / "etc"
        self.etc.mkdir()
        self.config = self.etc / "config.toml"
        self.drop_in = self.etc / "conf.d" / "99-gpu-install.toml"
        self.state = tmp_path / "state"
        self.n = 0

    def run(self, check: bool = False, diff: bool = False, **args: object) -> tuple[int, dict]:
        self.n += 1
        full = {"path": str(self.config), "drop_in": str(self.drop_in), "state_dir": str(self.state),
                "containerd_path": system_containerd(), "restart": False, "_ansible_check_mode": check,
                "_ansible_diff": diff, **args}  # fmt: skip
        return _run_module("containerd_config", self.tmp / f"args-{self.n}.json", full)

    def record(self) -> dict:
        return json.loads((self.state / "containerd.json").read_text())

    def etc_files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.etc)): p.read_bytes() for p in sorted(self.etc.rglob("*")) if p.is_file()}


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


def test_module_six_ways_absent_takes_back_exactly_what_configure_changed(paths):
    original = (CORPUS / "kubeadm-node-v2.toml").read_bytes()
    paths.config.write_bytes(original)
    rc, configured = paths.run()
    assert rc == 0 and configured["changed"] is True
    entry = paths.record()["files"][str(paths.config)]
    assert entry["import_added"] == f"{paths.drop_in.parent}/*.toml" and entry["created"] is False
    assert entry["imports_line_created"] is True and entry["drop_in_dir_created"] is True
    assert entry["sha256"] == sha(paths.config.read_text()) and entry["sha256_before"] == sha(original.decode())
    applied = paths.etc_files()

    rc, check = paths.run(check=True, state="absent")
    assert rc == 0 and check["changed"] is True and paths.etc_files() == applied and paths.record()["files"]
    rc, check_diff = paths.run(check=True, diff=True, state="absent")
    assert rc == 0 and check_diff["changed"] is True and paths.etc_files() == applied
    assert [d["before_header"] for d in check_diff["diff"]] == [str(paths.config), str(paths.drop_in)]
    assert check_diff["diff"][0]["after"].encode() == original and check_diff["diff"][1]["after"] == ""
    rc, real = paths.run(state="absent")
    assert rc == 0 and real["changed"] is True and real["restarted"] is False

    assert paths.config.read_bytes() == original  # byte for byte the user's file
    assert not paths.drop_in.parent.exists()  # the drop-in and the directory gpu-install made
    assert Path(real["backup_file"]).read_bytes() == applied["config.toml"]
    assert not (paths.state / "containerd.json").exists()  # the record's only entry went with what it recorded
    done = [{k: v for k, v in item.items() if k != "detail"} for item in real["items"]]
    assert done == [
        {"kind": "setting", "target": f"{paths.config} imports", "action": "edit"},
        {"kind": "file", "target": str(paths.drop_in), "action": "remove"},
        {"kind": "file", "target": str(paths.drop_in.parent), "action": "remove"},
    ]
    assert real["items"][0]["detail"] == f"takes out {paths.drop_in.parent}/*.toml; backed up to {real['backup_file']}"
    planned = [{k: v for k, v in item.items() if k != "detail"} for item in check["items"]]
    assert planned == done and real["kept"] == []  # the plan is what was done

    files = paths.etc_files()
    for mode in ({"check": True}, {"check": True, "diff": True}, {}):
        rc, again = paths.run(state="absent", **mode)
        assert rc == 0 and again["changed"] is False and again["items"] == [] and again["diff"] == [], mode
        assert paths.etc_files() == files


def test_absent_deletes_a_config_toml_gpu_install_created_and_nobody_changed(paths):
    rc, _ = paths.run()
    assert rc == 0 and paths.config.exists()
    assert paths.record()["files"][str(paths.config)]["created"] is True
    rc, removed = paths.run(state="absent")
    assert rc == 0 and removed["changed"] is True
    assert not paths.config.exists() and not paths.drop_in.parent.exists()
    assert removed["items"][0]["kind"] == "file" and removed["items"][0]["target"] == str(paths.config)
    assert sorted(p.name for p in paths.etc.iterdir()) == [Path(removed["backup_file"]).name]


def test_absent_keeps_a_created_config_toml_the_user_changed_taking_only_the_import_out(paths):
    rc, _ = paths.run()
    assert rc == 0
    paths.config.write_text(paths.config.read_text() + "oom_score = -999\n")
    rc, plan = paths.run(check=True, state="absent")
    assert rc == 0 and plan["kept"] == [{"target": str(paths.config), "why": "gpu-install created it, and it was "
                                         "changed since: it stays, without gpu-install's import"}]  # fmt: skip
    rc, removed = paths.run(state="absent")
    assert rc == 0 and paths.config.read_text() == "version = 2\noom_score = -999\n"
    assert removed["kept"] == plan["kept"]


def test_an_import_gpu_install_did_not_add_stays(paths):
    site = f'version = 2\nimports = ["{paths.drop_in.parent}/*.toml"]\n'
    paths.config.write_text(site)
    paths.drop_in.parent.mkdir()
    rc, configured = paths.run()
    assert rc == 0 and configured["changed"] is True and paths.config.read_text() == site
    assert "import_added" not in paths.record()["files"][str(paths.config)]
    rc, removed = paths.run(state="absent")
    assert rc == 0 and [i["target"] for i in removed["items"]] == [str(paths.drop_in)]
    assert paths.config.read_text() == site and paths.drop_in.parent.is_dir()  # theirs, before gpu-install came


def test_a_drop_in_edited_after_apply_is_backed_up_before_it_goes_and_its_directory_stays(paths):
    paths.config.write_text("version = 2\n")
    assert paths.run()[0] == 0
    edited = paths.drop_in.read_text() + "# tuned by hand\n"
    paths.drop_in.write_text(edited)
    rc, plan = paths.run(check=True, state="absent")
    assert rc == 0 and plan["items"][1]["detail"] == "edited after apply: backed up first"
    rc, removed = paths.run(state="absent")
    assert rc == 0 and not paths.drop_in.exists()
    assert Path(removed["drop_in_backup_file"]).read_text() == edited
    assert removed["items"][1]["detail"] == f"edited after apply: backed up to {removed['drop_in_backup_file']}"
    assert [i["target"] for i in removed["items"]] == [f"{paths.config} imports", str(paths.drop_in)]
    assert paths.config.read_text() == "version = 2\n"


def test_a_failed_configure_puts_the_record_back_as_it_was(paths):
    """containerd refuses the merged configuration (a bare plugin id in a version 2 file that the new glob brings
    in): the files and the record are as they were."""
    conf_d = paths.drop_in.parent
    conf_d.mkdir()
    (conf_d / "00-site.toml").write_text("version = 2\n[plugins.cri]\n  sandbox_image = 'p:1'\n")
    paths.config.write_text("version = 2\n")
    rc, result = paths.run()
    assert rc == 1 and result["gpu_install_error"]["code"] == 4
    assert not (paths.state / "containerd.json").exists()


def test_the_plan_is_empty_on_a_host_gpu_install_never_configured(paths):
    paths.config.write_text(f'version = 2\nimports = ["{paths.drop_in.parent}/*.toml"]\n')
    paths.drop_in.parent.mkdir()
    (paths.drop_in.parent / "10-site.toml").write_text("version = 2\n")
    assert ct.removal_plan(str(paths.config), str(paths.drop_in), str(paths.state)) == ([], [])
    rc, result = paths.run(state="absent", check=True)
    assert rc == 0 and result["changed"] is False and result["items"] == []


# --- without a record: a host configured by an older release ------------------------------------------------


@pytest.fixture
def nvidia_glob(paths, monkeypatch):
    """NVIDIA's glob pointed below the test's directory (the module_utils' constant, in this process)."""
    glob = f"{paths.drop_in.parent}/*.toml"
    monkeypatch.setattr(ct, "NVIDIA_GLOB", glob)
    return glob


def test_without_a_record_nvidias_import_goes_when_it_reads_only_the_drop_in(paths, nvidia_glob):
    original = (CORPUS / "debian-containerd-package.toml").read_text()
    paths.config.write_text(original)
    ct.configure(str(paths.config), str(paths.drop_in), restart=False, containerd_path=system_containerd())
    assert not paths.state.exists()
    items, kept = ct.removal_plan(str(paths.config), str(paths.drop_in), str(paths.state))
    assert [(i["kind"], i["action"], i["detail"]) for i in items] == [
        ("setting", "edit", f"takes out {nvidia_glob}"), ("file", "remove", "")]  # fmt: skip
    assert kept == []
    result = ct.remove(str(paths.config), str(paths.drop_in), state_dir=str(paths.state), restart=False)
    assert result["changed"] and paths.config.read_text() == original and not paths.drop_in.exists()
    assert paths.drop_in.parent.is_dir()  # no record says gpu-install made it


def test_without_a_record_nvidias_import_stays_when_it_reads_another_file_too(paths, nvidia_glob):
    paths.config.write_text("version = 2\n")
    ct.configure(str(paths.config), str(paths.drop_in), restart=False, containerd_path=system_containerd())
    other = paths.drop_in.parent / "50-site.toml"
    other.write_text("version = 2\n")
    items, kept = ct.removal_plan(str(paths.config), str(paths.drop_in), str(paths.state))
    assert [i["target"] for i in items] == [str(paths.drop_in)]
    assert kept == [{"target": f"{paths.config} imports", "why": f"the import {nvidia_glob} also reads {other}, and "
                     "gpu-install has no record of adding it"}]  # fmt: skip


def test_without_a_record_a_config_toml_exactly_as_gpu_install_creates_it_goes(paths, nvidia_glob):
    ct.configure(str(paths.config), str(paths.drop_in), restart=False, containerd_path=system_containerd())
    assert paths.config.read_text() == f'version = 2\nimports = ["{nvidia_glob}"]\n'
    ct.remove(str(paths.config), str(paths.drop_in), state_dir=str(paths.state), restart=False)
    assert not paths.config.exists() and not paths.drop_in.exists()


def test_without_a_record_another_glob_stays_and_the_plan_says_why(paths):
    paths.config.write_text("version = 2\n")
    ct.configure(str(paths.config), str(paths.drop_in), restart=False, containerd_path=system_containerd())
    items, kept = ct.removal_plan(str(paths.config), str(paths.drop_in), str(paths.state))
    assert [i["target"] for i in items] == [str(paths.drop_in)]
    assert kept[0]["target"] == f"{paths.config} imports"
    assert "(it is not /etc/containerd/conf.d/*.toml)" in kept[0]["why"]


def test_module_documents_state_and_state_dir():
    doc = ansible_doc("containerd_config")
    assert doc["doc"]["options"]["state"]["choices"] == ["present", "absent"]
    assert doc["doc"]["options"]["state_dir"]["default"] == "/var/lib/gpu-install"
    assert {"items", "kept"} <= set(doc["return"])


def test_the_record_is_written_atomically_beside_nothing_else(paths):
    paths.config.write_text("version = 2\n")
    assert paths.run()[0] == 0
    assert os.listdir(paths.state) == ["containerd.json"] and paths.record()["schema"] == 1
