"""gpu-install k8s runtimeclass: the RuntimeClass a cluster needs for gpu-install's containerd nodes.

Run through the CLI's own entry point (main), as a user runs it; the YAML is parsed back with PyYAML.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import module_utils

from gpu_install import cli, k8s

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "runtimeclass.yaml"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["k8s", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_runtimeclass_yaml_is_node_k8s_io_v1_with_the_nvidia_handler(capsys):
    rc, out, _ = _run(capsys, "runtimeclass")
    assert rc == 0
    obj = yaml.safe_load(out)
    assert obj == {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nvidia", "labels": {"app.kubernetes.io/managed-by": "gpu-install"}},
        "handler": "nvidia",
    }
    assert out.startswith("# RuntimeClass for the GPU nodes gpu-install readies")


def test_handler_is_the_runtime_name_the_containerd_module_configures():
    assert k8s.handler() == module_utils("containerd").Options().runtime_name == "nvidia"


def test_json_carries_schema_the_object_and_its_yaml_given_before_or_after_the_object(capsys):
    for argv in (("runtimeclass", "--json"), ("--json", "runtimeclass")):
        rc, out, _ = _run(capsys, *argv)
        result = json.loads(out)
        assert rc == 0 and result["schema"] == 1
        assert result["runtimeclass"]["handler"] == "nvidia"
        assert yaml.safe_load(result["yaml"]) == result["runtimeclass"]


def test_name_and_node_selector_shape_the_object(capsys):
    rc, out, _ = _run(
        capsys, "runtimeclass", "--name", "gpu", "--node-selector", "nvidia.com/gpu.present=true",
        "--node-selector", "pool=a100",
    )  # fmt: skip
    obj = yaml.safe_load(out)
    assert rc == 0 and obj["metadata"]["name"] == "gpu" and obj["handler"] == "nvidia"
    assert obj["scheduling"] == {"nodeSelector": {"nvidia.com/gpu.present": "true", "pool": "a100"}}


@pytest.mark.parametrize("pair", ["no-equals", "bad key=1", "a/b/c=1", "=x", "k=not a value", "k-=1"])
def test_a_malformed_node_selector_is_invalid_input_exit_4(capsys, pair):
    rc, out, err = _run(capsys, "runtimeclass", "--node-selector", pair)
    assert rc == 4 and out == ""
    assert err.startswith(f"gpu-install: error: --node-selector {pair!r} is not a Kubernetes label KEY=VALUE")
    assert err.count("\n") == 1


@pytest.mark.parametrize("name", ["NVIDIA", "gpu_class", "gpu-", "x" * 254])
def test_a_name_kubernetes_refuses_is_invalid_input_exit_4(capsys, name):
    rc, _, err = _run(capsys, "runtimeclass", "--name", name)
    assert rc == 4 and "is not a valid RuntimeClass name" in err


def test_k8s_without_an_object_is_usage_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["k8s"])
    assert exc.value.code == 2
    assert "OBJECT" in capsys.readouterr().err


def test_the_example_file_is_what_the_command_prints(capsys):
    _rc, out, _ = _run(capsys, "runtimeclass")
    assert EXAMPLE.read_text() == out
