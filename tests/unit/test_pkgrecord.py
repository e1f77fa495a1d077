"""The package record and the set removal takes back: the dependency fixed point over captured dpkg-query and rpm
text, pending entries resolved, the record file written atomically and read back (pure logic; the package
databases are read only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import module_utils

pkgrecord = module_utils("pkgrecord")
errors = module_utils("errors")

CAPTURED = Path(__file__).parent / "captured" / "pkgrecord"
DPKG = (CAPTURED / "dpkg-query-debian12.txt").read_text()
RPM = (CAPTURED / "rpm-qa-debian12-rpm4.18.txt").read_text()


def dpkg_graph(*leave_out: str) -> dict:
    graph = pkgrecord.parse_dpkg_query(DPKG)
    for name in leave_out:
        del graph[name]
    return graph


def write_record(state_dir: Path, packages: dict, pending: list | None = None) -> None:
    data = {"schema": 1, "packages": packages, "pending": pending or []}
    (state_dir / "packages.json").write_text(json.dumps(data))


def as_record(names: list[str], group: str = "container") -> dict:
    return {n: {"version": "1", "group": group} for n in names}


# -- parsing ------------------------------------------------------------------------
def test_dpkg_query_gives_pre_depends_depends_alternatives_and_provides():
    graph = dpkg_graph()
    assert graph["jq"].version == "1.6-2.1+deb12u1"
    assert ["libjq1"] in graph["jq"].depends
    assert ["awk"] in graph["base-files"].depends  # Pre-Depends counts as a dependency
    assert ["debconf", "debconf-2.0"] in graph["ca-certificates"].depends
    assert graph["gcc"].provides == ["c-compiler", "gcc-x86-64-linux-gnu"]
    assert graph["gcc"].recommends == [["libc6-dev", "libc-dev"]]


def test_dpkg_query_leaves_out_packages_with_no_files():
    text = "un \tgone\t\t\t\t\t\nrc \tconfigs-only\t1.0\t\tlibc6\t\t\niU \tunpacked\t2.0\t\tlibc6\t\t\n"
    assert sorted(pkgrecord.parse_dpkg_query(text)) == ["unpacked"]


def test_rpm_query_gives_requires_rich_dependencies_and_provides():
    graph = pkgrecord.parse_rpm_query(RPM)
    assert sorted(graph) == ["gpuit-app", "gpuit-extra", "gpuit-lib", "gpuit-user"]
    assert graph["gpuit-lib"].provides == ["gpuit-virtual"]
    assert graph["gpuit-lib"].version == "1.0-1"
    app = graph["gpuit-app"]
    assert ["gpuit-virtual", "gpuit-nothing"] in app.depends
    assert ["/usr/bin/gpuit-tool-lib"] in app.depends
    assert not any(alt.startswith("rpmlib(") for clause in app.depends for alt in clause)
    assert app.recommends == [["gpuit-extra"]]


# -- the fixed point ---------------------------------------------------------------------
def test_a_package_outside_the_set_keeps_what_it_depends_on_and_that_keeps_its_own_dependencies():
    remove, kept = pkgrecord.fixed_point({"jq", "libjq1", "libonig5"}, dpkg_graph())
    assert remove == set()
    assert kept == {"jq": {"yq"}, "libjq1": {"jq"}, "libonig5": {"libjq1"}}


def test_nothing_outside_the_set_depending_on_it_lets_the_whole_chain_go():
    remove, kept = pkgrecord.fixed_point({"jq", "libjq1", "libonig5"}, dpkg_graph("yq"))
    assert remove == {"jq", "libjq1", "libonig5"}
    assert kept == {}


def test_a_virtual_name_in_an_alternative_keeps_its_only_provider():
    remove, kept = pkgrecord.fixed_point({"debconf"}, dpkg_graph())
    assert remove == set()
    assert kept["debconf"] == {"ca-certificates", "man-db"}


def test_an_alternative_that_another_installed_package_satisfies_keeps_nothing():
    graph = dpkg_graph()
    # bsdextrautils | bsdmainutils: with bsdmainutils installed too, man-db needs neither one in particular.
    graph["bsdmainutils"] = pkgrecord.Package("bsdmainutils", "12.1.8")
    remove, kept = pkgrecord.fixed_point({"bsdextrautils"}, graph)
    assert remove == {"bsdextrautils"}
    assert kept == {}
    remove, kept = pkgrecord.fixed_point({"bsdextrautils"}, dpkg_graph())
    assert kept == {"bsdextrautils": {"man-db"}}


def test_a_virtual_name_another_package_provides_lets_the_provider_go():
    graph = dpkg_graph()
    # base-files Pre-Depends on awk; gawk (bookworm's 1:5.2.1-2 Provides: awk) gives it as well as mawk.
    graph["gawk"] = pkgrecord.Package("gawk", "1:5.2.1-2", provides=["awk"])
    assert pkgrecord.fixed_point({"mawk"}, graph) == ({"mawk"}, {})
    assert pkgrecord.fixed_point({"mawk"}, dpkg_graph()) == (set(), {"mawk": {"base-files"}})


def test_rpm_requires_through_provides_and_rich_dependencies_keep_the_provider_and_recommends_do_not():
    graph = pkgrecord.parse_rpm_query(RPM)
    remove, kept = pkgrecord.fixed_point({"gpuit-lib", "gpuit-extra"}, graph)
    assert remove == {"gpuit-extra"}
    assert kept == {"gpuit-lib": {"gpuit-app", "gpuit-user"}}


def test_rpm_file_dependency_keeps_the_file_owner_once_resolved():
    graph = pkgrecord.parse_rpm_query(RPM)
    del graph["gpuit-user"]
    graph["gpuit-app"].depends = [["/usr/bin/gpuit-tool-lib"]]
    providers = pkgrecord._providers(graph)
    assert pkgrecord.fixed_point({"gpuit-lib"}, graph, providers) == ({"gpuit-lib"}, {})
    providers["/usr/bin/gpuit-tool-lib"] = {"gpuit-lib"}  # what rpm -q --whatprovides answers
    assert pkgrecord.fixed_point({"gpuit-lib"}, graph, providers) == (set(), {"gpuit-lib": {"gpuit-app"}})


# -- pending entries ----------------------------------------------------------------------
def test_a_pending_entry_resolves_to_what_the_requested_package_brought_not_what_else_came_meanwhile():
    graph = dpkg_graph()
    before = sorted(set(graph) - {"jq", "libjq1", "libonig5", "yq"})
    entry = {"group": "container", "names": ["jq=1.6-2.1+deb12u1"], "before": before}
    assert pkgrecord.brought(entry, graph) == {"jq", "libjq1", "libonig5"}  # yq depends on jq, not jq on yq
    entry = {"group": "container", "before": before}
    assert pkgrecord.brought(entry, graph) == {"jq", "libjq1", "libonig5", "yq"}  # no names: everything new


def test_an_upgrade_of_a_package_there_before_records_only_the_new_dependencies_it_brought():
    graph = dpkg_graph()
    entry = {"group": "container", "names": ["jq=1.6-2.1+deb12u1"], "before": sorted(set(graph) - {"libonig5"})}
    assert pkgrecord.brought(entry, graph) == {"libonig5"}  # through libjq1, there before too


def test_a_resolved_package_keeps_the_group_it_was_first_recorded_with():
    graph = dpkg_graph()
    data = {
        "packages": {"libonig5": {"version": "6.9.8-1", "group": "driver"}},
        "pending": [{"group": "container", "names": ["jq"], "before": sorted(set(graph) - {"jq", "libjq1"})}],
    }
    resolved = pkgrecord.resolve(data, graph)
    assert resolved["pending"] == []
    assert resolved["packages"] == {
        "libonig5": {"version": "6.9.8-1", "group": "driver"},
        "jq": {"version": "1.6-2.1+deb12u1", "group": "container"},
        "libjq1": {"version": "1.6-2.1+deb12u1", "group": "container"},
    }


# -- removal_set -------------------------------------------------------------------------
def test_removal_set_takes_the_groups_recorded_packages_keeps_dependencies_of_others_and_never_docker(tmp_path):
    graph = dpkg_graph()
    graph["runc"] = pkgrecord.Package("runc", "1.1.5+ds1-1")
    write_record(
        tmp_path,
        {**as_record(["jq", "libjq1", "libonig5", "runc", "mawk"]), **as_record(["bsdextrautils"], "driver")},
    )
    remove, kept = pkgrecord.removal_set(["container"], "apt", state_dir=str(tmp_path), graph=graph)
    assert remove == {}
    assert {k["target"]: k["why"] for k in kept} == {
        "runc": pkgrecord.DOCKER_WHY,
        "jq": "yq depends on it",
        "libjq1": "jq depends on it",
        "libonig5": "libjq1 depends on it",
        "mawk": "base-files depends on it",
    }
    del graph["yq"]
    remove, kept = pkgrecord.removal_set(["container", "driver"], "apt", state_dir=str(tmp_path), graph=graph)
    assert remove == {"jq": "1.6-2.1+deb12u1", "libjq1": "1.6-2.1+deb12u1", "libonig5": "6.9.8-1"}
    assert {k["target"] for k in kept} == {"runc", "mawk", "bsdextrautils"}


def test_removal_set_leaves_out_recorded_packages_no_longer_installed(tmp_path):
    write_record(tmp_path, as_record(["jq", "libjq1", "libonig5", "gone-already"]))
    remove, _kept = pkgrecord.removal_set(["container"], "apt", state_dir=str(tmp_path), graph=dpkg_graph("yq"))
    assert sorted(remove) == ["jq", "libjq1", "libonig5"]


def toolkit_and_driver_graph() -> dict:
    p = pkgrecord.Package
    return {
        "nvidia-container-toolkit": p(
            "nvidia-container-toolkit",
            "1.20.0-1",
            depends=[["nvidia-container-toolkit-base"], ["libnvidia-container-tools"]],
        ),
        "nvidia-container-toolkit-base": p("nvidia-container-toolkit-base", "1.20.0-1"),
        "libnvidia-container-tools": p("libnvidia-container-tools", "1.20.0-1", depends=[["libnvidia-container1"]]),
        "libnvidia-container1": p("libnvidia-container1", "1.20.0-1"),
        "nvidia-driver": p("nvidia-driver", "535.261.03-1", depends=[["nvidia-kernel-dkms"]]),
        "nvidia-kernel-dkms": p("nvidia-kernel-dkms", "535.261.03-1"),
        "docker.io": p("docker.io", "20.10.24+dfsg1-1+deb12u1"),
    }


def test_no_record_takes_the_toolkits_package_names_and_names_each_driver_package_to_remove_by_hand(tmp_path):
    remove, kept = pkgrecord.removal_set(
        ["container", "driver"], "apt", state_dir=str(tmp_path), graph=toolkit_and_driver_graph()
    )
    assert sorted(remove) == sorted(pkgrecord.TOOLKIT_PACKAGES)
    assert kept == [
        {"target": "nvidia-driver", "why": pkgrecord.UNRECORDED_WHY},
        {"target": "nvidia-kernel-dkms", "why": pkgrecord.UNRECORDED_WHY},
    ]


def test_a_record_without_the_toolkit_names_the_toolkit_it_finds_and_leaves_it(tmp_path):
    write_record(tmp_path, as_record(["docker.io"], "docker"))
    remove, kept = pkgrecord.removal_set(
        ["container"], "apt", state_dir=str(tmp_path), graph=toolkit_and_driver_graph()
    )
    assert remove == {}
    assert sorted(k["target"] for k in kept) == sorted(pkgrecord.TOOLKIT_PACKAGES)
    assert {k["why"] for k in kept} == {pkgrecord.NOT_RECORDED_WHY}


# -- the record file ----------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg's database (reads it only)")
def test_begin_writes_a_pending_entry_and_finish_clears_it_recording_nothing_that_was_there_before(tmp_path):
    entry = pkgrecord.begin("container", ["jq"], "apt", state_dir=str(tmp_path))
    on_disk = json.loads((tmp_path / "packages.json").read_text())
    assert on_disk["schema"] == 1
    assert on_disk["pending"] == [entry]
    assert entry["before"] == sorted(pkgrecord.read_installed("apt"))
    assert oct(os.stat(tmp_path / "packages.json").st_mode & 0o777) == "0o644"
    assert pkgrecord.finish("apt", state_dir=str(tmp_path)) == []
    assert json.loads((tmp_path / "packages.json").read_text()) == {"schema": 1, "packages": {}, "pending": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packages.json"]  # no temp or lock file left


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg's database (reads it only)")
def test_a_reader_resolves_a_pending_entry_left_by_a_killed_run_without_writing(tmp_path):
    installed = pkgrecord.read_installed("apt")
    some = sorted(installed)[:3]
    write_record(tmp_path, {}, [{"group": "driver", "before": sorted(set(installed) - set(some))}])
    text = (tmp_path / "packages.json").read_text()
    assert pkgrecord.recorded(str(tmp_path), "apt") == {
        n: {"version": installed[n].version, "group": "driver"} for n in some
    }
    assert (tmp_path / "packages.json").read_text() == text


def test_no_record_reads_as_empty_and_a_malformed_one_is_refused_as_invalid_input(tmp_path):
    assert pkgrecord.recorded(str(tmp_path)) == {}
    (tmp_path / "packages.json").write_text("{not json")
    with pytest.raises(errors.Failure) as caught:
        pkgrecord.recorded(str(tmp_path))
    assert caught.value.code == errors.INVALID_INPUT
    assert "move it aside" in caught.value.reason


def test_the_packages_modules_record_option_and_return_are_documented():
    from conftest import ansible_doc

    doc = ansible_doc("packages")
    assert doc["doc"]["options"]["record"]["default"] == ""
    assert "recorded" in doc["return"]


# -- the roles record every install under their group -----------------------------------------
ROLE_GROUPS = {
    "docker": "docker",
    "nvidia_container": "container",
    "nvidia_driver": "driver",
    "nvidia_persistenced": "driver",
}


def package_tasks(role: str) -> list[dict]:
    import yaml

    roles = Path(__file__).resolve().parents[2] / "roles"
    tasks = []
    for path in sorted((roles / role / "tasks").glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            if "gpu_install.nvidia.packages" in task:
                tasks.append({"file": path.name, "name": task["name"], **task})
    return tasks


@pytest.mark.parametrize("role", sorted(ROLE_GROUPS))
def test_every_install_a_role_makes_is_recorded_under_the_roles_group(role):
    installs = [
        t
        for t in package_tasks(role)
        if t["gpu_install.nvidia.packages"].get("state", "present") == "present"
        and t.get("check_mode") is not True
        and not t["gpu_install.nvidia.packages"].get("probe")
    ]
    assert installs, role
    for task in installs:
        assert task["gpu_install.nvidia.packages"].get("record") == ROLE_GROUPS[role], (task["file"], task["name"])


def test_no_other_role_installs_packages_unrecorded():
    roles = Path(__file__).resolve().parents[2] / "roles"
    others = sorted(p.name for p in roles.iterdir() if p.is_dir() and p.name not in ROLE_GROUPS)
    assert others and all(not package_tasks(role) for role in others), others
