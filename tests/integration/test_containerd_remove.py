"""containerd's removal (``state: absent``) proved with the real binaries: Debian trixie's containerd 1.7 and sid's
2.1 (tests/fixtures/containerd_bins.py), as test_containerd_merge.py proves the merge.

For every config.toml of tests/unit/containerd_corpus and each binary that reads its version, in runtime mode with
NVIDIA's runtime as the default: the merge, then the removal, leave config.toml byte for byte as the user had it,
the drop-in and the directory gpu-install made gone, no record left, and ``containerd config dump`` equal to what
it was before gpu-install; a second removal changes nothing. The restart, its rollback and a removal killed before
its restart run on systemd hosts in test_containerd_role.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_containerd_merge import MODES, READS, containerd, ct, dump, install

CORPUS = Path(__file__).resolve().parents[1] / "unit" / "containerd_corpus"


def cases() -> list:
    import tomllib

    out = []
    for path in sorted(CORPUS.glob("*.toml")):
        version = ct.config_version(tomllib.loads(path.read_text()))
        out += [pytest.param(path.name, suite, id=f"{path.name}-{suite}") for suite, reads in READS.items()
                if version in reads]  # fmt: skip
    return out


def view(suite: str, config: Path) -> dict:
    """containerd's own view of the configuration, its ``imports`` as a set: containerd 1.7 lists the files it
    loaded in no fixed order (the same config.toml dumped them both ways round here)."""
    found = dump(suite, config)
    found["imports"] = sorted(found.get("imports") or [])
    return found


@pytest.mark.parametrize(("name", "suite"), cases())
def test_removal_gives_back_the_users_config_toml_byte_for_byte_and_containerds_own_view(tmp_path, name, suite):
    config, drop_in = install(tmp_path, name)
    state = tmp_path / "state"
    original = config.read_bytes()
    before = view(suite, config)
    conf_d_existed = drop_in.parent.exists()
    done = ct.configure(str(config), str(drop_in), MODES["runtime-default"], restart=False,
                        containerd_path=containerd(suite), state_dir=str(state))  # fmt: skip
    assert done["changed"] and drop_in.is_file()
    done_config = config.read_bytes()

    plan, kept = ct.removal_plan(str(config), str(drop_in), str(state))
    removed = ct.remove(str(config), str(drop_in), restart=False, state_dir=str(state))
    assert removed["changed"] and kept == [] and removed["kept"] == []
    assert config.read_bytes() == original
    assert not drop_in.exists() and drop_in.parent.exists() == conf_d_existed
    assert not (state / "containerd.json").exists()
    assert view(suite, config) == before
    # What the plan listed is what was done (the backups named once they exist).
    assert [(i["kind"], i["target"], i["action"]) for i in plan] == [
        (i["kind"], i["target"], i["action"]) for i in removed["items"]
    ]
    if removed["backup_file"]:  # config.toml as gpu-install left it
        assert Path(removed["backup_file"]).read_bytes() == done_config

    files = sorted(p.name for p in config.parent.iterdir())
    again = ct.remove(str(config), str(drop_in), restart=False, state_dir=str(state))
    assert again["changed"] is False and again["items"] == []
    assert sorted(p.name for p in config.parent.iterdir()) == files


@pytest.mark.parametrize("suite", sorted(READS))
def test_removal_deletes_the_config_toml_gpu_install_created(tmp_path, suite):
    config = tmp_path / "etc" / "containerd" / "config.toml"
    drop_in = config.parent / "conf.d" / "99-gpu-install.toml"
    state = tmp_path / "state"
    config.parent.mkdir(parents=True)
    ct.configure(str(config), str(drop_in), MODES["runtime"], restart=False, containerd_path=containerd(suite),
                 state_dir=str(state))  # fmt: skip
    assert config.is_file()
    ct.remove(str(config), str(drop_in), restart=False, backup=False, state_dir=str(state))
    assert list(config.parent.iterdir()) == [] and not (state / "containerd.json").exists()
