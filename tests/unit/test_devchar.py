"""The /dev/char links of NVIDIA device nodes (module_utils devchar and the dev_char_links module).

Real character devices made with mknod (root, as scripts/test runs) in a scratch directory standing in
for /dev: the NVIDIA majors, no driver behind them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import module_utils, run_module

devchar = module_utils("devchar")


def mknod(path: Path, major: int, minor: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("mknod needs root: run the unit tests as scripts/test does")
    d = tmp_path / "dev"
    mknod(d / "nvidia0", 195, 0)
    mknod(d / "nvidia1", 195, 1)
    mknod(d / "nvidiactl", 195, 255)
    mknod(d / "nvidia-uvm", 237, 0)
    mknod(d / "nvidia-caps" / "nvidia-cap1", 240, 1)
    mknod(d / "sda", 8, 0)  # not NVIDIA's: left alone
    (d / "nvidia-fake").write_text("a regular file, not a node")
    return d


def test_every_nvidia_node_gets_a_relative_link_and_nothing_else(dev):
    made = devchar.ensure(str(dev))
    assert sorted(made) == sorted(
        [
            (str(dev / "char/195:0"), "../nvidia0"),
            (str(dev / "char/195:1"), "../nvidia1"),
            (str(dev / "char/195:255"), "../nvidiactl"),
            (str(dev / "char/237:0"), "../nvidia-uvm"),
            (str(dev / "char/240:1"), "../nvidia-caps/nvidia-cap1"),
        ]
    )
    assert os.path.samefile(dev / "char/195:255", dev / "nvidiactl")
    assert not (dev / "char/8:0").exists()
    assert devchar.ensure(str(dev)) == []


def test_check_mode_lists_the_links_and_makes_none(dev):
    assert len(devchar.ensure(str(dev), check=True)) == 5
    assert not (dev / "char").exists()


def test_a_link_pointing_elsewhere_is_replaced_and_a_good_one_kept(dev):
    (dev / "char").mkdir()
    (dev / "char/195:0").symlink_to("../nvidia1")  # wrong node
    (dev / "char/195:1").symlink_to(str(dev / "nvidia1"))  # right node, absolute: kept
    made = dict(devchar.ensure(str(dev)))
    assert made[str(dev / "char/195:0")] == "../nvidia0"
    assert str(dev / "char/195:1") not in made
    assert os.readlink(dev / "char/195:0") == "../nvidia0"
    assert not list((dev / "char").glob("*.tmp"))


def test_a_host_without_nvidia_nodes_needs_nothing(tmp_path):
    assert devchar.ensure(str(tmp_path)) == []
    assert devchar.nodes(str(tmp_path / "absent")) == []


def test_module_reports_links_and_is_idempotent(dev, tmp_path):
    rc, result = run_module("dev_char_links", tmp_path / "args.json", {"dev": str(dev), "_ansible_check_mode": True})
    assert rc == 0 and result["changed"] is True and len(result["links"]) == 5
    assert not (dev / "char").exists()
    rc, result = run_module("dev_char_links", tmp_path / "args.json", {"dev": str(dev)})
    assert rc == 0 and result["changed"] is True
    assert f"{dev}/char/195:0 -> ../nvidia0" in result["links"]
    rc, result = run_module("dev_char_links", tmp_path / "args.json", {"dev": str(dev)})
    assert rc == 0 and result["changed"] is False and result["links"] == []


def test_module_fails_with_the_host_error_code_when_the_links_cannot_be_made(dev, tmp_path):
    (dev / "char").write_text("a file where the directory should be")
    rc, result = run_module("dev_char_links", tmp_path / "args.json", {"dev": str(dev)})
    assert rc != 0
    assert result["gpu_install_error"]["code"] == 10
    assert "/dev/char links" in result["gpu_install_error"]["reason"]
