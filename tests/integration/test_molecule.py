"""Molecule's scenarios (molecule/) pass: `molecule test -s default` and `-s cdi`, run as a developer runs them.

Each scenario starts its own systemd Debian host from the image tests/integration/hosts.py builds, runs the
collection's site playbook in check mode, then for real, then again (idempotence), verifies the host and
destroys it. This wrapper gives the scenarios what only a test run has (docs/molecule.md):

* the host image's tag (``hosts.prepare()``) and the Docker bridge gateway, where apt-cacher-ng listens;
* FIXTURE: for ``default`` (runtime mode), tests/fixtures/mirror.py's signed stand-in for NVIDIA's container
  toolkit repository, started here and handed over as ``gpu_install_repositories`` (JSON);
* the collection, from this checkout, on ANSIBLE_COLLECTIONS_PATH.

Molecule destroys its instance at the end whatever happened (``--destroy always``); the container is also
named and labelled as hosts.py names its own, so this test removes it afterwards and a killed run's leftover
is reaped by the next session (hosts.reap_stale).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hosts import OWNER_LABEL, PREFIX, ROOT, docker, prepare

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror, bridge_gateway, tools_missing  # noqa: E402

SCENARIOS = {"default": "bookworm", "cdi": "trixie"}
TIMEOUT = 1800  # seconds for one `molecule test`; a hung step fails the test rather than the CI run


def molecule() -> str:
    binary = Path(sys.executable).parent / "molecule"
    if not binary.is_file():
        pytest.fail(f"molecule is not installed beside {sys.executable} (the test dependencies install it)")
    return str(binary)


def collections_path(tmp: Path) -> Path:
    """A collections path whose gpu_install.nvidia is this checkout (the repository root is the collection)."""
    link = tmp / "ansible_collections" / "gpu_install" / "nvidia"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    return tmp


def remove_instance(name: str) -> None:
    docker("rm", "-f", "-v", name, check=False)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario_passes(scenario, tmp_path):
    missing = tools_missing()
    assert not missing, f"the mirror fixture needs {', '.join(missing)}"
    gateway = bridge_gateway()
    assert gateway, "no docker0 bridge: Molecule's instance could not reach apt-cacher-ng or the mirror"
    image = prepare([SCENARIOS[scenario]])[SCENARIOS[scenario]]
    name = f"{PREFIX}molecule-{scenario}-{os.getpid()}"
    env = {
        **os.environ,
        "GPU_INSTALL_MOLECULE_HOST": name,
        "GPU_INSTALL_MOLECULE_IMAGE": image,
        "GPU_INSTALL_MOLECULE_GATEWAY": gateway,
        "GPU_INSTALL_MOLECULE_OWNER": str(os.getpid()),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path(tmp_path / "collections")),
        # Molecule's and Ansible's scratch state in this test's directory, never in the checkout or ~.
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
    }
    mirror = None
    try:
        if scenario == "default":
            mirror = Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gateway)).start()
            repositories = mirror.repositories(gateway, ids=("nvidia_container_toolkit",))
            env["GPU_INSTALL_MOLECULE_REPOSITORIES"] = json.dumps(repositories)
        proc = subprocess.run(
            [molecule(), "test", "--scenario-name", scenario, "--destroy", "always"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        (tmp_path / "molecule.log").write_text(proc.stdout)
        tail = "\n".join(proc.stdout.splitlines()[-250:])
        assert proc.returncode == 0, f"molecule test -s {scenario} failed (rc {proc.returncode}):\n{tail}"
        # Each step of the sequence ran (a scenario file that lost one would still exit 0).
        for step in ("check", "converge", "idempotence", "verify", "destroy"):
            assert f"{step}" in proc.stdout, f"no {step} step in molecule's output:\n{tail}"
        left = docker("ps", "-a", "-q", "--filter", f"name=^{name}$").stdout.decode().split()
        assert left == [], f"molecule left its instance {name} behind"
    finally:
        if mirror is not None:
            mirror.close()
        remove_instance(name)
        owned = docker("ps", "-a", "-q", "--filter", f"label={OWNER_LABEL}={os.getpid()}", "--filter", "name=molecule")
        for container in owned.stdout.decode().split():
            docker("rm", "-f", "-v", container, check=False)
