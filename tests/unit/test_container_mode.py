"""Whose each NVIDIA CDI spec is when a host switches container modes (module_utils container_mode and its module).

Spec files and units are written in a scratch tree standing in for /etc/cdi, /var/run/cdi, /var/lib/gpu-install
and /etc/systemd/system; their text is what each writer writes (the legacy unit as earlier releases of the
nvidia_container role rendered it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import make_tree, module_utils, run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.units import LEGACY_CDI_REFRESH_UNIT  # noqa: E402

cm = module_utils("container_mode")

SPEC = "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n"
LEGACY_UNIT = LEGACY_CDI_REFRESH_UNIT
CDI_UNIT = LEGACY_UNIT.replace(
    "ExecStart=/usr/bin/nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
    "ExecStart=/usr/local/bin/gpu-install cdi --quiet --output=/etc/cdi/gpu-install-nvidia.json",
)


def test_cdi_mode_refuses_the_toolkits_spec_on_a_host_gpu_install_never_ran_runtime_mode_on():
    result = cm.inspect("cdi", None, None, [cm.TOOLKIT_SPEC])
    assert result["foreign"] == [cm.TOOLKIT_SPEC] and result["take_back"] == []


def test_cdi_mode_takes_back_the_toolkits_spec_after_gpu_install_ran_runtime_mode():
    record = cm.render_record("runtime", [cm.TOOLKIT_SPEC])
    result = cm.inspect("cdi", record, None, [cm.TOOLKIT_SPEC, cm.OWN_SPEC])
    assert result["foreign"] == []
    assert result["take_back"] == [cm.TOOLKIT_SPEC]
    assert result["previous_mode"] == "runtime"


def test_cdi_mode_takes_back_both_specs_of_a_host_applied_before_the_record_existed():
    result = cm.inspect("cdi", None, LEGACY_UNIT, [cm.LEGACY_SPEC, cm.TOOLKIT_SPEC])
    assert result["foreign"] == []
    assert result["take_back"] == sorted([cm.LEGACY_SPEC, cm.TOOLKIT_SPEC])
    assert result["legacy_unit"] and result["own_unit"] and result["previous_mode"] == "runtime"


def test_a_spec_someone_else_wrote_stays_foreign_beside_runtime_modes_own():
    record = cm.render_record("runtime", [cm.TOOLKIT_SPEC])
    other = "/etc/cdi/vendor-gpu.yaml"
    result = cm.inspect("cdi", record, LEGACY_UNIT, [other, cm.LEGACY_SPEC, cm.TOOLKIT_SPEC])
    assert result["foreign"] == [other]


def test_the_legacy_spec_without_gpu_install_s_runtime_unit_is_foreign():
    # gpu-install's cdi-mode unit, or a unit of the same name written by someone else, proves nothing.
    for unit in (CDI_UNIT, LEGACY_UNIT.replace("# Written by gpu-install", "# Written by hand"), None):
        result = cm.inspect("cdi", None, unit, [cm.LEGACY_SPEC])
        assert result["foreign"] == [cm.LEGACY_SPEC], unit


def test_after_the_switch_to_cdi_mode_a_returning_toolkit_spec_is_foreign():
    # The record now says cdi: a toolkit spec that appears again was made by someone who re-enabled its units.
    record = cm.render_record("cdi", [cm.OWN_SPEC])
    result = cm.inspect("cdi", record, CDI_UNIT, [cm.OWN_SPEC, cm.TOOLKIT_SPEC])
    assert result["foreign"] == [cm.TOOLKIT_SPEC] and result["take_back"] == []


def test_runtime_mode_keeps_the_toolkits_spec_and_takes_back_gpu_install_s_own():
    result = cm.inspect("runtime", cm.render_record("cdi", [cm.OWN_SPEC]), CDI_UNIT, [cm.OWN_SPEC, cm.TOOLKIT_SPEC])
    assert result["keep"] == [cm.TOOLKIT_SPEC]
    assert result["take_back"] == [cm.OWN_SPEC]
    assert result["foreign"] == [] and result["own_unit"] and not result["legacy_unit"]


def test_runtime_mode_takes_back_the_legacy_spec_only_with_the_legacy_unit():
    assert cm.LEGACY_SPEC in cm.inspect("runtime", None, LEGACY_UNIT, [cm.LEGACY_SPEC])["take_back"]
    assert cm.inspect("runtime", None, None, [cm.LEGACY_SPEC])["foreign"] == [cm.LEGACY_SPEC]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"schema": 2, "mode": "runtime", "cdi_specs": []}',
        '{"schema": 1, "mode": "other", "cdi_specs": []}',
        '{"schema": 1, "mode": "runtime", "cdi_specs": "/var/run/cdi/nvidia.yaml"}',
    ],
)
def test_a_record_that_is_not_one_makes_nothing_ours(text):
    assert cm.parse_record(text) == {}
    assert cm.inspect("cdi", text, None, [cm.TOOLKIT_SPEC])["foreign"] == [cm.TOOLKIT_SPEC]


def test_only_specs_naming_nvidia_gpus_are_found(tmp_path: Path):
    root = make_tree(
        tmp_path,
        {
            "etc/cdi/nvidia.yaml": SPEC,
            "etc/cdi/other.json": '{"cdiVersion": "0.5.0", "kind": "vendor.com/fpga", "devices": []}',
            "etc/cdi/notes.txt": "nvidia.com/gpu",
            "run/cdi/nvidia.yaml": SPEC,
        },
    )
    found = cm.nvidia_specs((str(root / "etc/cdi"), str(root / "run/cdi"), str(root / "missing")))
    assert found == [str(root / "etc/cdi/nvidia.yaml"), str(root / "run/cdi/nvidia.yaml")]


def test_the_module_records_the_mode_once_and_not_in_check_mode(tmp_path: Path):
    root = make_tree(tmp_path, {"run/cdi/nvidia.yaml": SPEC, "systemd/gpu-install-cdi-refresh.service": LEGACY_UNIT})
    args = {
        "mode": "cdi",
        "state": "record",
        "spec_dirs": [str(root / "etc/cdi"), str(root / "run/cdi")],
        "toolkit_spec": str(root / "run/cdi/nvidia.yaml"),
        "own_spec": str(root / "etc/cdi/gpu-install-nvidia.json"),
        "state_dir": str(root / "state"),
        "unit_path": str(root / "systemd/gpu-install-cdi-refresh.service"),
    }
    rc, checked = run_module("container_mode", tmp_path / "args.json", {**args, "_ansible_check_mode": True})
    assert rc == 0 and checked["changed"] and not (root / "state").exists()
    assert checked["take_back"] == [cm.LEGACY_SPEC, str(root / "run/cdi/nvidia.yaml")] and checked["foreign"] == []

    rc, first = run_module("container_mode", tmp_path / "args.json", args)
    assert rc == 0 and first["changed"]
    record = json.loads((root / "state" / "container.json").read_text())
    assert record == {"schema": 1, "mode": "cdi", "cdi_specs": [args["own_spec"]]}

    rc, again = run_module("container_mode", tmp_path / "args.json", args)
    assert rc == 0 and not again["changed"]
    # With the record saying cdi and the legacy unit gone, the toolkit's spec is no longer gpu-install's to take.
    (root / "systemd/gpu-install-cdi-refresh.service").write_text(CDI_UNIT)
    rc, later = run_module("container_mode", tmp_path / "args.json", {**args, "state": "inspect"})
    assert rc == 0 and later["foreign"] == [str(root / "run/cdi/nvidia.yaml")]
