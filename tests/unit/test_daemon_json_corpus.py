"""daemon.json files from the field (tests/unit/daemon_json_corpus): good ones merge, bad ones are refused untouched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import module_utils

dj = module_utils("daemon_json")

CORPUS = Path(__file__).resolve().parent / "daemon_json_corpus"
GOOD = sorted(p.name for p in (CORPUS / "good").iterdir())
BAD = sorted(p.name for p in (CORPUS / "bad").iterdir())
OWNED = {"runtimes", "default-runtime", "features", "node-generic-resources"}
ASKS = {"cdi": True, "generic_resources": ["GPU-11111111-2222-3333-4444-555555555555"]}


def test_the_corpus_is_big_enough():
    assert len(GOOD) >= 30 and len(BAD) >= 15


def configure(tmp_path: Path, target: Path, **opts) -> dict:
    return dj.configure(str(target), dj.Options(**opts), state_dir=str(tmp_path / "state"), validate_mode="never")


def assert_kept(original: dict, after: dict) -> None:
    """Every original key is still there with an equal value, in the same relative order."""
    for key, value in original.items():
        assert key in after, key
        if key not in OWNED:
            assert dj.same(after[key], value), key
    assert [k for k in after if k in original] == list(original)
    for name, entry in original.get("runtimes", {}).items():
        if name != "nvidia":
            assert dj.same(after["runtimes"][name], entry)
        else:
            kept = {k: v for k, v in entry.items() if k not in ("path", "args")}
            for k, v in kept.items():
                assert dj.same(after["runtimes"]["nvidia"][k], v) or k == "runtimeArgs"
    for key, value in original.get("features", {}).items():
        if key != "cdi":
            assert dj.same(after["features"][key], value)


@pytest.mark.parametrize("name", GOOD)
@pytest.mark.parametrize("asks", [{}, ASKS], ids=["plain", "cdi+swarm"])
def test_good_file_merges_keeping_every_key_and_merges_again_byte_identical(tmp_path, name, asks):
    target = tmp_path / "etc" / "daemon.json"
    target.parent.mkdir()
    shutil.copyfile(CORPUS / "good" / name, target)
    original_bytes = target.read_bytes()
    original = dj.parse(original_bytes)

    first = configure(tmp_path, target, **asks)
    after_bytes = target.read_bytes()
    after = json.loads(after_bytes)  # plain JSON, as Docker reads it
    doc = dj.parse(after_bytes)
    assert_kept(original, doc)
    assert after["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert "args" not in after["runtimes"]["nvidia"]
    assert after["default-runtime"] == "nvidia"
    assert first["default_runtime"] == "nvidia"
    if asks:
        assert after["features"]["cdi"] is True
        assert after["node-generic-resources"][-1] == "NVIDIA-GPU=" + ASKS["generic_resources"][0]
        assert not any(r.startswith("NVIDIA-GPU=GPU-stale") for r in after["node-generic-resources"])
    if first["changed"]:
        assert after_bytes.endswith(b"\n")
        assert Path(first["backup_file"]).read_bytes() == original_bytes
    else:
        assert after_bytes == original_bytes

    second = configure(tmp_path, target, **asks)
    assert second["changed"] is False
    assert target.read_bytes() == after_bytes


@pytest.mark.parametrize("name", GOOD)
def test_good_file_absent_then_present_round_trips(tmp_path, name):
    target = tmp_path / "daemon.json"
    shutil.copyfile(CORPUS / "good" / name, target)
    original = dj.parse(target.read_bytes())
    configure(tmp_path, target, **ASKS)
    merged_bytes = target.read_bytes()

    configure(tmp_path, target, state="absent")
    removed_bytes = target.read_bytes()
    assert configure(tmp_path, target, state="absent")["changed"] is False
    assert target.read_bytes() == removed_bytes
    removed = dj.parse(removed_bytes)
    assert "nvidia" not in removed.get("runtimes", {})
    assert removed.get("default-runtime") != "nvidia"
    had_ours = "nvidia" in original.get("runtimes", {}) or original.get("default-runtime") == "nvidia"
    if not had_ours:  # what we added is gone, what was there is back: the original document
        assert dj.same(removed, original)
        configure(tmp_path, target, **ASKS)
        assert target.read_bytes() == merged_bytes


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("state", ["present", "absent"])
def test_bad_file_is_refused_with_line_and_column_and_left_untouched(tmp_path, name, state):
    target = tmp_path / "daemon.json"
    shutil.copyfile(CORPUS / "bad" / name, target)
    before = target.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(dj.DaemonJsonError) as info:
        configure(tmp_path, target, state=state, **ASKS)
    assert info.value.code == 4
    assert str(target) in info.value.reason
    assert " at line " in info.value.reason and ", column " in info.value.reason
    assert info.value.reason.endswith("fix or move it, then run again.")
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing
