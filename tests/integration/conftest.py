"""Fixtures for integration tests on real systemd Debian hosts (see hosts.py).

* ``host_factory`` (session): ``host_factory("bookworm")`` starts a fresh host
  with this checkout's wheel installed; every host it made is removed at the
  end of the session (of the xdist worker).
* ``ssh_key`` (session): a key pair; ``host.authorize_ssh_key(ssh_key.public)``
  then ``ssh_key.argv(host, "true")`` logs in as root at ``host.ip``.
* ``bookworm_host`` / ``trixie_host`` (function): a fresh host per test,
  removed after it, so tests may change anything and run in any order or
  worker. ``debian_host`` is the same, parametrized over both suites.

Every test here gets the ``integration`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import SUITES, Host, HostFactory, SshKey, build_wheel, prepare, reap_stale


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel scripts/test built (GPU_INSTALL_TEST_WHEEL), else one built now."""
    given = os.environ.get("GPU_INSTALL_TEST_WHEEL")
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"GPU_INSTALL_TEST_WHEEL={given} does not exist")
        return Path(given)
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def host_factory(project_wheel: Path) -> Iterator[HostFactory]:
    reap_stale()
    factory = HostFactory(project_wheel, prepare(SUITES))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def bookworm_host(host_factory: HostFactory) -> Iterator[Host]:
    host = host_factory("bookworm")
    try:
        yield host
    finally:
        host_factory.remove(host)


@pytest.fixture
def trixie_host(host_factory: HostFactory) -> Iterator[Host]:
    host = host_factory("trixie")
    try:
        yield host
    finally:
        host_factory.remove(host)


@pytest.fixture(params=SUITES)
def debian_host(request: pytest.FixtureRequest, host_factory: HostFactory) -> Iterator[Host]:
    """A fresh host of each Debian suite in turn (the test runs once per suite)."""
    host = host_factory(request.param)
    try:
        yield host
    finally:
        host_factory.remove(host)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return SshKey.generate(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="session")
def dnf_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """FIXTURE: the dnf stand-ins of NVIDIA's CUDA repository, EPEL and a distribution (tests/fixtures/dnf_repos.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fixtures.dnf_repos import DnfRepos, tools_missing

    missing = tools_missing()
    if missing:
        pytest.fail(f"the dnf fixture needs {', '.join(missing)}: scripts/test installs them")
    with DnfRepos(tmp_path_factory.mktemp("dnf-repos")) as served:
        yield served
