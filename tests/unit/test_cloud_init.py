"""gpu-install cloud-init: the rendered user-data, checked by Debian's real cloud-init, bash and the driver plan."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from conftest import module_utils

from gpu_install import __version__, cli
from gpu_install.cloud_init import PROVIDERS, InstallSource, providers, render, templates_dir

SETTINGS = {"nvidia_driver_branch": "570", "docker_package": "auto", "gpu_install_proxy": "http://proxy.example:3128"}


def files(text: str) -> dict[str, str]:
    doc = yaml.safe_load(text)
    return {f["path"]: f["content"] for f in doc["write_files"]}


def env_values(env_text: str) -> dict[str, str]:
    """The env file as bash reads it (it is sourced by the boot script)."""
    script = "set -a; . /dev/stdin; set +a; env -0"
    out = subprocess.run(["bash", "-c", script], input=env_text, capture_output=True, text=True, check=True).stdout
    return {k: v for k, _, v in (e.partition("=") for e in out.split("\0") if e) if k.startswith("GPU_INSTALL_")}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("image_build", [False, True])
def test_every_provider_renders_cloud_config_that_real_cloud_init_accepts(provider, image_build, tmp_path):
    cloud_init = shutil.which("cloud-init")
    assert cloud_init, "Debian's cloud-init is needed for `cloud-init schema`: scripts/test installs it"
    values = {**SETTINGS, "gpu_install_image_build": image_build}
    text = render(provider, values, InstallSource()).text
    out = tmp_path / "user-data.yaml"
    out.write_text(text)
    proc = subprocess.run([cloud_init, "schema", "-c", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) <= providers()[provider]["user_data_limit"]


def test_rendering_is_deterministic_and_the_cli_writes_the_same_bytes(tmp_path, capsys):
    a = render("aws", SETTINGS, InstallSource()).text
    b = render("aws", dict(reversed(list(SETTINGS.items()))), InstallSource()).text
    assert a == render("aws", SETTINGS, InstallSource()).text
    assert b != a  # the user's order is kept (YAML written as given), and still stable run to run
    settings = tmp_path / "config.yml"
    settings.write_text(yaml.safe_dump(SETTINGS, sort_keys=False))
    for n in (1, 2):
        assert cli.main(["cloud-init", "--provider", "aws", "-c", str(settings), "-o", str(tmp_path / f"u{n}")]) == 0
    assert (tmp_path / "u1").read_bytes() == (tmp_path / "u2").read_bytes() == a.encode()
    assert "nvidia_driver_branch" not in capsys.readouterr().err  # a pinned branch: no NVSwitch note


def test_the_settings_are_validated_and_embedded_as_yaml(tmp_path, capsys):
    text = render("gcp", SETTINGS, InstallSource()).text
    assert yaml.safe_load(files(text)["/etc/gpu-install/config.yml"]) == SETTINGS
    bad = tmp_path / "bad.yml"
    bad.write_text("nvidia_driver_source: sideways\n")
    assert cli.main(["cloud-init", "--provider", "gcp", "-c", str(bad)]) == 4
    assert "nvidia_driver_source" in capsys.readouterr().err
    assert cli.main(["cloud-init", "--provider", "gcp", "-c", str(tmp_path / "missing.yml")]) == 4


def test_image_build_keeps_the_switch_out_of_the_instances_settings():
    text = render("azure", {**SETTINGS, "gpu_install_image_build": True}, InstallSource()).text
    written = files(text)
    assert yaml.safe_load(written["/etc/gpu-install/config.yml"]) == SETTINGS
    assert yaml.safe_load(written["/etc/gpu-install/image-build.yml"]) == {**SETTINGS, "gpu_install_image_build": True}
    assert env_values(written["/etc/gpu-install/cloud-init.env"])["GPU_INSTALL_IMAGE_BUILD"] == "1"
    plain = files(render("azure", SETTINGS, InstallSource()).text)
    assert "/etc/gpu-install/image-build.yml" not in plain
    assert env_values(plain["/etc/gpu-install/cloud-init.env"])["GPU_INSTALL_IMAGE_BUILD"] == "0"


def test_empty_settings_give_a_file_the_boot_script_can_extend():
    config = files(render("aws", {}, InstallSource()).text)["/etc/gpu-install/config.yml"]
    assert yaml.safe_load(config) is None  # comment only: the roles' defaults
    assert yaml.safe_load(config + "nvidia_driver_source: distro  # appended\n") == {"nvidia_driver_source": "distro"}


def test_unknown_provider_is_a_usage_error(capsys):
    assert cli.main(["cloud-init", "--provider", "digitalocean"]) == 2
    assert "unknown provider 'digitalocean'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["cloud-init"])
    assert exc.value.code == 2


def test_install_sources_pinned_version_mirror_wheel_and_air_gapped_wheelhouse():
    def env(source: InstallSource) -> dict[str, str]:
        return env_values(files(render("aws", {}, source).text)["/etc/gpu-install/cloud-init.env"])

    assert env(InstallSource())["GPU_INSTALL_REQUIREMENT"] == f"gpu-install=={__version__}"
    pinned = env(InstallSource(package_version="0.3.1", index_url="https://pypi.mirror.example/simple"))
    assert pinned["GPU_INSTALL_REQUIREMENT"] == "gpu-install==0.3.1"
    assert pinned["GPU_INSTALL_INDEX_URL"] == "https://pypi.mirror.example/simple"
    assert pinned["GPU_INSTALL_NO_INDEX"] == "0"
    url = "https://files.example/gpu_install-0.2.0-py3-none-any.whl#sha256=" + "ab" * 32
    wheel = env(InstallSource(wheel_url=url, find_links="http://10.0.0.5/wheels/"))
    assert wheel["GPU_INSTALL_REQUIREMENT"] == url
    assert wheel["GPU_INSTALL_WANT_VERSION"] == "0.2.0"
    assert wheel["GPU_INSTALL_FIND_LINKS"] == "http://10.0.0.5/wheels/"
    assert wheel["GPU_INSTALL_NO_INDEX"] == "1"  # a wheelhouse and no index: nothing else is reached
    assert wheel["GPU_INSTALL_TRUSTED_HOSTS"] == "10.0.0.5"  # plain HTTP the user named; https needs no trust
    assert pinned["GPU_INSTALL_TRUSTED_HOSTS"] == ""


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["--package-version", "1.0", "--wheel-url", "https://x.example/gpu_install-1.0-py3-none-any.whl"], 2,
         "not allowed with"),
        (["--wheel-url", "https://x.example/other-1.0-py3-none-any.whl"], 2, "does not name a gpu-install wheel"),
        (["--index-url", "https://user:token@mirror.example/simple"], 2, "embeds no secret"),
        (["--find-links", "ftp://mirror.example/wheels"], 2, "not an http(s) or file URL"),
    ],
)  # fmt: skip
def test_bad_install_sources_and_embedded_credentials_are_refused(argv, code, words, capsys):
    try:
        rc = cli.main(["cloud-init", "--provider", "aws", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        rc = int(exc.code or 0)
    assert rc == code
    assert words in capsys.readouterr().err


def test_a_proxy_with_credentials_and_an_inside_reboot_policy_are_refused(tmp_path, capsys):
    settings = tmp_path / "s.yml"
    settings.write_text("gpu_install_proxy: http://bob:secret@proxy.example:3128\n")
    assert cli.main(["cloud-init", "--provider", "aws", "-c", str(settings)]) == 4
    assert "embeds no secret" in capsys.readouterr().err
    settings.write_text("gpu_install_reboot: if_needed\n")
    assert cli.main(["cloud-init", "--provider", "aws", "-c", str(settings)]) == 3
    assert "reboots once" in capsys.readouterr().err


def test_the_reboot_path_is_rendered_a_oneshot_unit_and_cloud_inits_power_state():
    text = render("gcp", {}, InstallSource()).text
    doc = yaml.safe_load(text)
    unit = files(text)["/etc/systemd/system/gpu-install-finish.service"]
    assert "Type=oneshot" in unit
    assert "ExecStart=/usr/local/sbin/gpu-install-bootstrap finish" in unit
    assert "Before=cloud-final.service" in unit  # `cloud-init status --wait` waits for it
    assert "StandardOutput=journal+console" in unit  # the serial console
    assert doc["runcmd"] == [["/usr/local/sbin/gpu-install-bootstrap", "first-boot"]]
    assert doc["power_state"]["mode"] == "reboot"
    assert doc["power_state"]["condition"] == "test -e /run/gpu-install/reboot"  # /run: once, never a loop
    assert "/var/lib/cloud/scripts/per-boot/gpu-install-report" in files(text)


def test_the_boot_script_is_valid_bash():
    script = files(render("azure", {}, InstallSource()).text)["/usr/local/sbin/gpu-install-bootstrap"]
    assert script == (templates_dir() / "cloud-init" / "gpu-install-bootstrap.sh").read_text()
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


def test_cloud_metadata_probes_are_data_per_provider():
    envs = {p: env_values(files(render(p, {}, InstallSource()).text)["/etc/gpu-install/cloud-init.env"])
            for p in PROVIDERS}  # fmt: skip
    assert envs["aws"]["GPU_INSTALL_MD_TOKEN_URL"] == "http://169.254.169.254/latest/api/token"  # IMDSv2
    assert envs["aws"]["GPU_INSTALL_MD_TOKEN_USE"] == "X-aws-ec2-metadata-token"
    assert envs["azure"]["GPU_INSTALL_MD_HEADER"] == "Metadata: true"
    assert "&format=text" in envs["azure"]["GPU_INSTALL_MD_URL"]  # quoted for the shell
    assert envs["gcp"]["GPU_INSTALL_MD_HEADER"] == "Metadata-Flavor: Google"
    assert "p5.48xlarge" in envs["aws"]["GPU_INSTALL_NVSWITCH_TYPES"].split()
    assert "a3-highgpu-8g" in envs["gcp"]["GPU_INSTALL_NVSWITCH_TYPES"].split()
    assert "Standard_ND96isr_H100_v5" in envs["azure"]["GPU_INSTALL_NVSWITCH_TYPES"].split()


def test_nvswitch_types_without_a_branch_get_a_note_and_secure_boot_source_yields_to_the_settings():
    notes = render("aws", {}, InstallSource()).notes
    assert len(notes) == 1 and "p4d.24xlarge" in notes[0] and "nvidia_driver_branch" in notes[0]
    assert render("aws", {"nvidia_driver_branch": "570"}, InstallSource()).notes == ()
    env = files(render("azure", {}, InstallSource()).text)["/etc/gpu-install/cloud-init.env"]
    assert env_values(env)["GPU_INSTALL_SECURE_BOOT_SOURCE"] == "distro"
    env = files(render("azure", {"nvidia_driver_source": "auto"}, InstallSource()).text)
    assert env_values(env["/etc/gpu-install/cloud-init.env"])["GPU_INSTALL_SECURE_BOOT_SOURCE"] == ""


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_driver_role_installs_each_clouds_ubuntu_kernel_headers(provider):
    """The cloud kernel's headers come from the driver plan's detection, not from the user-data."""
    driver = module_utils("driver")
    flavour = providers()[provider]["ubuntu_kernel_flavour"]
    release = f"6.8.0-1015-{flavour}"
    assert driver.kernel_flavour(release) == flavour
    facts = {
        "os": {"id": "ubuntu", "version_id": "22.04", "family": "debian", "arch": "x86_64",
               "like": {"id": "ubuntu", "version_id": "22.04"}},
        "kernel": {"release": release},
        "gpus": [{"device_id": "0x2330"}],
        "nvswitches": ["0000:05:00.0"],
    }  # fmt: skip
    names = ["nvidia-headless-no-dkms-570-server-open", f"linux-modules-nvidia-570-server-open-{flavour}"]
    plan = driver.plan(facts, {"source": "distro", "branch": "570"}, probes={"apt_names": names, "kernel_images": {}})
    assert plan["refusal"] is None, plan["refusal"]
    assert f"linux-headers-{flavour}" in plan["headers"]
    assert plan["fabricmanager"] == ["nvidia-fabricmanager-570", "libnvidia-nscq-570"]  # NVSwitches on the VM itself
    assert plan["signed_modules"] is True  # Canonical's signed modules: what Secure Boot needs


def test_user_data_carries_the_launch_command_of_each_cloud():
    flags = {"aws": "--user-data file://", "azure": "--custom-data", "gcp": "--metadata-from-file user-data="}
    for provider, flag in flags.items():
        assert flag in providers()[provider]["launch"]
        assert flag in render(provider, {}, InstallSource()).text
