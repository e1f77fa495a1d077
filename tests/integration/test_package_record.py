"""The package record on a real bookworm host: the packages module records what an install brings, a user's
package keeps what it depends on, remove purges exactly the rest, and a run killed inside dpkg is resolved by the
next reader. Debian's own small packages (jq, file and their libraries) through the host's apt proxy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import VENV, Host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))
from gpu_install.collection import module_utils  # noqa: E402

pkgrecord = module_utils("pkgrecord")
pkgmgr = module_utils("pkgmgr")

COLLECTIONS = f"$({VENV}/bin/python -c 'from gpu_install.collection import collections_path as c; print(c())')"
MODULE = "ansible_collections/gpu_install/nvidia/plugins/modules/packages.py"
IMPORT = "import json\nfrom ansible_collections.gpu_install.nvidia.plugins.module_utils import pkgrecord\n"

# Starts the packages module in its own session, waits until dpkg runs under it and has journalled a package's new
# state (/var/lib/dpkg/updates), then SIGKILLs the whole session (module, apt-get and dpkg): the run dies between
# its pending entry and its record, with a package unpacked or half-installed.
KILLER = """
import json, os, signal, subprocess, sys, time
proc = subprocess.Popen(sys.argv[1:], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
caught = ""
deadline = time.monotonic() + 300
while not caught and time.monotonic() < deadline and proc.poll() is None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        journal = [n for n in os.listdir("/var/lib/dpkg/updates") if n.isdigit()]
        if os.path.basename(argv[0]) == b"dpkg" and (b"--unpack" in argv or b"--configure" in argv) and journal:
            caught = b" ".join(argv).decode(errors="replace")
            break
    time.sleep(0.005)
if caught:
    os.killpg(proc.pid, signal.SIGKILL)
proc.wait()
print(json.dumps({"caught": caught, "rc": proc.returncode}))
"""


def module_argv(host: Host, args: dict) -> list[str]:
    host.put("/root/packages-args.json", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    script = f'cp={COLLECTIONS}; PYTHONPATH="$cp" exec {VENV}/bin/python "$cp/{MODULE}" /root/packages-args.json'
    return ["sh", "-c", script]


def run_module(host: Host, args: dict) -> dict:
    proc = host.run(module_argv(host, args), check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and not result.get("failed"), result
    return result


def py(host: Host, code: str) -> object:
    """Run code on the host with the installed collection's module_utils; it prints one JSON value."""
    proc = host.run(["sh", "-c", f'cp={COLLECTIONS}; PYTHONPATH="$cp" exec {VENV}/bin/python -'], input=IMPORT + code)
    return json.loads(proc.stdout)


def recorded(host: Host) -> dict[str, str]:
    found = py(host, "print(json.dumps(pkgrecord.recorded()))")
    assert isinstance(found, dict)
    return {name: info["group"] for name, info in found.items()}


def present(host: Host) -> set[str]:
    """Packages dpkg has files of (any state but not-installed and config-files)."""
    out = host.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\\t${Package}\\n"]).stdout
    return {line.split("\t")[1] for line in out.splitlines() if line[1:2] not in ("n", "c")}


def removal_set(host: Host) -> tuple[dict[str, str], dict[str, str]]:
    remove, kept = py(host, "r, k = pkgrecord.removal_set(['container'], 'apt')\nprint(json.dumps([r, k]))")
    return remove, {k["target"]: k["why"] for k in kept}


@pytest.fixture(scope="module")
def host(host_factory) -> Iterator[Host]:
    made = host_factory("bookworm")
    try:
        yield made
    finally:
        host_factory.remove(made)


def test_recorded_install_keeps_what_a_users_package_needs_and_remove_purges_exactly_the_rest(host):
    started = time.monotonic()
    result = run_module(host, {"names": ["jq"], "update_cache": True, "record": "container", "manager": "apt"})
    assert result["changed"] is True
    assert result["recorded"] == ["jq", "libjq1", "libonig5"]  # the package and the dependencies it brought
    assert recorded(host) == {"jq": "container", "libjq1": "container", "libonig5": "container"}
    on_disk = json.loads(host.get("/var/lib/gpu-install/packages.json"))
    assert on_disk["pending"] == [] and on_disk["schema"] == 1

    again = run_module(host, {"names": ["jq"], "record": "container", "manager": "apt"})
    assert again["changed"] is False and again["recorded"] == []

    # The user installs a package of their own that needs what came with jq (libjq-dev depends on libjq1).
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "libjq-dev"])
    assert recorded(host) == {"jq": "container", "libjq1": "container", "libonig5": "container"}
    remove, kept = removal_set(host)
    assert sorted(remove) == ["jq"]
    assert kept == {"libjq1": "libjq-dev depends on it", "libonig5": "libjq1 depends on it"}  # kept in turn

    # apt-get would take the user's package along with libjq1: refused before any change.
    refused = host.run(
        ["sh", "-c", f'cp={COLLECTIONS}; PYTHONPATH="$cp" exec {VENV}/bin/python -'],
        input=IMPORT + "pkgrecord.remove(['libjq1'], 'apt', 30)\n",
        check=False,
    )
    assert refused.returncode != 0 and "would also remove jq, libjq-dev" in refused.stderr, refused.stderr
    assert {"jq", "libjq1", "libjq-dev"} <= present(host)

    assert py(host, "print(json.dumps(pkgrecord.remove(['jq'], 'apt', 30)))") == ["jq"]
    assert "jq" not in present(host)
    assert {"libjq1", "libonig5", "libjq-dev"} <= present(host)
    assert host.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "jq"], check=False).stdout.strip() in ("", "un")
    assert recorded(host) == {"libjq1": "container", "libonig5": "container"}
    assert removal_set(host)[0] == {}  # a second pass takes nothing

    # Once the user's package is gone, what it kept goes too.
    host.run(["apt-get", "purge", "-y", "-q", "libjq-dev"])
    remove, kept = removal_set(host)
    assert sorted(remove) == ["libjq1", "libonig5"] and kept == {}
    assert py(host, "print(json.dumps(pkgrecord.remove(['libjq1', 'libonig5'], 'apt', 30)))") == ["libjq1", "libonig5"]
    assert not {"libjq1", "libonig5"} & present(host)
    assert recorded(host) == {}
    print(f"\nrecord, keep, remove: {time.monotonic() - started:.1f} s")


def test_an_install_killed_inside_dpkg_is_resolved_by_the_next_reader_and_finished_by_the_next_run(host):
    started = time.monotonic()
    host.run(["apt-get", "update", "-q"])
    before = present(host)
    host.put("/root/killer.py", KILLER.encode())
    argv = module_argv(host, {"names": ["file"], "record": "container", "manager": "apt"})
    killed = json.loads(host.run([f"{VENV}/bin/python", "/root/killer.py", *argv]).stdout)
    assert killed["caught"], killed  # dpkg was running when the run was killed
    on_disk = json.loads(host.get("/var/lib/gpu-install/packages.json"))
    assert [p["names"] for p in on_disk["pending"]] == [["file"]]

    brought = present(host) - before
    assert brought and brought <= {"file", "libmagic1", "libmagic-mgc"}, brought
    assert {n for n, group in recorded(host).items() if group == "container"} >= brought
    assert json.loads(host.get("/var/lib/gpu-install/packages.json")) == on_disk  # the reader wrote nothing

    run_module(host, {"names": ["file"], "record": "container", "manager": "apt"})
    assert host.run(["file", "--version"]).returncode == 0  # dpkg's interrupted run was finished
    assert {n for n, group in recorded(host).items() if group == "container"} >= {"file", "libmagic1", "libmagic-mgc"}
    assert json.loads(host.get("/var/lib/gpu-install/packages.json"))["pending"] == []
    print(f"\nkilled install resolved: {time.monotonic() - started:.1f} s (brought before the kill: {sorted(brought)})")


# Four small rpms for a scratch root: gpuit-lib (Provides: gpuit-virtual; owns /usr/bin/gpuit-tool-lib), gpuit-app
# (Requires: gpuit-lib >= 1.0 and (gpuit-virtual or gpuit-nothing); Recommends: gpuit-extra), gpuit-extra, and a
# user's gpuit-user that needs gpuit-lib only through a file dependency.
RPM_SPECS = {
    "lib": "Provides: gpuit-virtual\n",
    "app": "Requires: gpuit-lib >= 1.0\nRequires: (gpuit-virtual or gpuit-nothing)\nRecommends: gpuit-extra\n",
    "extra": "",
    "user": "Requires: /usr/bin/gpuit-tool-lib\n",
}


def build_rpms(top: Path) -> list[Path]:
    (top / "SPECS").mkdir(parents=True)
    for name, extra in RPM_SPECS.items():
        spec = top / "SPECS" / f"{name}.spec"
        spec.write_text(
            f"Name: gpuit-{name}\nVersion: 1.0\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n"
            f"{extra}%description\ntest package\n%install\nmkdir -p %{{buildroot}}/usr/bin\n"
            f"echo {name} > %{{buildroot}}/usr/bin/gpuit-tool-{name}\n%files\n/usr/bin/gpuit-tool-{name}\n"
        )
        subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(spec)], check=True, capture_output=True)
    return sorted((top / "RPMS" / "noarch").glob("*.rpm"))


def in_root(root: Path):
    """Real rpm and dnf, acting on a scratch root instead of this machine's database."""

    def runner(argv, env):
        if argv[0] == "rpm":
            argv = ["rpm", "--root", str(root), *argv[1:]]
        elif argv[0] == "dnf":
            argv = ["dnf", f"--installroot={root}", "--disablerepo=*", "--releasever=9", *argv[1:]]
        return pkgmgr.run(argv, env)

    return runner


@pytest.mark.skipif(not (shutil.which("rpmbuild") and shutil.which("dnf")), reason="needs rpm-build and dnf")
def test_rpm_keeps_a_file_dependencys_owner_and_dnf_removes_exactly_the_rest(tmp_path):
    started = time.monotonic()
    rpms = build_rpms(tmp_path / "build")
    root, state = tmp_path / "root", tmp_path / "state"
    state.mkdir()
    subprocess.run(["rpm", "--root", str(root), "-i", *map(str, rpms)], check=True, capture_output=True)
    runner = in_root(root)
    recorded = {n: {"version": "1.0-1", "group": "container"} for n in ("gpuit-app", "gpuit-lib", "gpuit-extra")}
    (state / "packages.json").write_text(json.dumps({"schema": 1, "packages": recorded, "pending": []}))

    remove, kept = pkgrecord.removal_set(["container"], "dnf", state_dir=str(state), runner=runner)
    assert remove == {"gpuit-app": "1.0-1", "gpuit-extra": "1.0-1"}
    assert kept == [{"target": "gpuit-lib", "why": "gpuit-user depends on it"}]  # through /usr/bin/gpuit-tool-lib

    with pytest.raises(pkgmgr.PackageError) as refused:
        pkgrecord.remove(["gpuit-lib"], "dnf", 30, state_dir=str(state), runner=runner)
    assert "would also remove gpuit-app-1.0-1.noarch, gpuit-user-1.0-1.noarch" in refused.value.reason
    assert pkgrecord.remove(sorted(remove), "dnf", 30, state_dir=str(state), runner=runner) == sorted(remove)
    assert sorted(pkgrecord.read_installed("dnf", runner)) == ["gpuit-lib", "gpuit-user"]
    assert sorted(json.loads((state / "packages.json").read_text())["packages"]) == ["gpuit-lib"]
    print(f"\nrpm and dnf on a scratch root: {time.monotonic() - started:.1f} s")
