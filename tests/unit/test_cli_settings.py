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
