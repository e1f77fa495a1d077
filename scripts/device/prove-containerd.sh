#!/usr/bin/env bash
# Runs ON the lent GPU machine (device tool), from the repository root, as root: NVIDIA GPUs through containerd
# 2.1 alone (no Docker, no kubelet), with containerd's configuration written by gpu-install's own module
# gpu_install.nvidia.containerd_config and containers started by containerd's own client, ctr.
# Build the carry here first with scripts/device/carry, then (the device tool, carrying .device-carry):
#   OUT=$OUT bash scripts/device/prove-containerd.sh   (one run; 29 s on an H100 before gpu_verify and the timings came)
# Phases (all by default; or name them: setup config runtime cdi):
#   setup    Ansible and gpu-install into /opt/torch/.venv from carried wheels; containerd 2.1, its shim, runc and
#            ctr (Debian sid's binaries) under /usr/local/bin; Ubuntu's own apt sources set aside (no network);
#            NVIDIA's toolkit 1.20.0 installed by the machine's apt from the signed mirror fixture on 127.0.0.1
#            through gpu-install's own modules (repositories: pinned key, verified index, deb822 file; packages:
#            apt-get); an OCI image archive made here (busybox, glibc, libstdc++, a CUDA vector add built with
#            nvcc for the GPU's architecture and as PTX only; no driver file, no nvidia-smi) for `ctr image import`
#   config   a user's version 3 config.toml (comments, runc with options, a second runtime) in /etc/containerd and
#            a copy in /etc/containerd-cdi; gpu_install.nvidia.containerd_config through `ansible localhost`:
#            runtime mode with default_runtime true into /etc/containerd (check+diff, real, again: unchanged), then
#            cdi mode into /etc/containerd-cdi (real, again); restart=false (no systemd here)
#   runtime  containerd started by hand (setsid, its own --root/--state under /tmp and its own socket) with the
#            runtime-mode config; `containerd config dump` and `ctr plugins ls` kept; images imported with ctr;
#            `ctr run --runtime io.containerd.runc.v2 --runc-binary <the BinaryName the module wrote>` with
#            NVIDIA_VISIBLE_DEVICES=all: nvidia-smi -L and both kernels in NVIDIA's runtime's default mode (auto),
#            then its legacy mode (needs libnvidia-container: a stand-in in the fixture) and its cdi mode (the
#            toolkit's own spec, as gpu-install's runtime mode keeps it), each set back after; ctr's --gpus
#   cdi      containerd restarted with the cdi-mode config; gpu-install's CDI spec (`gpu-install cdi`);
#            `ctr run --device nvidia.com/gpu=<all|0|UUID>` (ctr 2.1 resolves a qualified CDI name given to
#            --device itself, from /etc/cdi and /var/run/cdi) with plain runc: nvidia-smi -L and both kernels
# Every nvidia-smi -L inside is compared with NVML's UUIDs outside (read here, never written down). Each run adds
# a row to $OUT/results.tsv (mode, path, workload, exit code, last line); $OUT/table.md is made from it; the
# configs written, config dumps, plugin lists, ansible output, the specs, start times (ctr-start.md) and containerd's
# logs go into $OUT/details.tar.gz. Both modes end with gpu-install's own proof, the gpu_verify module with engines
# [containerd], against this containerd. Changes no GPU setting.
# NOGPU=1 rehearses it on a machine without a GPU (a test host): GPU rows fail there, all else must pass.
# WHEELS=dist installs only this checkout's wheel (a venv that has Ansible already, e.g. a test host's).
set -uo pipefail
OUT=${OUT:?}
ROOT=$(pwd)
PY=${PY:-/opt/torch/.venv/bin/python3}
BIN=$(dirname "$PY")
C=${CARRY:-$ROOT/.device-carry}
W=$ROOT/scripts/device/workloads
STATE=/tmp/ctd-proof
SOCK=$STATE/containerd.sock
RES=$OUT/results.tsv
D=/tmp/ctd-proof-details
IMAGE=docker.io/local/cuda-base:1
mkdir -p "$STATE" "$D"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PATH=/usr/local/bin:$BIN:$PATH CONTAINERD_ADDRESS=$SOCK CONTAINERD_NAMESPACE=default
SMI=/usr/local/nvidia/bin/nvidia-smi
[ -x "$SMI" ] || SMI=$(command -v nvidia-smi || echo nvidia-smi)
. "$ROOT/scripts/device/lib.sh" # step, rc, table, serve_mirror
n=0
LAST=""

# try MODE PATH WORKLOAD CMD...: run, print, record the exit code and the last line; the output stays in $LAST.
try() {
    local mode=$1 path=$2 workload=$3
    shift 3
    local code last
    LAST=$("$@" 2>&1)
    code=$?
    printf '%s\n' "$LAST" | tail -n 6
    last=$(printf '%s\n' "$LAST" | grep -v '^[[:space:]]*$' | tail -n 1 | tr '\t|' '  ' | cut -c1-160)
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$path" "$workload" "$code" "$last" >>"$RES"
    echo "-> [$mode] $path / $workload: exit $code"
    return 0
}

# uuids_match MODE PATH: the UUIDs the last nvidia-smi -L listed inside against NVML's outside, as a row.
uuids_match() {
    local inside outside verdict code=0
    inside=$(printf '%s\n' "$LAST" | grep -o 'GPU-[0-9a-f-]*' | sort -u | tr '\n' ' ')
    outside=$(tr '\n' ' ' <"$STATE/uuids-outside")
    if [ -z "$inside" ]; then
        verdict="no GPU listed inside"; code=1
    elif [ "$inside" = "$outside" ]; then
        verdict="inside = NVML outside ($(echo "$inside" | wc -w) GPU)"
    else
        verdict="inside [$inside] differs from NVML outside [$outside]"; code=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "UUIDs inside vs NVML outside" "$code" "$verdict" >>"$RES"
    echo "-> [$1] $2 / UUIDs: $verdict"
}

finish() {
    table
    cp "$STATE"/containerd-*.log "$D/" 2>/dev/null
    tar -C "$D" -czf "$OUT/details.tar.gz" .
}
trap finish EXIT
trap 'exit 143' TERM

# ansible_module NAME ARGS-JSON [ansible options]: one module of this checkout's collection on this machine.
ansible_module() {
    local name=$1 args=$2
    shift 2
    ANSIBLE_COLLECTIONS_PATH=$COLLECTIONS ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
        "$BIN/ansible" localhost -c local -e ansible_python_interpreter="$PY" -m "gpu_install.nvidia.$name" \
        -a "$args" "$@"
}

stop_containerd() {
    [ -s "$STATE/containerd.pid" ] || return 0
    local pid
    pid=$(cat "$STATE/containerd.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    rm -f "$STATE/containerd.pid"
}

start_containerd() { # start_containerd CONFIG NAME: by hand, its own root, state and socket; dump what it read
    local cfg=$1 name=$2
    stop_containerd
    setsid containerd --config "$cfg" --root "$STATE/root" --state "$STATE/state" --address "$SOCK" \
        >"$STATE/containerd-$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/containerd.pid"
    for _ in $(seq 1 80); do ctr version >/dev/null 2>&1 && break; sleep 0.25; done
    ctr version || { tail -n 30 "$STATE/containerd-$name.log"; exit 1; }
    echo "containerd config dump (the merged configuration it runs with):"
    containerd --config "$cfg" config dump >"$D/config-dump-$name.toml" 2>&1; rc
    grep -nE "^\s*\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd(\.runtimes\.[a-z-]+)?\]|default_runtime_name|BinaryName|enable_cdi|cdi_spec_dirs|^imports" \
        "$D/config-dump-$name.toml"
    ctr plugins ls >"$D/plugins-$name.txt" 2>&1; rc
    echo "CRI plugins:"; grep -E 'cri|cdi' "$D/plugins-$name.txt"
    grep -iE 'level=(error|fatal)' "$STATE/containerd-$name.log" | head -n 5
}

# ---------------------------------------------------------------------------------------------------------
phase_setup() {
    step "the host"
    uname -r
    if [ -z "${NOGPU:-}" ]; then
        $SMI -L
        $SMI --query-gpu=name,compute_cap,driver_version,persistence_mode --format=csv
        "$PY" -c 'import pynvml as n; n.nvmlInit(); [print(n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i))) for i in range(n.nvmlDeviceGetCount())]' |
            sort -u >"$STATE/uuids-outside"
    else
        : >"$STATE/uuids-outside"
    fi
    echo "NVML outside: $(tr '\n' ' ' <"$STATE/uuids-outside")"

    step "Ansible and gpu-install into $PY's venv (carried wheels)"
    if [ "${WHEELS:-all}" = dist ]; then
        "$PY" -m pip install -q --no-index --no-deps --force-reinstall --disable-pip-version-check "$C"/dist/*.whl || exit 1
    else
        "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check "$C"/whl/*.whl "$C"/dist/*.whl || exit 1
    fi
    "$BIN/gpu-install" --version
    COLLECTIONS=$("$PY" -c 'from gpu_install.collection import collections_path; print(collections_path())')
    echo "collection: $COLLECTIONS"

    step "containerd 2.1, its shim, runc and ctr from Debian sid's binaries"
    tar -C /usr/local/bin -xJf "$C/docker-bin.tar.xz" ./containerd ./containerd-shim-runc-v2 ./ctr ./runc ./busybox || exit 1
    containerd --version; ctr --version; runc --version | head -n 1

    step "apt: the machine's own sources set aside (no network here), so apt sees only the mirror fixture"
    mkdir -p /etc/apt/sources-set-aside
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] && mv "$f" /etc/apt/sources-set-aside/
    done
    [ -s /etc/apt/sources.list ] && mv /etc/apt/sources.list /etc/apt/sources-set-aside/sources.list
    serve_mirror "$STATE/mirror.log"

    step "NVIDIA's toolkit from the signed mirror fixture, through gpu-install's repositories and packages modules"
    local fpr
    fpr=$(cat "$C/mirror/FINGERPRINT")
    ansible_module repositories "{\"use\": [\"nvidia_container_toolkit\"], \"overrides\": {\"nvidia_container_toolkit\":
        {\"url\": \"http://127.0.0.1:8765/nvidia_container_toolkit\", \"fingerprint\": \"$fpr\"}}}" \
        >"$D/ansible-repositories.txt" 2>&1; rc
    grep -E '^localhost|"changed"|"msg"' "$D/ansible-repositories.txt"
    ansible_module packages '{"names": ["nvidia-container-toolkit"], "update_cache": true}' >"$D/ansible-packages.txt" 2>&1; rc
    grep -E '^localhost|"changed"|"msg"' "$D/ansible-packages.txt"
    dpkg -l 'nvidia-container-toolkit*' 'libnvidia-container*' | grep '^ii'
    nvidia-ctk --version | head -n 1
    grep -E '^\s*#?\s*mode\s*=' /etc/nvidia-container-runtime/config.toml

    step "$IMAGE as an OCI archive: busybox, glibc, libstdc++, the vector add (SASS and PTX only), no driver file"
    local img=$STATE/img cap
    rm -rf "$img"
    mkdir -p "$img"/bin "$img"/lib64 "$img"/lib/x86_64-linux-gnu "$img"/usr/bin "$img"/etc "$img"/tmp "$img"/proc \
        "$img"/sys "$img"/dev
    cp /usr/local/bin/busybox "$img/bin/busybox"
    for t in sh ls cat true echo env grep tail; do ln -sf busybox "$img/bin/$t"; done
    cp -L /lib64/ld-linux-x86-64.so.2 "$img/lib64/"
    for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libstdc++.so.6 libgcc_s.so.1; do
        cp -L "/lib/x86_64-linux-gnu/$l" "$img/lib/x86_64-linux-gnu/"
    done
    if [ -z "${NOGPU:-}" ]; then
        cap=$($SMI --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.')
        /usr/local/cuda/bin/nvcc -O2 -gencode "arch=compute_$cap,code=sm_$cap" -o "$img/usr/bin/vadd-sm" "$W/vadd.cu" || exit 1
        /usr/local/cuda/bin/nvcc -O2 -gencode "arch=compute_$cap,code=compute_$cap" -o "$img/usr/bin/vadd-ptx" "$W/vadd.cu" || exit 1
    fi
    ls "$img/usr/bin"
    "$PY" - "$img" "$STATE/cuda-base.oci.tar" "$IMAGE" <<'EOF'
# An OCI image layout (one uncompressed layer) as a tar archive, for `ctr image import`: no registry, no Docker.
import hashlib, io, json, os, sys, tarfile
root, out, name = sys.argv[1:]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for entry in sorted(os.listdir(root)):
        t.add(os.path.join(root, entry), arcname=entry)
blobs = {}
def blob(data, media):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}
layer_desc = blob(layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
          "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [layer_desc]}
man_desc = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
man_desc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [man_desc]}
with tarfile.open(out, "w") as t:
    def put(path, data):
        info = tarfile.TarInfo(path)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    put("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    put("index.json", json.dumps(index).encode())
    for digest, data in blobs.items():
        put("blobs/sha256/" + digest.split(":", 1)[1], data)
print(f"{out}: {name}, layer {layer_desc['size']} bytes")
EOF
}

# ---------------------------------------------------------------------------------------------------------
user_config() { # user_config DIR: a user's own version 3 config, as a node's provisioning leaves it
    mkdir -p "$1"
    cat >"$1/config.toml" <<'TOML'
# containerd on this node: written by the cluster's provisioning (its comments must survive gpu-install).
version = 3

[plugins]
  # The CRI runtime plugin: runc stays the cluster's default runtime.
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false  # no systemd on this machine

    # A second runtime class the cluster uses (runc by another path, with its own options).
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-debug]
      runtime_type = "io.containerd.runc.v2"

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-debug.options]
        BinaryName = "/usr/local/bin/runc"
        SystemdCgroup = false
TOML
}

module_run() { # module_run LABEL ARGS-JSON [ansible options]: the module through ansible, its result kept
    local label=$1 args=$2
    shift 2
    step "containerd_config: $label"
    ansible_module containerd_config "$args" "$@" >"$D/ansible-containerd_config-$label.txt" 2>&1
    local code=$?
    cat "$D/ansible-containerd_config-$label.txt"
    echo "(exit $code)"
    local said
    said=$(grep -oE '^localhost \| [A-Z]+|"msg": ".*"' "$D/ansible-containerd_config-$label.txt" |
        sed -e 's/^localhost | //' -e 's/"msg": //' | tr '\n|' '  ' | cut -c1-160)
    printf '%s\t%s\t%s\t%s\t%s\n' "config" "containerd_config $label" "ansible localhost -m" "$code" "$said" >>"$RES"
}

phase_config() {
    user_config /etc/containerd
    user_config /etc/containerd-cdi
    cp /etc/containerd/config.toml "$D/config-user.toml"
    local rt='"path": "/etc/containerd/config.toml", "mode": "runtime", "default_runtime": true, "restart": false'
    module_run runtime-check "{$rt}" --check --diff
    module_run runtime "{$rt}" --diff
    module_run runtime-again "{$rt}"
    local cdi='"path": "/etc/containerd-cdi/config.toml", "drop_in": "/etc/containerd-cdi/conf.d/99-gpu-install.toml",
        "mode": "cdi", "restart": false'
    module_run cdi "{$cdi}" --diff
    module_run cdi-again "{$cdi}"
    for d in containerd containerd-cdi; do
        echo "--- /etc/$d:"; find "/etc/$d" -type f | sort
        mkdir -p "$D/etc-$d"; cp -r "/etc/$d/." "$D/etc-$d/"
    done
    echo "the user's comments and second runtime, kept:"
    grep -nE '^#|# no systemd|runc-debug' /etc/containerd/config.toml
}

# ---------------------------------------------------------------------------------------------------------
workloads() { # workloads MODE PATH CTR-RUN-ARGS...: nvidia-smi -L (UUIDs compared), SASS kernel, PTX kernel
    local mode=$1 path=$2
    shift 2
    n=$((n + 1)); try "$mode" "$path" "nvidia-smi -L" ctr run --rm "$@" "$IMAGE" "p$n" \
        sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
    uuids_match "$mode" "$path"
    n=$((n + 1)); try "$mode" "$path" "CUDA kernel (SASS)" ctr run --rm "$@" "$IMAGE" "p$n" vadd-sm
    n=$((n + 1)); try "$mode" "$path" "CUDA kernel (PTX, JIT)" ctr run --rm "$@" "$IMAGE" "p$n" vadd-ptx
}

# gpu_verify MODE: gpu-install's own proof (module gpu_install.nvidia.gpu_verify, engines [containerd]) against this
# containerd, the image imported into gpu-install's namespace beforehand (no registry here: pull false).
gpu_verify() {
    local mode=$1
    step "gpu_install.nvidia.gpu_verify, engines [containerd], $mode mode"
    ctr --namespace gpu-install image ls -q | grep -qx "$IMAGE" || ctr --namespace gpu-install image import "$STATE/cuda-base.oci.tar" >/dev/null
    ansible_module gpu_verify "{\"engines\": [\"containerd\"], \"mode\": \"$mode\", \"image\": \"$IMAGE\", \"pull\": false,
        \"containerd_address\": \"$SOCK\"}" >"$D/ansible-gpu_verify-$mode.txt" 2>&1
    local code=$? said
    grep -E '^localhost|"(msg|reason|verified|ok|path|seen)"' "$D/ansible-gpu_verify-$mode.txt" | head -n 40
    echo "(exit $code)"
    said=$(grep -oE '^localhost \| [A-Z]+|"msg": ".*"' "$D/ansible-gpu_verify-$mode.txt" | sed -e 's/^localhost | //' \
        -e 's/"msg": //' | tr '\n|' '  ' | cut -c1-160)
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "gpu_verify, engines [containerd]" "ansible localhost -m" "$code" "$said" >>"$RES"
}

# starts LABEL CTR-RUN-ARGS...: start-to-exit of `ctr run --rm ... true`, 10 runs, median and range in ms.
starts() {
    local label=$1 t0 t1 i ms=()
    shift
    for i in $(seq 1 10); do
        n=$((n + 1))
        t0=$(date +%s%N)
        ctr run --rm "$@" "$IMAGE" "p$n" true >/dev/null 2>&1 || { echo "$label: a run failed"; return 0; }
        t1=$(date +%s%N)
        ms+=($(((t1 - t0) / 1000000)))
    done
    mapfile -t ms < <(printf '%s\n' "${ms[@]}" | sort -n)
    printf '| %s | %s | %s | %s |\n' "$label" "${ms[5]}" "${ms[0]}" "${ms[9]}" | tee -a "$D/ctr-start.md"
}

runtime_mode() { # runtime_mode MODE: NVIDIA's runtime's own mode in its config.toml (auto is the package's)
    nvidia-ctk config --in-place --set "nvidia-container-runtime.mode=$1" && 
        grep -E '^\s*mode\s*=' /etc/nvidia-container-runtime/config.toml
}

phase_runtime() {
    step "containerd with the runtime-mode config"
    start_containerd /etc/containerd/config.toml runtime
    step "ctr image import"
    ctr image import "$STATE/cuda-base.oci.tar"; rc
    ctr image ls
    n=$((n + 1)); try containerd "ctr run (runc, no GPU asked)" "busybox echo" ctr run --rm "$IMAGE" "p$n" echo "plain container ok"

    local ncr
    ncr=$("$PY" - "$D/config-dump-runtime.toml" <<'EOF'
import sys, tomllib
doc = tomllib.load(open(sys.argv[1], "rb"))
ctd = doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
print(ctd["runtimes"][ctd["default_runtime_name"]]["options"]["BinaryName"])
EOF
    )
    echo "the CRI's default runtime runs: ${ncr:-?}"
    [ -n "$ncr" ] || ncr=$(command -v nvidia-container-runtime)
    local rargs=(--runtime io.containerd.runc.v2 --runc-binary "$ncr")
    step "runtime mode: NVIDIA's runtime as the shim's runc binary, NVIDIA_VISIBLE_DEVICES=all"
    cp /etc/nvidia-container-runtime/config.toml "$STATE/ncr-config.toml.before"
    workloads "runtime (auto)" "--runc-binary $ncr --env NVIDIA_VISIBLE_DEVICES=all" "${rargs[@]}" \
        --env NVIDIA_VISIBLE_DEVICES=all
    n=$((n + 1)); try "runtime (auto)" "--runc-binary $ncr, no NVIDIA_VISIBLE_DEVICES (must fail: no GPU)" \
        "CUDA kernel (SASS)" ctr run --rm "${rargs[@]}" "$IMAGE" "p$n" vadd-sm

    step "runtime mode: NVIDIA's runtime in its legacy mode (nvidia-container-runtime-hook, libnvidia-container)"
    runtime_mode legacy
    n=$((n + 1)); try "runtime (legacy)" "--runc-binary $ncr --env NVIDIA_VISIBLE_DEVICES=all" "nvidia-smi -L" \
        ctr run --rm "${rargs[@]}" --env NVIDIA_VISIBLE_DEVICES=all "$IMAGE" "p$n" sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
    cp "$STATE/ncr-config.toml.before" /etc/nvidia-container-runtime/config.toml

    step "runtime mode: NVIDIA's runtime in its cdi mode, reading the toolkit's spec (nvidia-ctk cdi generate)"
    nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml >"$D/nvidia-ctk-cdi-generate.txt" 2>&1; rc
    tail -n 2 "$D/nvidia-ctk-cdi-generate.txt"
    nvidia-ctk cdi list 2>&1 | tail -n 4
    runtime_mode cdi
    workloads "runtime (cdi)" "--runc-binary $ncr --env NVIDIA_VISIBLE_DEVICES=all" "${rargs[@]}" \
        --env NVIDIA_VISIBLE_DEVICES=all
    cp "$STATE/ncr-config.toml.before" /etc/nvidia-container-runtime/config.toml
    cp /var/run/cdi/nvidia.yaml "$D/spec-toolkit.yaml" 2>/dev/null
    rm -f /var/run/cdi/nvidia.yaml

    gpu_verify runtime
    step "start to exit of ctr run --rm IMAGE true (ms, 10 runs each)"
    printf '| ctr run | median | min | max |\n| --- | ---: | ---: | ---: |\n' | tee "$D/ctr-start.md"
    starts "runc (no GPU)"
    starts "--runc-binary nvidia-container-runtime (auto: jit-cdi), NVIDIA_VISIBLE_DEVICES=all" "${rargs[@]}" \
        --env NVIDIA_VISIBLE_DEVICES=all
    nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml >/dev/null 2>&1
    runtime_mode cdi >/dev/null
    starts "--runc-binary nvidia-container-runtime (cdi, the toolkit's spec), NVIDIA_VISIBLE_DEVICES=all" "${rargs[@]}" \
        --env NVIDIA_VISIBLE_DEVICES=all
    cp "$STATE/ncr-config.toml.before" /etc/nvidia-container-runtime/config.toml
    rm -f /var/run/cdi/nvidia.yaml

    step "ctr run --gpus 0 (containerd's contrib/nvidia: the nvidia-container-cli hook of libnvidia-container)"
    n=$((n + 1)); try "ctr --gpus" "--gpus 0 (needs libnvidia-container: a stand-in in the fixture)" "nvidia-smi -L" \
        ctr run --rm --gpus 0 "$IMAGE" "p$n" sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
}

phase_cdi() {
    step "containerd with the cdi-mode config"
    start_containerd /etc/containerd-cdi/config.toml cdi
    ctr image ls -q | grep -qx "$IMAGE" || { ctr image import "$STATE/cuda-base.oci.tar"; rc; }
    step "gpu-install cdi: gpu-install's CDI spec of this host's GPUs"
    "$BIN/gpu-install" cdi; rc
    cp /etc/cdi/gpu-install-nvidia.json "$D/spec-gpu-install.json" 2>/dev/null
    ls -l /etc/cdi /var/run/cdi 2>&1
    step "cdi mode: ctr run --device nvidia.com/gpu=..., plain runc"
    workloads cdi "--device nvidia.com/gpu=all" --device nvidia.com/gpu=all
    local i=0 u
    while read -r u; do
        n=$((n + 1)); try cdi "--device nvidia.com/gpu=$i" "nvidia-smi -L" ctr run --rm --device "nvidia.com/gpu=$i" \
            "$IMAGE" "p$n" sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
        uuids_match cdi "--device nvidia.com/gpu=$i"
        n=$((n + 1)); try cdi "--device nvidia.com/gpu=<UUID of $i>" "CUDA kernel (SASS)" ctr run --rm \
            --device "nvidia.com/gpu=$u" "$IMAGE" "p$n" vadd-sm
        i=$((i + 1))
    done <"$STATE/uuids-outside"
    n=$((n + 1)); try cdi "no --device (must fail: no GPU)" "CUDA kernel (SASS)" ctr run --rm "$IMAGE" "p$n" vadd-sm
    gpu_verify cdi
    step "start to exit of ctr run --rm IMAGE true (ms, 10 runs each)"
    starts "runc, --device nvidia.com/gpu=all (gpu-install's spec)" --device nvidia.com/gpu=all
    stop_containerd
}

phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(setup config runtime cdi)
COLLECTIONS=$("$PY" -c 'from gpu_install.collection import collections_path; print(collections_path())' 2>/dev/null)
for phase in "${phases[@]}"; do
    "phase_$phase"
done
stop_containerd
echo DONE
