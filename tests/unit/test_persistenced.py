"""nvidia-persistenced's unit: found, checked for --no-persistence-mode, a drop-in or a unit written.

Real files in tmp dirs (``root``); the module is run as Ansible runs it.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import ansible_doc, make_tree, module_utils, run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.units import UBUNTU_UNIT  # noqa: E402

persistenced = module_utils("persistenced")

# Debian's nvidia-persistenced package unit (persistence mode on, enabled by its postinst).
DEBIAN_UNIT = """# This is a sample systemd service file, designed to show how the NVIDIA
# Persistence Daemon can be started.
#

[Unit]
Description=NVIDIA Persistence Daemon
Wants=syslog.target

[Service]
Type=forking
ExecStart=/usr/bin/nvidia-persistenced --user nvpd
ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced

[Install]
WantedBy=multi-user.target
"""
BINARY = "#!/bin/sh\n# stands in for nvidia-persistenced\nexit 0\n"
LIB_UNIT = "/lib/systemd/system/nvidia-persistenced.service"
ETC_UNIT = "/etc/systemd/system/nvidia-persistenced.service"
DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/gpu-install.conf"
FLAG = "--no-persistence-mode"


def tree(tmp_path: Path, files: dict) -> str:
    root = make_tree(tmp_path / "root", files)
    for rel, data in files.items():
        if "/bin/" in rel and isinstance(data, str):
            os.chmod(root / rel.lstrip("/"), 0o755)
    return str(root)


def read(root: str, path: str) -> str:
    return Path(root, path.lstrip("/")).read_text()


def exists(root: str, path: str) -> bool:
    return os.path.lexists(os.path.join(root, path.lstrip("/")))


# -- systemd's syntax ------------------------------------------------------------------------------------------
def test_flag_is_found_as_a_word_of_its_own():
    assert persistenced.has_flag("/usr/bin/nvidia-persistenced --user x --no-persistence-mode --verbose")
    assert not persistenced.has_flag("/usr/bin/nvidia-persistenced --user nvpd")
    assert not persistenced.has_flag("/usr/bin/nvidia-persistenced --no-persistence-mode-please")


def test_flag_quoted_as_a_whole_word_counts_and_inside_a_quoted_argument_does_not():
    assert persistenced.has_flag('/usr/bin/nvidia-persistenced "--no-persistence-mode" --verbose')
    assert persistenced.has_flag("/usr/bin/nvidia-persistenced '--no-persistence-mode'")
    assert not persistenced.has_flag("/usr/bin/nvidia-persistenced --user 'nvpd --no-persistence-mode'")
    assert not persistenced.has_flag('/usr/bin/nvidia-persistenced --user "a --no-persistence-mode b"')


def test_stripping_the_flag_keeps_every_other_byte_quotes_included():
    strip = persistenced.strip_flag
    assert strip("/usr/bin/nvidia-persistenced --user u --no-persistence-mode --verbose") == (
        "/usr/bin/nvidia-persistenced --user u --verbose"
    )
    assert strip("/usr/bin/nvidia-persistenced --no-persistence-mode") == "/usr/bin/nvidia-persistenced"
    assert strip("-/usr/bin/nvidia-persistenced '--no-persistence-mode' --user 'a b'  --verbose") == (
        "-/usr/bin/nvidia-persistenced --user 'a b'  --verbose"
    )
    assert strip("x --no-persistence-mode --no-persistence-mode -v") == "x -v"


def test_continuation_lines_join_with_comments_inside_skipped():
    text = (
        "[Service]\n"
        "ExecStart=/usr/bin/nvidia-persistenced \\\n"
        "    --user nvidia-persistenced \\\n"
        "# a comment inside the continuation is skipped\n"
        "    --no-persistence-mode \\\n"
        "    --verbose\n"
        "Type=forking\n"
    )
    entries = persistenced.parse_unit(text)
    assert [(e.section, e.key, e.line) for e in entries] == [("Service", "ExecStart", 2), ("Service", "Type", 7)]
    assert entries[0].value.split() == [
        "/usr/bin/nvidia-persistenced", "--user", "nvidia-persistenced", FLAG, "--verbose",
    ]  # fmt: skip
    assert persistenced.has_flag(entries[0].value)


def test_an_escaped_backslash_ends_the_line_and_comments_and_other_sections_are_ignored():
    text = (
        "[Unit]\n"
        "ExecStart=/not/a/service/setting --no-persistence-mode\n"
        "[Service]\n"
        "; ExecStart=/commented --no-persistence-mode\n"
        "  # ExecStart=/commented --no-persistence-mode\n"
        "Environment=A=b\\\\\n"
        "ExecStart = /usr/bin/nvidia-persistenced\n"
    )
    commands, install = persistenced.effective([("/u", text)])
    assert [c.value for c in commands] == ["/usr/bin/nvidia-persistenced"]
    assert commands[0].line == 7
    assert install is False


def test_an_empty_execstart_resets_the_list_across_drop_ins():
    commands, install = persistenced.effective(
        [
            ("/lib/u", UBUNTU_UNIT),
            ("/etc/d/10.conf", "[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --verbose\n"),
            ("/etc/d/20.conf", "[Install]\nWantedBy=multi-user.target\n"),
        ]
    )
    assert [(c.value, c.path, c.line) for c in commands] == [
        ("/usr/bin/nvidia-persistenced --verbose", "/etc/d/10.conf", 3)
    ]
    assert install is True


# -- finding the unit and the binary ---------------------------------------------------------------------------
def test_no_unit_and_no_binary_plans_nothing(tmp_path):
    root = tree(tmp_path, {"/etc/hostname": "h\n"})
    plan = persistenced.plan(root)
    assert plan["binary"] is None and plan["unit"] is None and plan["files"] == {} and plan["refusal"] is None


def test_unit_is_found_in_lib_and_an_etc_unit_overrides_it(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, "/usr/bin/nvidia-persistenced": BINARY})
    assert persistenced.find_unit(root) == (LIB_UNIT, False, False)
    assert persistenced.plan(root)["no_persistence_mode"] is True
    Path(root, ETC_UNIT.lstrip("/")).parent.mkdir(parents=True)
    Path(root, ETC_UNIT.lstrip("/")).write_text(DEBIAN_UNIT)
    assert persistenced.find_unit(root) == (ETC_UNIT, False, False)
    plan = persistenced.plan(root)
    assert plan["unit"] == ETC_UNIT and plan["no_persistence_mode"] is False and plan["files"] == {}


def test_binary_is_searched_in_order_and_must_be_executable(tmp_path):
    root = tree(tmp_path, {"/usr/local/nvidia/bin/nvidia-persistenced": BINARY})
    assert persistenced.find_binary(root) == "/usr/local/nvidia/bin/nvidia-persistenced"
    make_tree(Path(root), {"/usr/bin/nvidia-persistenced": BINARY})
    assert persistenced.find_binary(root) == "/usr/local/nvidia/bin/nvidia-persistenced"  # not executable
    os.chmod(Path(root, "usr/bin/nvidia-persistenced"), 0o755)
    assert persistenced.find_binary(root) == "/usr/bin/nvidia-persistenced"


@pytest.mark.parametrize("mask", [("->", "/dev/null"), ""], ids=["dev-null-link", "empty-file"])
def test_a_masked_unit_is_refused_and_nothing_is_written(tmp_path, mask):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, ETC_UNIT: mask, "/usr/bin/nvidia-persistenced": BINARY})
    plan = persistenced.plan(root)
    assert plan["masked"] is True and plan["files"] == {}
    assert plan["refusal"]["code"] == 3
    assert "systemctl unmask nvidia-persistenced" in plan["refusal"]["reason"]


# -- what is written -------------------------------------------------------------------------------------------
def test_ubuntu_unit_gets_a_drop_in_without_the_flag_and_with_an_install_section(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, "/usr/bin/nvidia-persistenced": BINARY})
    plan = persistenced.plan(root)
    assert plan["dropin"] == DROPIN and plan["no_persistence_mode"] and plan["install_section_added"]
    assert plan["exec_start"] == ["/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose"]
    assert plan["files"] == {
        DROPIN: (
            "# Written by gpu-install (role gpu_install.nvidia.nvidia_persistenced); rewritten on every run.\n"
            "# /lib/systemd/system/nvidia-persistenced.service starts nvidia-persistenced with\n"
            "# --no-persistence-mode, which lets the driver tear the GPUs down whenever no client holds\n"
            "# them: the same command without that flag.\n"
            "[Service]\n"
            "ExecStart=\n"
            "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose\n"
            "\n"
            "# /lib/systemd/system/nvidia-persistenced.service has no [Install] section (a static unit):\n"
            "# this one lets systemctl enable start it at boot.\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )
    }


def test_drop_in_for_a_unit_with_an_install_section_only_resets_execstart(tmp_path):
    unit = DEBIAN_UNIT.replace("--user nvpd", "--user nvpd \\\n  --no-persistence-mode")
    root = tree(tmp_path, {LIB_UNIT: unit, "/usr/bin/nvidia-persistenced": BINARY})
    text = persistenced.plan(root)["files"][DROPIN]
    assert "[Install]" not in text
    assert "ExecStart=\nExecStart=/usr/bin/nvidia-persistenced --user nvpd\n" in text


def test_debian_unit_needs_nothing(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: DEBIAN_UNIT, "/usr/bin/nvidia-persistenced": BINARY})
    plan = persistenced.plan(root)
    assert plan["files"] == {} and plan["dropin"] is None and plan["unit_source"] == "package"
    assert plan["exec_start"] == ["/usr/bin/nvidia-persistenced --user nvpd"]


def test_no_unit_shipped_writes_one_for_the_binary_found(tmp_path):
    root = tree(tmp_path, {"/usr/local/nvidia/bin/nvidia-persistenced": BINARY})
    plan = persistenced.plan(root)
    assert plan["unit"] == ETC_UNIT and plan["unit_source"] == "gpu-install" and plan["unit_existed"] is False
    text = plan["files"][ETC_UNIT]
    assert text.startswith("# Written by gpu-install")
    assert "ExecStart=/usr/local/nvidia/bin/nvidia-persistenced --verbose\n" in text
    assert "[Install]\nWantedBy=multi-user.target\n" in text
    assert FLAG not in text and "--user" not in text
    persistenced.apply(plan, root)
    mode = os.stat(Path(root, ETC_UNIT.lstrip("/"))).st_mode
    assert stat.S_IMODE(mode) == 0o644
    again = persistenced.plan(root)
    assert again["files"] == {} and again["unit_source"] == "gpu-install" and again["unit_existed"] is True


def test_a_unit_installed_later_replaces_the_one_gpu_install_wrote(tmp_path):
    root = tree(tmp_path, {"/usr/bin/nvidia-persistenced": BINARY})
    persistenced.apply(persistenced.plan(root), root)
    make_tree(Path(root), {LIB_UNIT: DEBIAN_UNIT})
    plan = persistenced.plan(root)
    assert plan["unit"] == LIB_UNIT and plan["files"] == {ETC_UNIT: None}
    persistenced.apply(plan, root)
    assert not exists(root, ETC_UNIT) and persistenced.plan(root)["files"] == {}


def test_the_drop_in_goes_when_the_unit_no_longer_passes_the_flag(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, "/usr/bin/nvidia-persistenced": BINARY})
    persistenced.apply(persistenced.plan(root), root)
    assert exists(root, DROPIN) and persistenced.plan(root)["files"] == {}
    Path(root, LIB_UNIT.lstrip("/")).write_text(DEBIAN_UNIT)  # the package fixed its unit
    plan = persistenced.plan(root)
    assert plan["files"] == {DROPIN: None} and plan["dropin"] is None
    persistenced.apply(plan, root)
    assert not exists(root, os.path.dirname(DROPIN))  # the directory gpu-install's drop-in needed goes too


def test_an_administrators_earlier_drop_in_that_drops_the_flag_is_enough(tmp_path):
    fixed = "[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced\n"
    install = "[Install]\nWantedBy=multi-user.target\n"
    root = tree(
        tmp_path,
        {
            LIB_UNIT: UBUNTU_UNIT,
            "/usr/bin/nvidia-persistenced": BINARY,
            "/etc/systemd/system/nvidia-persistenced.service.d/10-admin.conf": fixed,
            "/run/systemd/system/service.d/50-all.conf": install,
        },
    )
    plan = persistenced.plan(root)
    assert plan["files"] == {} and plan["dropin"] is None
    assert plan["exec_start"] == ["/usr/bin/nvidia-persistenced --user nvidia-persistenced"]


def test_a_later_drop_in_that_puts_the_flag_back_is_refused(tmp_path):
    late = "[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --no-persistence-mode\n"
    late_path = "/etc/systemd/system/nvidia-persistenced.service.d/override.conf"  # sorts after gpu-install.conf
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, "/usr/bin/nvidia-persistenced": BINARY, late_path: late})
    plan = persistenced.plan(root)
    assert plan["files"] == {} and plan["refusal"]["code"] == 3
    assert f"{late_path} line 3" in plan["refusal"]["reason"]


def test_a_masked_drop_in_is_not_applied(tmp_path):
    late = "[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --no-persistence-mode\n"
    root = tree(
        tmp_path,
        {
            LIB_UNIT: DEBIAN_UNIT,
            "/usr/bin/nvidia-persistenced": BINARY,
            "/usr/lib/systemd/system/nvidia-persistenced.service.d/zz.conf": late,
            "/etc/systemd/system/nvidia-persistenced.service.d/zz.conf": ("->", "/dev/null"),
        },
    )
    assert persistenced.find_dropins(root) == []
    assert persistenced.plan(root)["files"] == {}


# -- the module ------------------------------------------------------------------------------------------------
def run(tmp_path: Path, root: str, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    args = {"root": root, "_ansible_check_mode": check, "_ansible_diff": diff}
    return run_module("nvidia_persistenced", tmp_path / "args.json", args)


def test_module_six_ways_check_diff_real_then_idempotent(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, "/usr/bin/nvidia-persistenced": BINARY})
    rc, check = run(tmp_path, root, check=True)
    assert rc == 0 and check["changed"] is True and check["daemon_reload"] is True and not exists(root, DROPIN)
    assert check["files"] == [{"path": DROPIN, "action": "written"}]
    rc, check_diff = run(tmp_path, root, check=True, diff=True)
    assert rc == 0 and not exists(root, DROPIN)
    assert check_diff["diff"][0]["before"] == "" and check_diff["diff"][0]["after_header"] == DROPIN
    after = check_diff["diff"][0]["after"]
    assert "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose" in after
    rc, real = run(tmp_path, root)
    assert rc == 0 and real["changed"] is True and read(root, DROPIN) == check_diff["diff"][0]["after"]
    for check_mode, diff in ((True, False), (True, True), (False, False)):
        rc, again = run(tmp_path, root, check=check_mode, diff=diff)
        assert rc == 0 and again["changed"] is False and again["daemon_reload"] is False and again["diff"] == []
        assert set(again) >= set(real) - {"invocation"}


def test_module_fails_with_the_refusal_unless_told_to_return_it(tmp_path):
    root = tree(tmp_path, {LIB_UNIT: UBUNTU_UNIT, ETC_UNIT: ("->", "/dev/null")})
    rc, out = run(tmp_path, root)
    assert rc != 0 and out["gpu_install_error"]["code"] == 3 and out["masked"] is True
    rc, out = run_module("nvidia_persistenced", tmp_path / "args.json", {"root": root, "fail_on_refusal": False})
    assert rc == 0 and out["refusal"]["code"] == 3 and out["changed"] is False


def test_module_documentation_loads():
    doc = ansible_doc("nvidia_persistenced")
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["doc"]["attributes"]["diff_mode"]["support"] == "full"
    assert {"binary", "unit", "dropin", "exec_start", "daemon_reload", "refusal"} <= set(doc["return"])
