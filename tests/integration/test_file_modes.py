"""What gpu-install writes has the distribution's modes and owners, and only root may apply or verify.

After an apply (image-build mode, runtime mode) every file gpu-install wrote is listed and checked: configs,
keyrings, units and rules 0644 root:root, their directories 0755, nothing world- or group-writable, the run
logs (which hold the settings) readable by root only.

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's repositories (unreachable from here), signed with a
key made by the test and reached through gpu_install_repositories, as a user's mirror is; its toolkit packages
are stand-ins. There is no GPU here: the apply is an image build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hosts import Host
from test_apply_cli import snapshot
from test_docker_ce_mirror import apply
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402

# What gpu-install may write, as shell globs (directories too): each must exist after this apply or be absent.
WRITTEN = [
    "/etc/apt/sources.list.d/gpu-install-*",
    "/etc/apt/keyrings/gpu-install-*",
    "/etc/apt/preferences.d/gpu-install-*",
    "/etc/apt/apt.conf.d/*gpu-install*",
    "/etc/docker/daemon.json",
    "/etc/cdi",
    "/etc/cdi/*",
    "/etc/systemd/system/gpu-install-*",
    "/etc/systemd/system/nvidia-persistenced.service",
    "/etc/systemd/system/nvidia-persistenced.service.d",
    "/etc/systemd/system/nvidia-persistenced.service.d/*",
    "/etc/udev/rules.d/71-nvidia-dev-char.rules",
    "/etc/modprobe.d/gpu-install-*",
    "/etc/nvidia-container-runtime/config.toml",
    "/etc/gpu-install",
]
# Written by this apply whatever else it decides.
REQUIRED = {
    "/etc/apt/sources.list.d/gpu-install-nvidia_container_toolkit.sources",
    "/etc/apt/keyrings/gpu-install-nvidia_container_toolkit.gpg",
    "/etc/docker/daemon.json",
    "/etc/udev/rules.d/71-nvidia-dev-char.rules",
}
# Private: the runs' logs and extra vars hold the settings (a proxy URL may carry a password).
PRIVATE = ["/var/log/gpu-install"]
STATE = ["/var/log/gpu-install", "/var/lib/gpu-install"]


def stat(host: Host, globs: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """path -> (type, octal mode, owner, group) of what the globs match (symlinks not followed)."""
    script = (
        'for p in "$@"; do for f in $p; do [ -e "$f" ] || [ -L "$f" ] || continue; '
        'stat -c "%F|%a|%U|%G|%n" "$f"; done; done'
    )
    out = host.run(["sh", "-c", script, "sh", *globs]).stdout
    rows = {}
    for line in out.splitlines():
        kind, mode, user, group, path = line.split("|", 4)
        rows[path] = (kind, mode, user, group)
    return rows


def test_files_written_by_an_apply_have_the_distributions_modes_and_owners(bookworm_host, tmp_path):
    host = bookworm_host
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "nvidia_container_mode": "runtime",
            "gpu_install_repositories": mirror.repositories(gw, ids=("cuda", "nvidia_container_toolkit")),
        }
        rc, result = apply(host, settings)
        assert rc == 0, result["error"]["reason"]

    written = stat(host, WRITTEN)
    assert REQUIRED <= set(written), sorted(REQUIRED - set(written))
    wrong = {}
    for path, (kind, mode, user, group) in written.items():
        if kind == "symbolic link":
            wrong[path] = "a symlink where gpu-install writes a file"
        elif kind == "directory" and (mode, user, group) != ("755", "root", "root"):
            wrong[path] = f"{mode} {user}:{group}, want 755 root:root"
        elif kind.startswith("regular") and (mode, user, group) != ("644", "root", "root"):
            wrong[path] = f"{mode} {user}:{group}, want 644 root:root"
    assert not wrong, wrong

    # The log directory is closed to others (0700); below it, ansible-runner's own modes apply, behind it.
    private = stat(host, PRIVATE)
    assert private["/var/log/gpu-install"] == ("directory", "700", "root", "root"), private

    # Nothing gpu-install keeps state or logs in, and nothing in /etc that this run touched, is writable by
    # group or others (the distribution's own files included: dpkg ran here).
    loose = host.run(
        ["find", *STATE, "/etc", "-xdev", "-perm", "/022", "!", "-type", "l", "-newer", "/etc/gpu-install/config.yml",
         "-printf", "%m %u:%g %p\n"],
        check=False,
    ).stdout  # fmt: skip
    assert loose.strip() == "", loose
    others = host.run(
        ["find", *PRIVATE, "-xdev", "(", "!", "-user", "root", "-o", "-perm", "/022", ")", "-printf", "%m %u %p\n"],
        check=False,
    ).stdout
    assert others.strip() == "", others


def test_apply_and_verify_refuse_an_unprivileged_user_in_one_sentence_while_plan_and_detect_run(bookworm_host):
    host = bookworm_host
    host.run(["useradd", "--create-home", "--shell", "/bin/sh", "operator1"])
    host.put("/etc/gpu-install/config.yml", b"gpu_install_image_build: true\n")
    before = snapshot(host)

    def as_user(*argv: str) -> tuple[int, dict, str]:
        proc = host.run(["runuser", "-u", "operator1", "--", "gpu-install", *argv], check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr

    for argv in (("apply", "--yes"), ("verify",)):
        rc, result, _ = as_user(*argv, "--json")
        assert rc == 10, result
        reason = result["error"]["reason"]
        assert "root" in reason and reason.count(". ") == 0 and reason.endswith("."), reason
        rc, _, err = as_user(*argv)
        assert rc == 10
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "root" in lines[0], err

    rc, facts, _ = as_user("detect", "--json")
    assert rc == 0 and facts["schema"] == 1
    rc, plan, _ = as_user("plan", "--json")
    assert rc == 5, plan.get("error")  # NVIDIA's repositories are unreachable from here: a blocker, not a refusal
    assert plan["changes"], plan
    assert snapshot(host) == before
    # the unprivileged plan kept its logs in the user's own, private state directory
    state = host.run(["stat", "-c", "%a %U", "/home/operator1/.local/state/gpu-install"]).stdout.split()
    assert state == ["700", "operator1"], state
