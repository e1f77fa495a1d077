"""The example inventories (inventories/): every key is one the plugin documents, and the static one parses.

There is no cloud account here, so the cloud inventories are checked against what their plugins document:
``ansible-doc -t inventory PLUGIN --json`` from the collections of the ``ansible`` package (a test
dependency), recursively through suboptions, with types and choices. A key no plugin documents would be
ignored or refused only on a user's first run against a real cloud; here it fails the test. The constructed
expressions (groups, filters on the host's variables) are evaluated by Ansible's own templating against
host variables shaped as each plugin sets them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ROOT / "inventories"
PROVIDERS = ROOT / "templates" / "cloud-init" / "providers.yml"

# file -> (plugin, the provider's key in templates/cloud-init/providers.yml, the name ending the plugin needs)
CLOUD = {
    "aws_ec2.yml": ("amazon.aws.aws_ec2", "aws", ("aws_ec2.yml", "aws_ec2.yaml")),
    "azure_rm.yml": ("azure.azcollection.azure_rm", "azure", ("azure_rm.yml", "azure_rm.yaml")),
    "gcp_compute.yml": (
        "google.cloud.gcp_compute",
        "gcp",
        ("gcp_compute.yml", "gcp_compute.yaml", "gcp.yml", "gcp.yaml"),
    ),
}

# Python types of ansible-doc's option types (those the inventories use; others are not checked).
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "string": (str,),
    "list": (list,),
    "dict": (dict,),
    "bool": (bool,),
    "boolean": (bool,),
    "int": (int,),
    "integer": (int,),
}


def _tool(name: str) -> str:
    binary = shutil.which(name, path=os.path.dirname(sys.executable))
    if binary is None:
        pytest.fail(f"{name} is not installed beside {sys.executable} (the test dependencies install it)")
    return binary


def _env(tmp: Path) -> dict[str, str]:
    # Only the collections installed beside ansible-core (the ansible package's): nothing from ~/.ansible.
    (tmp / "collections").mkdir(exist_ok=True)
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp / "collections"), ANSIBLE_HOME=str(tmp / "home"))


@cache
def plugin_doc(plugin: str) -> dict[str, Any]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu-install-inventory-doc-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    proc = subprocess.run(
        [_tool("ansible-doc"), "-t", "inventory", "--json", plugin],
        capture_output=True,
        text=True,
        env=_env(tmp),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert plugin in doc, f"ansible-doc does not know {plugin}: {proc.stderr}"
    return doc[plugin]["doc"]


def problems(config: Any, options: dict[str, Any], where: str = "") -> list[str]:
    """What in ``config`` the documented ``options`` do not allow: unknown keys, wrong types, values off choices."""
    if not isinstance(config, dict):
        return [f"{where or 'the file'} is a {type(config).__name__}, not a mapping"]
    found = []
    for key, value in config.items():
        path = f"{where}.{key}" if where else str(key)
        option = options.get(key)
        if option is None:
            found.append(f"{path}: not an option the plugin documents")
            continue
        expected = TYPES.get(str(option.get("type")))
        if expected and not isinstance(value, expected):
            found.append(f"{path}: a {type(value).__name__}, documented as {option['type']}")
            continue
        choices = option.get("choices")
        if choices and option.get("type") != "list" and value not in choices:
            found.append(f"{path}: {value!r} is not one of {choices}")
        suboptions = option.get("suboptions")
        if suboptions:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                label = f"{path}[{i}]" if isinstance(value, list) else path
                # A list documented as "str or dict" (aws_ec2's hostnames) may hold plain strings.
                if isinstance(item, str) and option.get("elements") != "dict":
                    continue
                found += problems(item, suboptions, label)
        elif option.get("elements") in TYPES and isinstance(value, list):
            kinds = TYPES[option["elements"]]
            found += [
                f"{path}[{i}]: a {type(item).__name__}, documented as {option['elements']}"
                for i, item in enumerate(value)
                if not isinstance(item, kinds)
            ]
    return found


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((INVENTORIES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    return data


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_every_key_of_the_cloud_inventory_is_one_its_plugin_documents(name):
    plugin, _provider, _endings = CLOUD[name]
    config = load(name)
    # `plugin` is the key Ansible's auto plugin reads to pick the plugin; the rest are the plugin's own.
    assert config.pop("plugin") == plugin
    assert config, f"{name} configures nothing"
    assert problems(config, plugin_doc(plugin)["options"]) == []


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_the_cloud_inventory_is_named_as_its_plugin_requires(name):
    plugin, _provider, endings = CLOUD[name]
    assert name.endswith(endings)
    # The plugin's own documentation states that ending (so the table above is not a guess).
    description = " ".join(plugin_doc(plugin)["description"])
    assert endings[0].split(".")[0] in description


def test_an_undocumented_key_or_suboption_is_found():
    options = plugin_doc("amazon.aws.aws_ec2")["options"]
    config = load("aws_ec2.yml")
    config.pop("plugin")
    config["instance_filters"] = {"instance-type": "p5.*"}  # not an aws_ec2 option (filters is)
    config["keyed_groups"].append({"key": "instance_type", "prefixx": "type"})  # a typo'd suboption
    config["hostnames"].append({"name": "dns-name", "suffix": "x"})  # hostnames' dicts: name, prefix, separator
    config["strict"] = "no"  # a string where the plugin documents a bool
    found = problems(config, options)
    assert any(p.startswith("instance_filters:") for p in found), found
    assert "keyed_groups[4].prefixx: not an option the plugin documents" in found, found
    assert any(p.startswith("hostnames[") and ".suffix:" in p for p in found), found
    assert any(p.startswith("strict:") for p in found), found
    assert len(found) == 4, found


def test_an_azure_auth_source_off_the_documented_choices_is_found():
    options = plugin_doc("azure.azcollection.azure_rm")["options"]
    assert problems({"auth_source": "kerberos"}, options) == [
        f"auth_source: 'kerberos' is not one of {options['auth_source']['choices']}"
    ]


@pytest.mark.parametrize("name", sorted(CLOUD))
def test_the_nvswitch_group_names_exactly_the_types_the_cloud_init_data_names(name):
    """inventories/ and `gpu-install cloud-init` agree on which instance types need the driver branch pinned."""
    _plugin, provider, _endings = CLOUD[name]
    config = load(name)
    groups = config.get("groups") or config.get("conditional_groups")
    expression = groups["nvswitch"]
    listed = expression[expression.index("[") : expression.rindex("]") + 1]
    types = yaml.safe_load(listed)
    data = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))
    assert sorted(types) == sorted(data["providers"][provider]["nvswitch_types"])


# --- the constructed expressions, evaluated as the plugins evaluate them ------------------------------------


def evaluate(expression: str, hostvars: dict[str, Any]) -> Any:
    """A Jinja2 expression over a host's variables, by Ansible's Templar (as the constructed features do)."""
    from ansible.template import Templar

    return Templar(loader=None, variables=hostvars).evaluate_expression(_trusted(expression))


def _trusted(expression: str) -> Any:
    # The inventory file is trusted input for Ansible (2.19 marks it so); mark the string the same way.
    try:
        from ansible.template import trust_as_template
    except ImportError:  # ansible-core < 2.19
        return expression
    return trust_as_template(expression)


def conditional(expression: str | bool, hostvars: dict[str, Any]) -> bool:
    if isinstance(expression, bool):
        return expression
    return bool(evaluate(expression, hostvars))


@pytest.mark.parametrize(
    ("size", "kept"),
    [
        ("Standard_NC4as_T4_v3", True),
        ("Standard_NC24ads_A100_v4", True),
        ("Standard_ND96isr_H100_v5", True),
        ("Standard_NV36ads_A10_v5", True),
        ("Standard_NV12s_v3", True),
        ("Standard_NV16as_v4", False),  # AMD Radeon Instinct MI25
        ("Standard_D4s_v5", False),
        ("Standard_NP10s", False),  # FPGA
        ("Standard_HB120rs_v3", False),
    ],
)
def test_the_azure_inventory_keeps_exactly_the_nvidia_gpu_sizes(size, kept):
    config = load("azure_rm.yml")
    hostvars = {"virtual_machine_size": size}
    excluded = any(conditional(e, hostvars) for e in config["exclude_host_filters"])
    assert excluded is not kept


@pytest.mark.parametrize(
    ("name", "variable", "nvswitch", "other"),
    [
        ("aws_ec2.yml", "instance_type", "p5.48xlarge", "g5.xlarge"),
        ("azure_rm.yml", "virtual_machine_size", "Standard_ND96isr_H100_v5", "Standard_NC24ads_A100_v4"),
        ("gcp_compute.yml", "machineType", "a3-highgpu-8g", "a3-highgpu-1g"),
    ],
)
def test_the_groups_put_nvswitch_boards_in_nvswitch_and_every_host_in_gpu_hosts(name, variable, nvswitch, other):
    config = load(name)
    groups = config.get("groups") or config["conditional_groups"]
    for value, in_nvswitch in ((nvswitch, True), (other, False)):
        hostvars = {variable: value}
        assert conditional(groups["nvswitch"], hostvars) is in_nvswitch, value
        assert conditional(groups["gpu_hosts"], hostvars) is True
    # Each cloud's hosts get its group (group_vars/<group>.yml) and nothing is in a group without a file.
    cloud = CLOUD[name][1]
    assert conditional(groups[cloud], {variable: other}) is True
    for group in groups:
        assert (INVENTORIES / "group_vars" / f"{group}.yml").is_file(), group


def test_the_aws_family_key_and_the_gcp_address_read_the_plugins_host_variables():
    aws = load("aws_ec2.yml")
    family = next(g for g in aws["keyed_groups"] if g["prefix"] == "family")
    assert evaluate(family["key"], {"instance_type": "p4de.24xlarge"}) == "p4de"
    assert evaluate(aws["compose"]["ansible_host"], {"public_ip_address": "", "private_ip_address": "10.0.0.5"}) == (
        "10.0.0.5"
    )
    gcp = load("gcp_compute.yml")
    external = {"networkInterfaces": [{"networkIP": "10.1.0.2", "accessConfigs": [{"natIP": "203.0.113.7"}]}]}
    internal = {"networkInterfaces": [{"networkIP": "10.1.0.2", "accessConfigs": [{}]}]}
    assert evaluate(gcp["compose"]["ansible_host"], external) == "203.0.113.7"
    assert evaluate(gcp["compose"]["ansible_host"], internal) == "10.1.0.2"


# --- the static inventory and the settings in group_vars -----------------------------------------------------


def test_the_static_inventory_parses_with_its_group_vars(tmp_path):
    proc = subprocess.run(
        [_tool("ansible-inventory"), "-i", str(INVENTORIES / "static.yml"), "--list"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    inventory = json.loads(proc.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    assert sorted(hostvars) == ["gpu-infer-01", "gpu-infer-02", "gpu-infer-03", "gpu-train-01", "gpu-train-02"]
    assert inventory["gpu_hosts"]["children"] == ["training", "inference", "nvswitch"]
    # From the general to the specific: all.yml, gpu_hosts.yml, the host's groups, the host itself.
    assert all(v["ansible_become"] is True and v["gpu_install_lock_timeout"] == 600 for v in hostvars.values())
    assert hostvars["gpu-train-01"]["nvidia_driver_branch"] == "570"  # nvswitch.yml
    assert hostvars["gpu-train-01"]["gpu_install_reboot"] == "if_needed"  # training.yml over all.yml
    assert "nvidia_driver_branch" not in hostvars["gpu-infer-01"]
    assert hostvars["gpu-infer-01"]["nvidia_container_mode"] == "runtime"  # gpu_hosts.yml
    assert hostvars["gpu-infer-02"]["nvidia_container_mode"] == "cdi"  # the host's own
    assert hostvars["gpu-infer-03"]["nvidia_driver_source"] == "none"


@pytest.mark.parametrize("path", sorted((INVENTORIES / "group_vars").glob("*.yml")), ids=lambda p: p.name)
def test_group_vars_hold_only_valid_gpu_install_settings_besides_ansible_connection_variables(path):
    from gpu_install import settings

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    gpu_settings = {k: v for k, v in data.items() if not k.startswith("ansible_")}
    # The CLI's own validation (the roles' argument specs and the value rules): raises on anything else.
    assert settings.validate(gpu_settings, str(path)) == gpu_settings
    # The site playbook's batch settings are play keywords, read from extra vars only.
    assert not {"gpu_install_serial", "gpu_install_max_fail_percentage"} & set(data)
