"""repos: the vendors' repositories as data, mirrors applied, files rendered, apt's words classified."""

from __future__ import annotations

import pytest
from conftest import module_utils

repos = module_utils("repos")
errors = module_utils("errors")


def facts(base: str, version: str, arch: str = "x86_64", os_id: str | None = None) -> dict:
    return {"id": os_id or base, "version_id": version, "arch": arch, "like": {"id": base, "version_id": version}}


ALL_BASES = sorted(repos.BASES)
ALL = [(b, a, r) for b in ALL_BASES for a in repos.ARCHES for r in repos.REPO_IDS]


@pytest.mark.parametrize(("base", "arch", "repo_id"), ALL)
def test_every_base_arch_and_repository_resolves_or_is_refused_clearly(base, arch, repo_id):
    vendor = repos.VENDORS[repo_id]
    try:
        repo = repos.resolve(repo_id, facts(*base, arch))
    except repos.RepoError as exc:
        if (*base, arch) in vendor["absent"] or repos.BASES[base]["family"] not in vendor:
            assert exc.code == errors.UNSUPPORTED
        else:
            assert base in vendor["unpinned"]
            assert exc.code == errors.PACKAGE_SOURCE
            assert f"set gpu_install_repositories.{repo_id}.fingerprint" in exc.reason
        return
    assert repo.uri.startswith(vendor["base"] + "/")
    assert repo.key_url.startswith(vendor["base"] + "/")
    assert len(repo.fingerprint) == 40
    assert "{" not in repo.uri + repo.key_url + repo.suite
    assert repo.packages == tuple(vendor["packages"])


@pytest.mark.parametrize(
    ("base", "arch", "uri", "key_url"),
    [
        (("ubuntu", "22.04"), "x86_64", "ubuntu2204/x86_64/", "ubuntu2204/x86_64/3bf863cc.pub"),
        (("ubuntu", "24.04"), "aarch64", "ubuntu2404/sbsa/", "ubuntu2404/sbsa/3bf863cc.pub"),
        (("debian", "12"), "x86_64", "debian12/x86_64/", "debian12/x86_64/3bf863cc.pub"),
        (("rhel", "9"), "x86_64", "rhel9/x86_64", "rhel9/x86_64/D42D0685.pub"),
        (("rhel", "8"), "aarch64", "rhel8/sbsa", "rhel8/sbsa/D42D0685.pub"),
        (("amzn", "2023"), "x86_64", "amzn2023/x86_64", "amzn2023/x86_64/D42D0685.pub"),
        (("amzn", "2023"), "aarch64", "amzn2023/sbsa", "amzn2023/sbsa/D42D0685.pub"),
    ],
)
def test_cuda_layout_follows_nvidia(base, arch, uri, key_url):
    repo = repos.resolve("cuda", facts(*base, arch))
    root = "https://developer.download.nvidia.com/compute/cuda/repos/"
    assert (repo.uri, repo.key_url) == (root + uri, root + key_url)
    expected = repos.CUDA_DEB_KEY if base[0] in ("ubuntu", "debian") else repos.CUDA_RPM_KEY
    assert repo.fingerprint == expected
    if repo.family == "debian":
        assert (repo.suite, repo.components) == ("/", ())


def test_toolkit_and_docker_layouts_follow_the_vendors():
    tk = repos.resolve("nvidia_container_toolkit", facts("ubuntu", "22.04", "aarch64"))
    assert tk.uri == "https://nvidia.github.io/libnvidia-container/stable/deb/arm64/"
    assert tk.key_url == "https://nvidia.github.io/libnvidia-container/gpgkey"
    tk_rpm = repos.resolve("nvidia_container_toolkit", facts("rhel", "9"))
    assert tk_rpm.uri == "https://nvidia.github.io/libnvidia-container/stable/rpm/x86_64"
    assert (tk_rpm.gpgcheck, tk_rpm.repo_gpgcheck) == (False, True)
    docker = repos.resolve("docker", facts("debian", "12"))
    assert (docker.uri, docker.suite, docker.components) == (
        "https://download.docker.com/linux/debian",
        "bookworm",
        ("stable",),
    )
    assert docker.key_url == "https://download.docker.com/linux/debian/gpg"
    rhel = repos.resolve("docker", facts("rhel", "9", os_id="rhel"))
    rocky = repos.resolve("docker", facts("rhel", "9", os_id="rocky"))
    assert rhel.uri == "https://download.docker.com/linux/rhel/9/x86_64/stable"
    assert rocky.uri == "https://download.docker.com/linux/centos/9/x86_64/stable"
    assert rocky.key_url == "https://download.docker.com/linux/centos/gpg"


def test_a_derivative_uses_its_base():
    mint = {"id": "linuxmint", "version_id": "21.3", "arch": "x86_64", "like": {"id": "ubuntu", "version_id": "22.04"}}
    assert repos.resolve("docker", mint).suite == "jammy"
    assert repos.resolve("docker", {"os": mint}).uri.endswith("/linux/ubuntu")  # the whole gpu_facts result too


def test_amazon_linux_has_no_docker_ce_repository():
    with pytest.raises(repos.RepoError) as exc:
        repos.resolve("docker", facts("amzn", "2023"))
    assert exc.value.code == errors.UNSUPPORTED
    assert "docker_package: auto" in exc.value.reason


def test_debian_13_cuda_fails_closed_until_the_user_pins():
    with pytest.raises(repos.RepoError) as exc:
        repos.resolve("cuda", facts("debian", "13"))
    assert exc.value.code == errors.PACKAGE_SOURCE
    assert "has no pinned key fingerprint: set gpu_install_repositories.cuda.fingerprint" in exc.value.reason
    pinned = repos.resolve("cuda", facts("debian", "13"), {"cuda": {"fingerprint": "ab" * 20}})
    assert pinned.fingerprint == "AB" * 20


def test_a_mirror_url_keeps_the_vendor_layout_and_key_path():
    repo = repos.resolve("cuda", facts("ubuntu", "22.04"), {"cuda": {"url": "https://mirror.example/nv/cuda/"}})
    assert repo.uri == "https://mirror.example/nv/cuda/ubuntu2204/x86_64/"
    assert repo.key_url == "https://mirror.example/nv/cuda/ubuntu2204/x86_64/3bf863cc.pub"
    assert repo.fingerprint == repos.CUDA_DEB_KEY  # a mirror keeps the vendor's signatures by default
    assert repo.mirrored


def test_a_re_signing_mirror_gives_its_own_key_url_and_pin():
    over = {"docker": {"url": "http://m/docker", "key_url": "http://m/key.asc", "fingerprint": "0x" + "1" * 40}}
    repo = repos.resolve("docker", facts("ubuntu", "24.04"), over)
    assert (repo.key_url, repo.fingerprint, repo.suite) == ("http://m/key.asc", "1" * 40, "noble")


@pytest.mark.parametrize(
    "override",
    [
        {"cuda": {"uri": "http://x"}},
        {"cuda": {"url": "ftp://x/y"}},
        {"cuda": {"url": "not a url"}},
        {"cuda": {"fingerprint": "3BF863CC"}},
        {"cuda": ["http://x"]},
    ],
)
def test_malformed_overrides_are_invalid_input(override):
    with pytest.raises(repos.RepoError) as exc:
        repos.resolve("cuda", facts("ubuntu", "22.04"), override)
    assert exc.value.code == errors.INVALID_INPUT
    assert "gpu_install_repositories.cuda" in exc.value.reason


def test_unsupported_platforms_are_refused_with_code_3():
    for bad in (facts("fedora", "40"), facts("ubuntu", "22.04", "ppc64le")):
        with pytest.raises(repos.RepoError) as exc:
            repos.resolve("cuda", bad)
        assert exc.value.code == errors.UNSUPPORTED


def test_without_the_drivers_plan_each_repository_is_checked_for_its_own_packages():
    assert repos.packages_for("cuda") == ("cuda-drivers",)
    assert repos.packages_for("docker") == ("docker-ce", "docker-ce-cli", "containerd.io")
    assert repos.packages_for("epel") == ("dkms",)


def test_deb822_flat_repository_has_no_components_and_its_own_keyring():
    text = repos.render_deb822(repos.resolve("cuda", facts("ubuntu", "22.04")))
    fields = dict(line.split(": ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert fields == {
        "Types": "deb",
        "URIs": "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/",
        "Suites": "/",
        "Architectures": "amd64",
        "Signed-By": "/etc/apt/keyrings/gpu-install-cuda.gpg",
    }


def test_deb822_docker_has_suite_and_component():
    text = repos.render_deb822(repos.resolve("docker", facts("debian", "12", "aarch64")))
    assert "Suites: bookworm\nComponents: stable\nArchitectures: arm64\n" in text
    assert "Signed-By: /etc/apt/keyrings/gpu-install-docker.gpg" in text


def test_dnf_repo_checks_signatures_with_the_local_key_and_uses_the_proxy():
    cuda = repos.render_dnf(repos.resolve("cuda", facts("rhel", "9")), proxy="http://proxy:3128")
    assert "[gpu-install-cuda]" in cuda
    assert "gpgcheck=1\nrepo_gpgcheck=0\ngpgkey=file:///etc/pki/rpm-gpg/gpu-install-cuda.asc\n" in cuda
    assert "proxy=http://proxy:3128\n" in cuda
    tk = repos.render_dnf(repos.resolve("nvidia_container_toolkit", facts("amzn", "2023")))
    assert "repo_gpgcheck=1" in tk
    assert "proxy=" not in tk


@pytest.mark.parametrize(("base", "arch", "repo_id"), [x for x in ALL if x[0] != ("debian", "13")])
def test_rendered_files_never_trust_without_a_key(base, arch, repo_id):
    try:
        repo = repos.resolve(repo_id, facts(*base, arch))
    except repos.RepoError:
        return
    text = repos.render_deb822(repo) if repo.family == "debian" else repos.render_dnf(repo)
    assert "trusted" not in text.lower()
    assert "apt-key" not in text
    assert ("Signed-By: /etc/apt/keyrings/" in text) or ("gpgkey=file:///etc/pki/rpm-gpg/" in text)


def test_apt_proxy_conf_names_only_the_repositories_hosts():
    rs = [repos.resolve(i, facts("ubuntu", "22.04")) for i in ("cuda", "docker")]
    conf = repos.apt_proxy_conf(rs, "http://proxy:3128")
    assert 'Acquire::https::Proxy::developer.download.nvidia.com "http://proxy:3128";' in conf
    assert 'Acquire::https::Proxy::download.docker.com "http://proxy:3128";' in conf
    assert repos.apt_proxy_conf(rs, "") == ""


APT_SAYS = {
    "unreachable": "Err:1 http://127.0.0.1:9 / InRelease\n"
    "  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111)",
    "not_found": "Err:2 http://m/x / Release\n  404  Not Found [IP: 1.2.3.4 80]\n"
    "E: The repository 'x' does not have a Release file.",
    "signature": "W: GPG error: http://m/x / InRelease: The following signatures couldn't be verified because "
    "the public key is not available: NO_PUBKEY 448406256CB5588E",
    "expired": "W: GPG error: x: The following signatures were invalid: EXPKEYSIG A4B469963BF863CC",
    "conflict": "E: Conflicting values set for option Signed-By regarding source https://x/ /: /a.gpg != /b.gpg",
    "fine": "Hit:1 http://m/x / InRelease\nReading package lists...",
}


@pytest.mark.parametrize(
    ("case", "kind"),
    [("unreachable", "unreachable"), ("not_found", "not_found"), ("signature", "signature"),
     ("expired", "signature"), ("conflict", "conflict"), ("fine", None)],
)  # fmt: skip
def test_apt_output_is_classified(case, kind):
    got = repos.classify_apt(APT_SAYS[case])
    assert (got[0] if got else None) == kind


@pytest.mark.parametrize(
    ("base", "arch", "key_url"),
    [
        (("debian", "13"), "x86_64", "debian13/x86_64/8793F200.pub"),
        (("rhel", "10"), "x86_64", "rhel10/x86_64/CDF6BA43.pub"),
        (("rhel", "10"), "aarch64", "rhel10/sbsa/CDF6BA43.pub"),
    ],
)  # fmt: skip
def test_newer_cuda_keys_are_fetched_from_their_own_file_and_need_the_users_pin(base, arch, key_url):
    root = "https://developer.download.nvidia.com/compute/cuda/repos/"
    with pytest.raises(repos.RepoError) as exc:
        repos.resolve("cuda", facts(*base, arch))
    assert exc.value.code == errors.PACKAGE_SOURCE and root + key_url in exc.value.reason
    pinned = repos.resolve("cuda", facts(*base, arch), {"cuda": {"fingerprint": "AB" * 20}})
    assert pinned.key_url == root + key_url and pinned.fingerprint == "AB" * 20


def test_debian_13_has_no_cuda_repository_on_aarch64():
    with pytest.raises(repos.RepoError) as exc:
        repos.resolve("cuda", facts("debian", "13", "aarch64"))
    assert exc.value.code == errors.UNSUPPORTED and "nvidia_driver_source: distro" in exc.value.reason


@pytest.mark.parametrize(
    ("os_id", "version", "arch", "path", "key", "fingerprint"),
    [
        ("rocky", "8.10", "x86_64", "8/Everything/x86_64", "RPM-GPG-KEY-EPEL-8",
         "94E279EB8D8F25B21810ADF121EA45AB2F86D6A1"),
        ("rhel", "9.4", "aarch64", "9/Everything/aarch64", "RPM-GPG-KEY-EPEL-9",
         "FF8AD1344597106ECE813B918A3872BF3228467C"),
        ("almalinux", "10.1", "x86_64", "10.1/Everything/x86_64", "RPM-GPG-KEY-EPEL-10",
         "7D8D15CBFC4E62688591FB2633D98517E37ED158"),
        ("centos", "10", "x86_64", "10/Everything/x86_64", "RPM-GPG-KEY-EPEL-10",
         "7D8D15CBFC4E62688591FB2633D98517E37ED158"),
    ],
)  # fmt: skip
def test_epel_repository_file_follows_the_release_with_its_pinned_key(os_id, version, arch, path, key, fingerprint):
    host = {
        "id": os_id,
        "version_id": version,
        "arch": arch,
        "like": {"id": "rhel", "version_id": version.split(".")[0]},
    }
    repo = repos.resolve("epel", host)
    text = repos.render_dnf(repo)
    assert f"baseurl=https://dl.fedoraproject.org/pub/epel/{path}\n" in text
    assert repo.key_url == f"https://dl.fedoraproject.org/pub/epel/{key}"
    assert f"key fingerprint {fingerprint}" in text and "gpgcheck=1" in text


def test_epel_is_refused_where_it_serves_nothing():
    for host in (facts("amzn", "2023"), facts("ubuntu", "24.04")):
        with pytest.raises(repos.RepoError) as exc:
            repos.resolve("epel", host)
        assert exc.value.code == errors.UNSUPPORTED


def test_docker_signs_its_rpm_and_apt_repositories_with_different_pinned_keys():
    rpm = repos.resolve("docker", facts("rhel", "9", os_id="rocky"))
    apt = repos.resolve("docker", facts("debian", "12"))
    assert rpm.key_url == "https://download.docker.com/linux/centos/gpg"
    assert "key fingerprint 060A61C51B558A7F742B77AAC52FEB6B621E9F35" in repos.render_dnf(rpm)
    assert "key fingerprint 9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in repos.render_deb822(apt)
