"""The stdlib NVML reader (plugins/module_utils/nvml.py): ctypes against the driver's libnvidia-ml.so.1.

On this machine there is no NVIDIA driver: the reader must say so, without an exception. Its ctypes
marshalling (buffers, the PCI info struct, handles, versioned entry points, error strings, init/shutdown
pairing) is proven against a fake libnvidia-ml.so.1 compiled here from the C source below: a fixture built at
test time and named as one, exporting only NVML's read functions, driven by FAKE_NVML_* environment variables.
The real library is read on the GPU machine (docs/verify.md).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import module_utils

nvml = module_utils("nvml")

FAKE_NVML_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stand-in for the driver's libnvidia-ml.so.1: NVML's read functions only, fed by the environment.
   FAKE_NVML_GPUS  comma-separated GPU UUIDs in index order (default: none)
   FAKE_NVML_INIT  the code nvmlInit returns (default 0)
   FAKE_NVML_LOST  an index whose handle lookup fails with GPU_IS_LOST (15)
   FAKE_NVML_LOG   a file each call's name is appended to */

typedef struct { int index; } dev_t_;
static dev_t_ devices[64];
static char uuids[64][96];
static int ngpus = -1;
static int inits = 0;

static void logcall(const char *name) {
    const char *path = getenv("FAKE_NVML_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", name);
    fclose(f);
}

static void load(void) {
    ngpus = 0;
    const char *env = getenv("FAKE_NVML_GPUS");
    if (!env || !*env) return;
    char buf[4096];
    strncpy(buf, env, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *tok = strtok(buf, ","); tok && ngpus < 64; tok = strtok(NULL, ",")) {
        strncpy(uuids[ngpus], tok, 95);
        devices[ngpus].index = ngpus;
        ngpus++;
    }
}

const char *nvmlErrorString(int code) {
    switch (code) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    case 18: return "RM has detected an NVML/RM version mismatch";
    default: return "Unknown Error";
    }
}

static int do_init(const char *name) {
    logcall(name);
    const char *rc = getenv("FAKE_NVML_INIT");
    int code = rc ? atoi(rc) : 0;
    if (code == 0) inits++;
    load();
    return code;
}

#ifndef OLD_ENTRY_POINTS
int nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
int nvmlInitWithFlags(unsigned int flags) { (void)flags; return do_init("nvmlInitWithFlags"); }
#endif
int nvmlInit(void) { return do_init("nvmlInit"); }

int nvmlShutdown(void) {
    logcall("nvmlShutdown");
    if (inits == 0) return 1;
    inits--;
    return 0;
}

static int copy(char *dst, unsigned int len, const char *src) {
    if (!dst) return 2;
    if (strlen(src) + 1 > len) return 7;
    strcpy(dst, src);
    return 0;
}

int nvmlSystemGetDriverVersion(char *v, unsigned int len) {
    logcall("nvmlSystemGetDriverVersion");
    if (!inits) return 1;
    return copy(v, len, "580.159.04");
}

#ifndef OLD_ENTRY_POINTS
int nvmlSystemGetCudaDriverVersion_v2(int *v) { logcall("nvmlSystemGetCudaDriverVersion_v2"); *v = 13000; return 0; }
#endif
int nvmlSystemGetCudaDriverVersion(int *v) { logcall("nvmlSystemGetCudaDriverVersion"); *v = 13000; return 0; }

static int count(unsigned int *n, const char *name) {
    logcall(name);
    if (!inits) return 1;
    *n = (unsigned int)ngpus;
    return 0;
}
#ifndef OLD_ENTRY_POINTS
int nvmlDeviceGetCount_v2(unsigned int *n) { return count(n, "nvmlDeviceGetCount_v2"); }
#endif
int nvmlDeviceGetCount(unsigned int *n) { return count(n, "nvmlDeviceGetCount"); }

static int handle(unsigned int i, dev_t_ **h, const char *name) {
    logcall(name);
    if (!inits) return 1;
    if ((int)i >= ngpus) return 2;
    const char *lost = getenv("FAKE_NVML_LOST");
    if (lost && *lost && (unsigned int)atoi(lost) == i) return 15;
    *h = &devices[i];
    return 0;
}
#ifndef OLD_ENTRY_POINTS
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, dev_t_ **h) { return handle(i, h, "nvmlDeviceGetHandleByIndex_v2"); }
#endif
int nvmlDeviceGetHandleByIndex(unsigned int i, dev_t_ **h) { return handle(i, h, "nvmlDeviceGetHandleByIndex"); }

int nvmlDeviceGetUUID(dev_t_ *h, char *uuid, unsigned int len) {
    logcall("nvmlDeviceGetUUID");
    return copy(uuid, len, uuids[h->index]);
}

int nvmlDeviceGetName(dev_t_ *h, char *name, unsigned int len) {
    logcall("nvmlDeviceGetName");
    (void)h;
    return copy(name, len, "NVIDIA H100 80GB HBM3");
}

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;

int nvmlDeviceGetPciInfo_v3(dev_t_ *h, pci_t *pci) {
    logcall("nvmlDeviceGetPciInfo_v3");
    memset(pci, 0, sizeof *pci);
    pci->domain = 0;
    pci->bus = (unsigned int)(6 + h->index);
    pci->device = 0;
    pci->pciDeviceId = 0x233010de;
    pci->pciSubSystemId = 0x16c110de;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02x:00.0", pci->bus);
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus);
    return 0;
}

int nvmlDeviceGetPersistenceMode(dev_t_ *h, int *mode) {
    logcall("nvmlDeviceGetPersistenceMode");
    *mode = h->index == 0 ? 1 : 0;
    return 0;
}

int nvmlDeviceGetMinorNumber(dev_t_ *h, unsigned int *minor) {
    logcall("nvmlDeviceGetMinorNumber");
    *minor = (unsigned int)h->index;
    return 0;
}
"""

UUIDS = ["GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca", "GPU-59612015-34ef-44a0-8fe4-7daa00bab28a"]


def build_fake_nvml(dest: Path, old_entry_points: bool = False) -> Path:
    """Compile the fake libnvidia-ml.so.1 into dest and return its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("the fake NVML library is compiled here: install gcc and libc6-dev")
    dest.mkdir(parents=True, exist_ok=True)
    src = dest / "fake_nvml.c"
    src.write_text(FAKE_NVML_C)
    out = dest / "libnvidia-ml.so.1"
    flags = ["-DOLD_ENTRY_POINTS"] if old_entry_points else []
    subprocess.run([cc, "-shared", "-fPIC", "-O1", *flags, "-o", str(out), str(src)], check=True)
    return out


def read_with(library: Path, monkeypatch, tmp_path: Path, **env: str) -> tuple[dict, list[str]]:
    """nvml.read(library) with FAKE_NVML_* set; returns the result and the calls the library saw."""
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    monkeypatch.setenv("FAKE_NVML_LOG", str(log))
    for name in ("FAKE_NVML_GPUS", "FAKE_NVML_INIT", "FAKE_NVML_LOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = nvml.read(str(library))
    calls = log.read_text().split() if log.exists() else []
    return result, calls


# -- on this machine ---------------------------------------------------------------------------------------
def _driver_library_here() -> bool:
    return ctypes.util.find_library("nvidia-ml") is not None or any(
        os.path.exists(os.path.join(d, nvml.SONAME)) for d in nvml.FALLBACK_DIRS
    )


def test_reader_without_a_driver_says_nvml_is_unavailable_and_why():
    if _driver_library_here():
        pytest.skip("this machine has libnvidia-ml.so.1: the no-driver path is proven on machines without one")
    result = nvml.read()
    assert result["available"] is False
    assert result["gpus"] == [] and result["driver_version"] is None and result["cuda_driver_version"] is None
    assert result["error"].startswith("libnvidia-ml.so.1 cannot be loaded (")
    assert "libnvidia-ml.so.1" in result["library"]


def test_reader_result_is_json_and_has_the_same_keys_on_every_path(tmp_path):
    keys = {"available", "error", "library", "driver_version", "cuda_driver_version", "gpus"}
    for library in (None, str(tmp_path / "absent" / "libnvidia-ml.so.1"), _libc()):
        result = nvml.read(library)
        assert set(result) == keys
        json.dumps(result)


def _libc() -> str:
    found = ctypes.util.find_library("c")
    assert found is not None
    return found


def test_a_named_library_that_does_not_exist_is_reported_by_its_path(tmp_path):
    path = tmp_path / "lib" / "libnvidia-ml.so.1"
    result = nvml.read(str(path))
    assert result["available"] is False and str(path) in result["error"]


def test_a_library_that_is_not_nvml_is_reported_not_raised():
    result = nvml.read(_libc())
    assert result["available"] is False
    assert result["error"] == "NVML cannot start (nvmlInit_v2: Function Not Found)"


def test_cuda_driver_version_is_major_dot_minor():
    assert nvml.cuda_version(12080) == "12.8"
    assert nvml.cuda_version(13000) == "13.0"
    assert nvml.cuda_version(11020) == "11.2"
    assert nvml.cuda_version(12090) == "12.9"
    assert nvml.cuda_version(0) is None


# -- against the fake library ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory) -> Path:
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


def test_reader_returns_driver_cuda_and_every_gpu(fake_nvml, monkeypatch, tmp_path):
    result, calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_GPUS=",".join(UUIDS))
    assert result == {
        "available": True,
        "error": None,
        "library": str(fake_nvml),
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "gpus": [
            {
                "index": 0,
                "uuid": UUIDS[0],
                "name": "NVIDIA H100 80GB HBM3",
                "pci_bus_id": "00000000:06:00.0",
                "persistence_mode": True,
                "error": None,
            },
            {
                "index": 1,
                "uuid": UUIDS[1],
                "name": "NVIDIA H100 80GB HBM3",
                "pci_bus_id": "00000000:07:00.0",
                "persistence_mode": False,
                "error": None,
            },
        ],
    }
    assert calls[0] == "nvmlInit_v2" and calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetHandleByIndex_v2" in calls and "nvmlDeviceGetCount_v2" in calls


def test_reader_only_reads(fake_nvml, monkeypatch, tmp_path):
    """Every call it makes is an init, a shutdown or a getter: no GPU setting is ever changed."""
    _result, calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_GPUS=",".join(UUIDS))
    assert calls and all(
        c in ("nvmlInit_v2", "nvmlShutdown") or c.startswith(("nvmlSystemGet", "nvmlDeviceGet")) for c in calls
    ), calls
    assert calls.count("nvmlInit_v2") == calls.count("nvmlShutdown") == 1


def test_reader_with_no_gpu_is_available_with_an_empty_list(fake_nvml, monkeypatch, tmp_path):
    result, calls = read_with(fake_nvml, monkeypatch, tmp_path)
    assert result["available"] is True and result["gpus"] == [] and result["driver_version"] == "580.159.04"
    assert calls[-1] == "nvmlShutdown"


def test_init_failure_carries_nvml_own_error_string_and_no_shutdown(fake_nvml, monkeypatch, tmp_path):
    result, calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_INIT="9", FAKE_NVML_GPUS=UUIDS[0])
    assert result["available"] is False
    assert result["error"] == "NVML cannot start (nvmlInit_v2: Driver Not Loaded)"
    assert calls == ["nvmlInit_v2"]


def test_version_mismatch_is_named_as_nvml_names_it(fake_nvml, monkeypatch, tmp_path):
    result, _calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_INIT="18")
    assert result["error"] == "NVML cannot start (nvmlInit_v2: RM has detected an NVML/RM version mismatch)"


def test_a_lost_gpu_keeps_its_index_with_its_error(fake_nvml, monkeypatch, tmp_path):
    result, calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_GPUS=",".join(UUIDS), FAKE_NVML_LOST="1")
    assert result["available"] is True
    assert result["gpus"][0]["uuid"] == UUIDS[0]
    assert result["gpus"][1] == {
        "index": 1,
        "uuid": None,
        "name": None,
        "pci_bus_id": None,
        "persistence_mode": None,
        "error": "nvmlDeviceGetHandleByIndex_v2: GPU is lost",
    }
    assert calls[-1] == "nvmlShutdown"


def test_a_driver_without_the_v2_entry_points_is_read_through_the_old_ones(monkeypatch, tmp_path):
    old = build_fake_nvml(tmp_path / "old", old_entry_points=True)
    result, calls = read_with(old, monkeypatch, tmp_path, FAKE_NVML_GPUS=UUIDS[0])
    assert result["available"] is True and result["gpus"][0]["uuid"] == UUIDS[0]
    assert result["cuda_driver_version"] == "13.0" and "nvmlSystemGetCudaDriverVersion" in calls
    assert calls[0] == "nvmlInit" and "nvmlDeviceGetHandleByIndex" in calls and "nvmlDeviceGetCount" in calls


def test_reader_agrees_with_nvidia_ml_py_on_the_same_library(fake_nvml, monkeypatch, tmp_path):
    """The CLI's pynvml reader and this one, on one library: the same UUIDs, names, bus ids, persistence."""
    env = dict(
        os.environ,
        LD_LIBRARY_PATH=str(fake_nvml.parent),
        FAKE_NVML_GPUS=",".join(UUIDS),
        PYTHONPATH=str(Path(__file__).resolve().parents[2] / "installer"),
    )
    code = "import json; from gpu_install import nvml; print(json.dumps(nvml.snapshot()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    theirs = json.loads(proc.stdout)
    assert theirs["available"] is True, theirs
    ours, _calls = read_with(fake_nvml, monkeypatch, tmp_path, FAKE_NVML_GPUS=",".join(UUIDS))
    for key in ("driver_version", "cuda_driver_version"):
        assert ours[key] == theirs[key], key
    for mine, other in zip(ours["gpus"], theirs["gpus"], strict=True):
        assert (mine["index"], mine["uuid"], mine["name"], mine["persistence_mode"]) == (
            other["index"],
            other["uuid"],
            other["name"],
            other["persistence_mode"],
        )
        assert mine["pci_bus_id"].lower() == other["pci_bus_id"]
