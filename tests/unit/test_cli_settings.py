"""Settings file handling and the CLI's exit codes, in-process."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from gpu_install import cli, settings
from gpu_install.errors import codes

REPO = Path(__file__).resolve().parents[2]


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_missing_explicit_settings_file_is_exit_4(capsys, tmp_path):
    rc, _out, err = _run(capsys, "plan", "-c", str(tmp_path / "absent.yml"))
    assert rc == 4
    assert "absent.yml does not exist" in err


def test_missing_default_settings_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, "DEFAULT_PATH", tmp_path / "absent.yml")
    assert settings.load(None) == ({}, None)


def test_unknown_setting_is_exit_4_naming_it(capsys, tmp_path):
    rc, _out, err = _run(capsys, "plan", "-c", _write(tmp_path, "nvidia_drvier_source: distro\n"))
    assert rc == 4
    assert "'nvidia_drvier_source'" in err


def test_invalid_choice_is_exit_4_naming_the_variable(capsys, tmp_path):
    rc, out, _err = _run(capsys, "plan", "--json", "-c", _write(tmp_path, "nvidia_container_mode: magic\n"))
    assert rc == 4
    result = json.loads(out)
    assert result["schema"] == 1
    assert result["error"]["code"] == 4
    assert "nvidia_container_mode" in result["error"]["reason"]


def test_wrong_type_is_exit_4(capsys, tmp_path):
    rc, _out, err = _run(capsys, "plan", "-c", _write(tmp_path, "gpu_install_lock_timeout: soon\n"))
    assert rc == 4
    assert "gpu_install_lock_timeout" in err


@pytest.mark.parametrize(
    "text",
    [
        "a: [1\n",
        "!!python/object/apply:os.system ['true']\n",
        "- just\n- a list\n",
        "nvidia_driver_source: !!python/name:os.system\n",
        "!!float \n",
        "gpu_verify_timeout: !!int twelve\n",
        "when: !!timestamp 2026-13-45\n",
    ],
)
def test_malformed_or_hostile_settings_are_exit_4(capsys, tmp_path, text):
    rc, _out, err = _run(capsys, "plan", "-c", _write(tmp_path, text))
    assert rc == 4, err
    assert "Traceback" not in err


def test_valid_settings_are_coerced_by_the_role_spec(tmp_path):
    values, source = settings.load(_write(tmp_path, 'gpu_install_lock_timeout: "30"\nnvidia_container_mode: cdi\n'))
    assert values == {"gpu_install_lock_timeout": 30, "nvidia_container_mode": "cdi"}
    assert source.endswith("config.yml")


def test_schema_is_read_from_the_roles_argument_specs():
    spec = settings.schema()
    assert spec["nvidia_driver_source"]["choices"] == ["auto", "distro", "runfile", "none"]
    assert "docker_package" in spec


def test_unknown_subcommand_is_usage_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


def test_unknown_cloud_provider_is_usage_exit_2(capsys):
    rc, _out, err = _run(capsys, "cloud-init", "--provider", "digitalocean")
    assert rc == 2
    assert "digitalocean" in err


@pytest.mark.parametrize("platform,name", [("darwin", "macOS"), ("win32", "Windows")])
def test_macos_and_windows_are_refused_with_exit_3(capsys, monkeypatch, platform, name):
    monkeypatch.setattr(sys, "platform", platform)
    rc, _out, err = _run(capsys, "plan")
    assert rc == 3
    assert name in err


def test_readme_exit_code_table_matches_the_code():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M))
    documented = {int(k) for k in rows} | {130, 143}
    assert documented == set(codes.EXIT_CODES)
    assert "130 / 143" in readme


# --- hostile settings ---------------------------------------------------------------------------------------
# Every string setting of every role's argument spec, tried with what an attacker (or a typo) puts in a
# settings file. Rejections go through `gpu-install plan` itself: the settings error comes first (exit 4,
# naming the variable), before anything looks at this host (a plan here would otherwise exit 3: no GPU).


def _string_settings() -> list[str]:
    spec = settings.schema()
    return sorted(name for name, opt in spec.items() if opt.get("type", "str") == "str")


# Strings a shell, a config file or Ansible's templating would give a meaning to. SENTINEL is replaced by a
# path under the test's tmp_path, which must never appear.
SHELLISH = [
    "$(touch SENTINEL)",
    "`touch SENTINEL`",
    "x; touch SENTINEL",
    "x | touch SENTINEL",
    "x && touch SENTINEL",
    "../../../../../../SENTINEL",
]
ALWAYS_REFUSED = [
    ("newline", "x\ntouch SENTINEL"),
    ("carriage return", "x\rtouch SENTINEL"),
    ("NUL", "x\x00touch SENTINEL"),
    ("tab", "x\ttouch SENTINEL"),
    ("escape", "x\x1b[2J"),
    ("jinja expression", "{{ lookup('pipe', 'touch SENTINEL') }}"),
    ("jinja statement", "{% for x in range(1) %}{% endfor %}"),
    ("very long", "A" * (settings.MAX_STRING + 1)),
]
# Commands and controller-side paths by design: shell metacharacters are theirs to use.
FREE_TEXT = {"gpu_install_drain_command", "gpu_install_undrain_command", "gpu_install_report_dir"}


def _hostile_file(tmp_path: Path, name: str, value: str) -> tuple[str, Path]:
    import yaml

    sentinel = tmp_path / "pwned"
    text = yaml.safe_dump({name: value.replace("SENTINEL", str(sentinel))}, allow_unicode=True, width=1 << 20)
    return _write(tmp_path, text), sentinel


def test_every_string_setting_is_covered_by_the_hostile_tests():
    names = _string_settings()
    assert "gpu_install_proxy" in names and "gpu_install_drain_command" in names
    patterned = set(settings.PATTERNS) | {"nvidia_driver_runfile_url", "gpu_install_proxy"}
    with_choices = {n for n, o in settings.schema().items() if o.get("choices")}
    # every string setting is a choice, has a pattern, or is free text by design (documented in docs/security.md)
    assert set(names) <= patterned | with_choices | FREE_TEXT, set(names) - patterned - with_choices - FREE_TEXT
    doc = (REPO / "docs" / "security.md").read_text()
    for name in FREE_TEXT | patterned:
        assert name in doc, name


@pytest.mark.parametrize("name", _string_settings())
@pytest.mark.parametrize("what,value", ALWAYS_REFUSED, ids=[w for w, _ in ALWAYS_REFUSED])
def test_control_characters_templates_and_long_strings_are_refused_in_every_string_setting(
    capsys, tmp_path, name, what, value
):
    path, sentinel = _hostile_file(tmp_path, name, value)
    rc, out, err = _run(capsys, "plan", "--json", "-c", path)
    assert rc == 4, (what, out, err)
    reason = json.loads(out)["error"]["reason"]
    assert name in reason
    assert "Traceback" not in err
    assert len(reason) < 1000, "the error echoes a bounded part of the value"
    assert not sentinel.exists()


@pytest.mark.parametrize("name", sorted(set(_string_settings()) - FREE_TEXT))
@pytest.mark.parametrize("value", SHELLISH)
def test_shell_metacharacters_and_traversal_are_refused_where_a_setting_is_no_command(capsys, tmp_path, name, value):
    path, sentinel = _hostile_file(tmp_path, name, value)
    rc, out, err = _run(capsys, "plan", "--json", "-c", path)
    assert rc == 4, (out, err)
    assert name in json.loads(out)["error"]["reason"]
    assert not sentinel.exists()


@pytest.mark.parametrize("name", sorted(FREE_TEXT))
@pytest.mark.parametrize("value", SHELLISH)
def test_commands_and_report_paths_keep_shell_text_verbatim_as_data(tmp_path, name, value):
    path, sentinel = _hostile_file(tmp_path, name, value)
    values, _source = settings.load(path)
    assert values == {name: value.replace("SENTINEL", str(sentinel))}
    assert not sentinel.exists()


@pytest.mark.parametrize("name", sorted(settings.schema()))
def test_yaml_python_tags_are_refused_for_every_setting(capsys, tmp_path, name):
    sentinel = tmp_path / "pwned"
    text = f"{name}: !!python/object/apply:os.system ['touch {sentinel}']\n"
    rc, out, err = _run(capsys, "plan", "--json", "-c", _write(tmp_path, text))
    assert rc == 4, (out, err)
    assert "not valid YAML" in json.loads(out)["error"]["reason"]
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "text,named",
    [
        (
            'gpu_install_proxy: "http://p:3128\\"; APT::Update::Pre-Invoke {\\"touch /tmp/x\\";}; \\""\n',
            "gpu_install_proxy",
        ),
        (
            'gpu_install_proxy: "http://p:3128\\";APT::Update::Pre-Invoke{\\"touch/tmp/x\\";};\\""\n',
            "gpu_install_proxy",
        ),
        ("gpu_install_proxy: ftp://proxy.example\n", "gpu_install_proxy"),
        ("gpu_install_proxy: proxy.example:3128\n", "gpu_install_proxy"),
        ("nvidia_driver_runfile_url: ../../etc/passwd\n", "nvidia_driver_runfile_url"),
        ("nvidia_driver_runfile_url: javascript:alert(1)\n", "nvidia_driver_runfile_url"),
        ("nvidia_driver_runfile_sha256: 00\n", "nvidia_driver_runfile_sha256"),
        ("nvidia_driver_branch: 550; reboot\n", "nvidia_driver_branch"),
        ("nvidia_container_toolkit_version: 1.17.8-1 libc6=0\n", "nvidia_container_toolkit_version"),
        ("gpu_verify_image: --privileged\n", "gpu_verify_image"),
        ("docker_runtime_path: ../../bin/sh\n", "docker_runtime_path"),
        ("docker_runtime_path: /usr/bin/../../tmp/x\n", "docker_runtime_path"),
        ("gpu_install_repositories: {evil: {url: 'http://x'}}\n", "gpu_install_repositories"),
        ("gpu_install_repositories: {cuda: {url: 'gopher://x'}}\n", "gpu_install_repositories.cuda.url"),
        ('gpu_install_repositories: {cuda: {url: "http://x/\\nTypes: deb"}}\n', "gpu_install_repositories.cuda.url"),
        ("gpu_install_repositories: {docker: {fingerprint: '$(id)'}}\n", "gpu_install_repositories.docker"),
        ("gpu_install_repositories: {docker: {url: 'http://x', trusted: 'yes'}}\n", "gpu_install_repositories.docker"),
        ("gpu_install_repositories: {docker: [1, 2]}\n", "gpu_install_repositories.docker"),
        ("nvidia_container_driver_capabilities: [compute, '$(id)']\n", "nvidia_container_driver_capabilities"),
    ],
)
def test_settings_that_would_inject_into_files_or_argv_are_refused_naming_them(capsys, tmp_path, text, named):
    rc, out, err = _run(capsys, "plan", "--json", "-c", _write(tmp_path, text))
    assert rc == 4, (out, err)
    assert named in json.loads(out)["error"]["reason"]


@pytest.mark.parametrize(
    "text",
    [
        "gpu_install_proxy: http://proxy.example:3128\n",
        "gpu_install_proxy: http://bob:s%3Bcret@proxy.example:3128/\n",
        "nvidia_driver_runfile_url: https://us.download.nvidia.com/tesla/550.163.01/NVIDIA-Linux-x86_64-550.163.01.run\n",
        "nvidia_driver_runfile_url: file:///srv/NVIDIA-Linux-x86_64-550.163.01.run\n",
        f"nvidia_driver_runfile_sha256: {'a' * 64}\n",
        "nvidia_driver_branch: '550'\n",
        "nvidia_driver_branch: 550\n",
        "nvidia_container_toolkit_version: 1.17.8-1\n",
        "nvidia_container_toolkit_version: 1:1.17.8~rc.1-1\n",
        "gpu_verify_image: registry.example:5000/team/cuda:12.4.1-base@sha256:" + "0" * 64 + "\n",
        "docker_runtime_path: /usr/local/bin/nvidia-container-runtime\n",
        'gpu_install_drain_command: kubectl drain "$(hostname)" --ignore-daemonsets | logger\n',
        "gpu_install_report_dir: ../reports/gpu\n",
        "gpu_install_repositories: {docker: {url: 'https://mirror.example/docker', fingerprint: "
        "'9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88'}}\n",
    ],
)
def test_ordinary_values_pass_the_tighter_checks(tmp_path, text):
    values, _source = settings.load(_write(tmp_path, text))
    assert len(values) == 1


def test_a_settings_path_outside_etc_is_read_as_settings_not_trusted(capsys, tmp_path):
    import os

    rc, out, _err = _run(capsys, "plan", "--json", "-c", str(tmp_path / os.path.relpath("/etc/passwd", tmp_path)))
    assert rc == 4
    assert "must be a mapping" in json.loads(out)["error"]["reason"]


@pytest.mark.parametrize(
    "proxy",
    [
        'http://p:3128";APT::Update::Pre-Invoke{"touch/tmp/x";};x"',
        "http://p:3128\nproxy=http://evil",
        "http://p:3128\x00",
        "socks5h://p:1080",
    ],
)
def test_the_repository_files_refuse_a_hostile_proxy_themselves(proxy):
    """A fleet run (ansible-playbook) skips the CLI's settings checks: the files' writer checks the proxy too."""
    from conftest import module_utils

    repos = module_utils("repos")
    with pytest.raises(repos.RepoError) as exc:
        repos.check_proxy(proxy)
    assert exc.value.code == 4 and "gpu_install_proxy" in exc.value.reason
    assert repos.check_proxy("http://bob:pw@proxy.example:3128") == "http://bob:pw@proxy.example:3128"
