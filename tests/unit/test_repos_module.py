"""The gpu_install.nvidia.repositories module run as Ansible runs it, in check mode against the signed local mirror.

(FIXTURE: the mirror stands in for NVIDIA's/Docker's repositories.) Check mode
changes nothing on this machine; the real run and its idempotence are proven in
a test host (tests/integration/test_repositories.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import (
    ansible_doc,
    module_utils,  # noqa: F401  (puts installer/ on sys.path)
)
from conftest import run_module as _run_module
from test_repos_preflight import BOOKWORM, needs_apt, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402


def run_module(tmp_path: Path, args: dict) -> tuple[int, dict]:
    return _run_module("repositories", tmp_path / "args.json", args)


@pytest.fixture
def mirror(tmp_path):
    with Mirror(tmp_path / "mirror") as m:
        yield m


@needs_apt
def test_check_mode_verifies_and_shows_the_files_it_would_write(tmp_path, mirror):
    before = snapshot()
    args = {
        "use": ["cuda", "nvidia_container_toolkit"],
        "overrides": mirror.repositories(),
        "facts": BOOKWORM,
        "_ansible_check_mode": True,
        "_ansible_diff": True,
    }
    rc, result = run_module(tmp_path, args)
    assert rc == 0, result
    assert snapshot() == before
    assert result["changed"] is True
    assert result["cache_update_needed"] is True
    assert result["changed_files"] == [
        "/etc/apt/keyrings/gpu-install-cuda.gpg",
        "/etc/apt/keyrings/gpu-install-nvidia_container_toolkit.gpg",
        "/etc/apt/sources.list.d/gpu-install-cuda.sources",
        "/etc/apt/sources.list.d/gpu-install-nvidia_container_toolkit.sources",
    ]
    diffs = {d["after_header"]: d for d in result["diff"]}
    assert (
        f"URIs: {mirror.url('cuda')}/debian12/x86_64/"
        in diffs["/etc/apt/sources.list.d/gpu-install-cuda.sources"]["after"]
    )
    assert mirror.key.fingerprint in diffs["/etc/apt/keyrings/gpu-install-cuda.gpg"]["after"]
    assert result["preflight"]["cuda"]["index"] == "ok"
    assert [r["id"] for r in result["repositories"]] == ["cuda", "nvidia_container_toolkit"]


@needs_apt
def test_a_wrong_key_fails_with_the_error_record(tmp_path, mirror):
    wrong = mirror.serve_wrong_key("cuda")
    rc, result = run_module(tmp_path, {"use": ["cuda"], "overrides": mirror.repositories(), "facts": BOOKWORM})
    assert rc != 0
    assert result["failed"] is True
    assert result["gpu_install_error"]["code"] == 5
    assert result["gpu_install_error"]["reason"] == result["msg"]
    assert wrong.fingerprint in result["msg"] and mirror.key.fingerprint in result["msg"]
    assert result["changed_files"] == []


def test_a_wrong_key_in_check_mode_marks_the_plan_and_lets_it_go_on(tmp_path, mirror):
    wrong = mirror.serve_wrong_key("cuda")
    rc, result = run_module(
        tmp_path, {"use": ["cuda"], "overrides": mirror.repositories(), "facts": BOOKWORM, "_ansible_check_mode": True}
    )
    assert rc == 0
    assert result["unavailable"] is True
    assert result["gpu_install_blocker"]["code"] == 5
    assert wrong.fingerprint in result["gpu_install_blocker"]["reason"]


def test_an_unpinned_repository_fails_closed_before_any_download(tmp_path):
    trixie = {"id": "debian", "version_id": "13", "arch": "x86_64", "like": {"id": "debian", "version_id": "13"}}
    rc, result = run_module(tmp_path, {"use": ["cuda"], "facts": trixie, "preflight_only": True})
    assert rc != 0
    assert result["gpu_install_error"]["code"] == 5
    assert "set gpu_install_repositories.cuda.fingerprint" in result["msg"]


def test_nothing_to_use_does_nothing(tmp_path):
    rc, result = run_module(tmp_path, {"use": []})
    assert rc == 0
    assert (result["changed"], result["files"], result["cache_update_needed"]) == (False, [], False)


def test_ansible_doc_renders_the_module():
    doc = ansible_doc("repositories")["doc"]
    assert set(doc["options"]) == {
        "use",
        "packages",
        "overrides",
        "proxy",
        "facts",
        "preflight_only",
        "timeout",
    }
    assert doc["attributes"]["check_mode"]["support"] == "full"
