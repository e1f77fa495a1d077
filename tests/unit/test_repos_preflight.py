"""Preflight against the signed local mirror (FIXTURE: stand-in for NVIDIA's/Docker's repositories) on loopback.

The real apt of this machine (Debian 12) and Debian's real dnf run against
scratch state; the host's /etc/apt, /var/lib/apt and /var/cache/apt must be
byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from conftest import module_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror, tools_missing  # noqa: E402

repos = module_utils("repos")
errors = module_utils("errors")

BOOKWORM = {"id": "debian", "version_id": "12", "arch": "x86_64", "like": {"id": "debian", "version_id": "12"}}
RHEL9 = {"id": "rhel", "version_id": "9.4", "arch": "x86_64", "like": {"id": "rhel", "version_id": "9"}}
APT_STATE = ("/etc/apt", "/var/lib/apt", "/var/cache/apt")


def _require(missing: list, what: str):
    """Tools scripts/test installs: missing ones fail the test (a skip would hide it)."""

    def mark(fn):
        def wrapper(*args, **kwargs):
            if missing:
                pytest.fail(f"needs {', '.join(missing)} ({what}): scripts/test installs them")
            return fn(*args, **kwargs)

        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    return mark


needs_apt = _require(
    tools_missing() + ([] if os.path.isdir("/var/lib/apt") else ["apt"]), "apt-get install gnupg apt-utils"
)
needs_dnf = _require(tools_missing(rpm=True), "apt-get install dnf createrepo-c rpm")


def snapshot(roots=APT_STATE) -> dict[str, object]:
    """Every entry below the roots: /etc/apt by content hash, the rest by inode, size, mode and mtime."""
    seen: dict[str, object] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                seen[path] = (st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns)
                if root == "/etc/apt" and os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as fh:
                        seen[path] = hashlib.sha256(fh.read()).hexdigest()
    return seen


@pytest.fixture
def mirror(tmp_path):
    m = Mirror(tmp_path / "mirror", rpm=not tools_missing(rpm=True))
    m.start()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def untouched_apt():
    """Asserts that the host's apt state is byte-identical after the test."""
    before = snapshot()
    yield
    assert snapshot() == before


def resolve_all(mirror, facts, ids, **over):
    overrides = mirror.repositories(ids=ids)
    for repo_id, extra in over.items():
        overrides[repo_id].update(extra)
    return [repos.resolve(i, facts, overrides) for i in ids]


APT_IDS = ("cuda", "nvidia_container_toolkit", "docker")


@needs_apt
def test_preflight_passes_on_a_good_mirror_and_leaves_apt_untouched(mirror, untouched_apt):
    keys, report = repos.preflight(resolve_all(mirror, BOOKWORM, APT_IDS))
    assert set(keys) == set(APT_IDS)
    assert report["cuda"] == {"index": "ok", "packages": ["cuda-drivers"], "checked_uris": 1}
    assert report["docker"]["checked_uris"] == 3


@needs_apt
def test_a_served_key_other_than_the_pin_is_refused_naming_both(mirror, untouched_apt):
    wrong = mirror.serve_wrong_key("cuda")
    with pytest.raises(repos.RepoError) as exc:
        repos.preflight(resolve_all(mirror, BOOKWORM, APT_IDS))
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert f"has fingerprint {wrong.fingerprint}, not the pinned {mirror.key.fingerprint}" in exc.value.reason
    assert "gpu_install_repositories.cuda.key_url" in exc.value.reason


@needs_apt
def test_a_repository_re_signed_by_a_new_key_is_refused_by_apt(mirror, untouched_apt):
    new = mirror.rotate_key("nvidia_container_toolkit")
    with pytest.raises(repos.RepoError) as exc:
        repos.preflight(resolve_all(mirror, BOOKWORM, APT_IDS))
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert exc.value.reason.startswith("The nvidia_container_toolkit repository at http://127.0.0.1:")
    assert f"not signed by the pinned key {mirror.key.fingerprint}" in exc.value.reason
    assert f"NO_PUBKEY {new.fingerprint[-16:]}" in exc.value.reason


@needs_apt
def test_an_unreachable_repository_is_refused(mirror, untouched_apt):
    chosen = resolve_all(mirror, BOOKWORM, ("cuda",))
    keys = {"cuda": mirror.key.public}
    mirror.stop()
    with pytest.raises(repos.RepoError) as exc:
        repos.preflight_apt(chosen, keys)
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert "could not be reached" in exc.value.reason
    assert "gpu_install_repositories.cuda.url and gpu_install_proxy" in exc.value.reason
    with pytest.raises(repos.RepoError, match="could not be fetched from http://127.0.0.1"):
        repos.preflight(chosen)  # the key download fails first


@needs_apt
def test_a_wrong_layout_is_a_missing_index(mirror, untouched_apt):
    chosen = resolve_all(
        mirror, BOOKWORM, ("cuda",), cuda={"key_url": mirror.url("cuda") + "/debian12/x86_64/3bf863cc.pub"}
    )
    moved = [repos.Repo(**{**vars(chosen[0]), "uri": chosen[0].uri.replace("debian12", "debian99")})]
    with pytest.raises(repos.RepoError, match="has no repository index .*keeps the vendor's layout"):
        repos.preflight(moved)


@needs_apt
def test_one_missing_package_file_is_caught_before_any_change(mirror, untouched_apt):
    mirror.delete_package("docker", "containerd.io")
    with pytest.raises(repos.RepoError) as exc:
        repos.preflight(resolve_all(mirror, BOOKWORM, APT_IDS))
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert "lists containerd.io_1.0-1_amd64.deb but" in exc.value.reason
    assert "404" in exc.value.reason


@needs_apt
def test_a_package_the_repository_lacks_is_refused(mirror, untouched_apt):
    overrides = mirror.repositories(ids=("cuda",))
    chosen = [repos.resolve("cuda", BOOKWORM, overrides, ["cuda-drivers-999"])]
    with pytest.raises(repos.RepoError, match="cuda-drivers-999 cannot be installed from the cuda repository"):
        repos.preflight(chosen)


@needs_dnf
def test_dnf_preflight_passes_on_a_good_rpm_mirror(mirror, untouched_apt):
    keys, report = repos.preflight(resolve_all(mirror, RHEL9, ("cuda", "nvidia_container_toolkit")))
    assert report["nvidia_container_toolkit"] == {
        "index": "ok",
        "packages": ["nvidia-container-toolkit"],
        "checked_uris": 1,
    }


@needs_dnf
def test_dnf_refuses_repository_metadata_signed_by_another_key(mirror):
    mirror.rotate_key("nvidia_container_toolkit")
    with pytest.raises(repos.RepoError) as exc:
        repos.preflight(resolve_all(mirror, RHEL9, ("nvidia_container_toolkit",)))
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert "nvidia_container_toolkit repository" in exc.value.reason
    assert "pinned key" in exc.value.reason


@needs_dnf
def test_dnf_wrong_key_unreachable_and_missing_rpm_are_refused(mirror):
    mirror.delete_package("cuda", "cuda-drivers", family="rpm")
    with pytest.raises(repos.RepoError, match=r"lists cuda-drivers-1\.0-1\.x86_64\.rpm but .* 404"):
        repos.preflight(resolve_all(mirror, RHEL9, ("cuda",)))
    mirror.serve_wrong_key("cuda")
    with pytest.raises(repos.RepoError, match="not the pinned"):
        repos.preflight(resolve_all(mirror, RHEL9, ("cuda",)))
    chosen = resolve_all(mirror, RHEL9, ("nvidia_container_toolkit",))
    mirror.stop()
    with pytest.raises(repos.RepoError, match="could not be reached"):
        repos.preflight_dnf(chosen, {"nvidia_container_toolkit": mirror.key.public})


@needs_apt
def test_scratch_directories_are_removed_on_failure(mirror, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(repos.tempfile, "tempdir", str(scratch))
    chosen = resolve_all(mirror, BOOKWORM, ("cuda",))
    fake_apt = lambda argv: (100, "Err:1 x\n  Could not connect to x")  # noqa: E731
    with pytest.raises(repos.RepoError, match="could not be reached"):
        repos.preflight_apt(chosen, {"cuda": mirror.key.public}, run=fake_apt)
    assert list(scratch.iterdir()) == []
