"""The roles' public API: argument specs match defaults, names carry the role's prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
EXPECTED_ROLES = [
    "containerd", "docker", "gpu_install", "gpu_verify", "nvidia_container", "nvidia_driver", "nvidia_persistenced",
]  # fmt: skip


def _spec(role: str) -> dict:
    data = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


def _defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def test_the_roles_exist():
    assert ROLES == EXPECTED_ROLES


@pytest.mark.parametrize("role", EXPECTED_ROLES)
def test_argument_specs_match_defaults(role):
    spec, defaults = _spec(role), _defaults(role)
    assert set(spec) == set(defaults), f"{role}: argument_specs and defaults/main.yml list different variables"
    for name, option in spec.items():
        assert option.get("default") == defaults[name], f"{role}: {name} default differs"
        assert option.get("description"), f"{role}: {name} has no description"


@pytest.mark.parametrize("role", EXPECTED_ROLES)
def test_public_variables_carry_the_role_prefix(role):
    for name in _spec(role):
        assert name.startswith(role + "_"), name


@pytest.mark.parametrize("role", EXPECTED_ROLES)
def test_every_default_is_documented_by_a_comment_above_it(role):
    lines = (REPO / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "-", " ")):
            assert i > 0 and lines[i - 1].startswith("#"), f"{role}: {line} has no comment above it"


def test_settings_names_fixed_by_design_exist():
    names = set()
    for role in EXPECTED_ROLES:
        names |= set(_spec(role))
    fixed = {
        "nvidia_driver_source", "nvidia_driver_branch", "nvidia_driver_kernel_modules", "nvidia_container_mode",
        "docker_package", "gpu_verify_image", "gpu_install_image_build", "gpu_install_repositories",
        "gpu_install_proxy", "gpu_install_lock_timeout", "gpu_install_reboot", "gpu_install_drain_command",
        "gpu_install_undrain_command", "gpu_install_report_dir",
    }  # fmt: skip
    assert fixed <= names, fixed - names


def test_shared_settings_used_outside_gpu_install_fall_back_to_its_defaults():
    """Roles usable on their own write `gpu_install_x | default(v)`; v must be gpu_install's own default."""
    import re

    shared = _defaults("gpu_install")
    for path in (REPO / "roles").glob("*/tasks/*.yml"):
        if path.parts[-3] == "gpu_install":
            continue
        for name, literal in re.findall(r"(?<!\w)(gpu_install_\w+) \| default\(([^)]*)\)", path.read_text()):
            assert yaml.safe_load(literal) == shared[name], f"{path}: {name} falls back to {literal}"
