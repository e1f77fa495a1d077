#!/usr/bin/env bash
# Runs ON the lent GPU machine (device tool), from the repository root, as root: real CUDA work in every way
# users start a GPU container, in both of gpu-install's modes, through the CLI, with NVIDIA's real toolkit.
# Build the carry here first with scripts/device/carry, then (the device tool, carrying .device-carry):
#   OUT=$OUT bash scripts/device/prove-containers.sh setup runtime cdi   (one run, under 10 minutes on an H200)
# or in two runs: `setup runtime`, then `setup cdi` (a bare machine: cdi applies runtime mode first).
# SKIP_TORCH=1 leaves out the PyTorch image and its workloads, SKIP_BENCH=1 the benchmarks (shorter runs).
# Phases:
#   setup    gpu-install and Ansible into /opt/torch/.venv from carried wheels; Docker 28.5 (Debian sid's
#            binaries) under /usr/local/bin with dockerd started by hand; Ubuntu's own apt sources set aside
#            (there is no network: the host reaches only the signed mirror fixture served on 127.0.0.1, as an
#            air-gapped host reaches only its mirrors); images built there without any driver file in them:
#            local/cuda-base:1 (busybox, glibc, libstdc++, a CUDA vector add built with nvcc for the GPU's
#            architecture and as PTX only) and local/torch:2 (the machine's python3 with torch and triton)
#   runtime  apply in runtime mode: NVIDIA's toolkit 1.20.0 (built from ../shared/vendor, packaged as NVIDIA
#            packages it) installed by the machine's apt from the mirror fixture; every start path the mode
#            serves, each workload; verify; doctor; bench/gpu_start against containers under runc
#   static_cdi  (runtime mode, for the record) bench/gpu_start with the runtime's static `cdi` mode, set back after
#   switch   the short proof: runtime mode by apt from the mirror, one workload path, then one apply to cdi mode
#            and its paths (run with SKIP_TORCH=1: `setup switch`)
#   cdi      the same host switched to CDI mode (apply takes runtime mode back); every CDI path and workload;
#            verify; doctor; bench/gpu_start; bench/gpu_workload
# Each run of a workload adds a row to $OUT/results.tsv (mode, path, workload, exit code, last line of its
# output); $OUT/table.md is made from it at the end of every run, and the JSON results, the benchmarks' tables,
# the CDI spec and dockerd's log go into $OUT/details.tar.gz. Changes no GPU setting.
set -uo pipefail
OUT=${OUT:?}
ROOT=$(pwd)
PY=/opt/torch/.venv/bin/python3
GI=/opt/torch/.venv/bin/gpu-install
C=$ROOT/.device-carry
W=$ROOT/scripts/device/workloads
SMI=/usr/local/nvidia/bin/nvidia-smi
[ -x "$SMI" ] || SMI=$(command -v nvidia-smi)
RES=$OUT/results.tsv
STATE=/tmp/gpu-proof
# At most 8 files come back from $OUT: log.txt, results.tsv, table.md, and details.tar.gz (everything else).
D=/tmp/gpu-proof-details
mkdir -p "$STATE" "$D"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PATH=/usr/local/bin:$PATH
. "$ROOT/scripts/device/lib.sh" # step, rc, table, serve_mirror

# try MODE PATH WORKLOAD CMD...: run, print, and record the exit code and the last line of the output.
try() {
    local mode=$1 path=$2 workload=$3
    shift 3
    local out code
    out=$("$@" 2>&1)
    code=$?
    printf '%s\n' "$out" | tail -n 5
    local last
    last=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | tr '\t|' '  ' | cut -c1-160)
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$path" "$workload" "$code" "$last" >>"$RES"
    echo "-> [$mode] $path / $workload: exit $code"
    return 0
}

finish() {
    table
    cp /tmp/dockerd.log "$D/dockerd.log" 2>/dev/null
    tar -C "$D" -czf "$OUT/details.tar.gz" .
}
trap finish EXIT
trap 'exit 143' TERM

uuids() { $SMI --query-gpu=uuid --format=csv,noheader; }

start_dockerd() {
    docker info >/dev/null 2>&1 && return 0
    setsid dockerd --iptables=false --ip6tables=false --bridge=none \
        --data-root /tmp/dr --exec-root /tmp/de >>/tmp/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker version --format 'Docker {{.Server.Version}}, containerd and runc: see docker info' || {
        cp /tmp/dockerd.log "$D/"
        exit 1
    }
}

settings() { # settings MODE
    mkdir -p /etc/gpu-install
    cat >/etc/gpu-install/config.yml <<YAML
nvidia_driver_source: none
nvidia_container_mode: $1
docker_package: none
gpu_verify_image: local/cuda-base:1
gpu_verify_pull: false
gpu_install_repositories:
  nvidia_container_toolkit:
    url: http://127.0.0.1:8765/nvidia_container_toolkit
    fingerprint: $(cat "$C/mirror/FINGERPRINT")
YAML
    cat /etc/gpu-install/config.yml
}

apply_mode() { # apply_mode MODE: plan, apply, apply again (nothing to change), keeping the JSON results
    settings "$1"
    step "gpu-install plan ($1 mode)"
    $GI plan; rc
    step "gpu-install apply --yes ($1 mode)"
    $GI apply --yes; rc
    step "gpu-install apply --yes --json ($1 mode, again: nothing to change)"
    $GI apply --yes --json >"$D/apply-$1.json"; rc
    $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print("changed:", r.get("changed"), "failed:", r.get("failed"), "exit:", r.get("exit_code"))' "$D/apply-$1.json"
    echo "daemon.json:"; cat /etc/docker/daemon.json; echo
    docker info --format 'default runtime: {{.DefaultRuntime}}; runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}'
    ls -l /etc/cdi /var/run/cdi 2>&1
}

verify_doctor() { # verify_doctor MODE
    step "gpu-install verify ($1 mode)"
    $GI verify; rc
    $GI verify --json >"$D/verify-$1.json"; rc
    step "gpu-install doctor ($1 mode)"
    $GI doctor; rc
    $GI doctor --json >"$D/doctor-$1.json"; rc
}

# ---------------------------------------------------------------------------------------------------------
phase_setup() {
    step "the host"
    uname -r
    $SMI -L
    $SMI --query-gpu=name,compute_cap,driver_version,persistence_mode --format=csv
    $PY -c 'import pynvml as n; n.nvmlInit(); print("NVML outside:", [n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)) for i in range(n.nvmlDeviceGetCount())])'

    if [ ! -e "$STATE/setup" ]; then
        step "gpu-install and Ansible into $PY's venv (carried wheels)"
        $PY -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check "$C"/whl/*.whl "$C"/dist/*.whl || exit 1
        step "Docker 28.5 from Debian sid's binaries"
        tar -C /usr/local/bin -xJf "$C/docker-bin.tar.xz" || exit 1
        step "apt: Ubuntu's own sources set aside (no network here), so apt sees only the mirror fixture"
        mkdir -p /etc/apt/sources-set-aside
        for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
            [ -e "$f" ] && mv "$f" /etc/apt/sources-set-aside/
        done
        [ -s /etc/apt/sources.list ] && mv /etc/apt/sources.list /etc/apt/sources-set-aside/sources.list
        # docker-proxy is not carried: the user's daemon.json turns the userland proxy off (in the file, not as a
        # flag, so that `dockerd --validate` of a new daemon.json sees it too).
        touch "$STATE/setup"
    fi
    # Every run starts from the user's own daemon.json (a machine kept warm from an earlier run included).
    if docker info >/dev/null 2>&1; then
        kill "$(cat /var/run/docker.pid)" 2>/dev/null
        for _ in $(seq 1 60); do [ -e /var/run/docker.pid ] || break; sleep 0.5; done
    fi
    mkdir -p /etc/docker
    echo '{"userland-proxy": false}' >/etc/docker/daemon.json
    $GI --version
    start_dockerd
    serve_mirror /tmp/mirror.log

    if ! docker image inspect local/cuda-base:1 >/dev/null 2>&1; then
        step "local/cuda-base:1: busybox, glibc, libstdc++ and the vector add (SASS and PTX only), no driver file"
        cap=$($SMI --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.')
        img=/tmp/img-cuda
        rm -rf $img
        mkdir -p $img/bin $img/lib64 $img/lib/x86_64-linux-gnu $img/usr/bin $img/usr/lib/x86_64-linux-gnu $img/etc $img/tmp
        cp /usr/local/bin/busybox $img/bin/busybox
        for t in sh ls cat true echo env grep tail; do ln -sf busybox $img/bin/$t; done
        cp -L /lib64/ld-linux-x86-64.so.2 $img/lib64/
        for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libstdc++.so.6 libgcc_s.so.1; do
            cp -L /lib/x86_64-linux-gnu/$l $img/lib/x86_64-linux-gnu/
        done
        /usr/local/cuda/bin/nvcc -O2 -gencode "arch=compute_$cap,code=sm_$cap" -o $img/usr/bin/vadd-sm "$W/vadd.cu" || exit 1
        /usr/local/cuda/bin/nvcc -O2 -gencode "arch=compute_$cap,code=compute_$cap" -o $img/usr/bin/vadd-ptx "$W/vadd.cu" || exit 1
        cuobjdump --list-elf $img/usr/bin/vadd-sm 2>/dev/null | head -n 2
        /usr/local/cuda/bin/cuobjdump --list-ptx --list-elf $img/usr/bin/vadd-ptx 2>&1 | head -n 3
        tar -C $img -c . | docker import -c 'ENV PATH=/usr/bin:/bin' - local/cuda-base:1 || exit 1
        # The same image with NVIDIA's variables in its ENV, as CUDA base images carry them.
        printf 'FROM local/cuda-base:1\nENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility\n' |
            DOCKER_BUILDKIT=0 docker build -q -t local/cuda-env:1 - || exit 1
    fi

    if [ -z "${SKIP_TORCH:-}" ] && ! docker image inspect local/torch:2 >/dev/null 2>&1; then
        step "local/torch:2: the machine's python3 with torch and triton, gcc, no driver file"
        t=/tmp/img-torch
        rm -rf $t
        mkdir -p $t/usr/lib $t/opt/torch/.venv/lib/python3.12/site-packages $t/tmp $t/root
        for d in /usr/bin /usr/sbin /usr/lib/python3.12 /usr/lib/python3 /usr/lib/x86_64-linux-gnu /usr/lib/gcc \
            /usr/libexec /usr/include /usr/lib64 /etc; do
            [ -e "$d" ] || continue
            mkdir -p "$t$(dirname "$d")"
            tar -C / -c --exclude='libnvidia*' --exclude='libcuda.so*' --exclude='libcudadebugger*' \
                --exclude='nvidia-*' "${d#/}" | tar -C $t -x
        done
        for l in bin sbin lib lib64; do cp -P /$l $t/ 2>/dev/null || true; done
        v=/opt/torch/.venv
        cp -a $v/bin $v/pyvenv.cfg $t$v/
        # The venv's packages whole (torch, triton, NVIDIA's CUDA wheels, numpy and its bundled *.libs): CUDA
        # libraries, no driver file.
        cp -a $v/lib/python3.12/site-packages/. $t$v/lib/python3.12/site-packages/
        grep -rl nvidia $t/etc/ld.so.conf.d 2>/dev/null | xargs -r rm -f
        ldconfig -r $t
        echo "driver files found in the image's tree (removed):"
        find $t \( -name 'libcuda.so*' -o -name 'libnvidia-ml*' -o -name 'libnvidia-ptxjit*' \) -print -delete
        du -sh $t
        tar -C $t -c . | docker import -c "ENV PATH=$v/bin:/usr/local/bin:/usr/bin:/bin" - local/torch:2 || exit 1
        rm -rf $t
    fi
    docker images
}

# ---------------------------------------------------------------------------------------------------------
workloads() { # workloads MODE PATH DOCKER-RUN-ARGS...: nvidia-smi, SASS kernel, PTX kernel in local/cuda-base:1
    local mode=$1 path=$2
    shift 2
    try "$mode" "$path" "nvidia-smi -L" docker run --rm --network none "$@" local/cuda-base:1 \
        sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
    try "$mode" "$path" "CUDA kernel (SASS)" docker run --rm --network none "$@" local/cuda-base:1 vadd-sm
    try "$mode" "$path" "CUDA kernel (PTX, JIT)" docker run --rm --network none "$@" local/cuda-base:1 vadd-ptx
}

torch_workloads() { # torch_workloads MODE PATH DOCKER-RUN-ARGS...
    [ -z "${SKIP_TORCH:-}" ] || return 0
    local mode=$1 path=$2
    shift 2
    try "$mode" "$path" "PyTorch bf16 matmul" docker run --rm --network none -v "$W:/w:ro" "$@" local/torch:2 \
        python3 /w/torch_check.py matmul
    try "$mode" "$path" "torch.compile (Triton)" docker run --rm --network none -v "$W:/w:ro" "$@" local/torch:2 \
        python3 /w/torch_check.py compile
}

phase_runtime() {
    apply_mode runtime
    nvidia-ctk --version 2>&1 | head -n 2
    grep -E '^\s*(mode|runtimes|ldconfig)\s*=' /etc/nvidia-container-runtime/config.toml
    local uuid
    uuid=$(uuids | head -n1)
    step "runtime mode: every start path, CUDA work in each"
    workloads runtime "-e NVIDIA_VISIBLE_DEVICES=all (default runtime)" -e NVIDIA_VISIBLE_DEVICES=all
    workloads runtime "-e NVIDIA_VISIBLE_DEVICES=<UUID>" -e "NVIDIA_VISIBLE_DEVICES=$uuid"
    try runtime "image ENV NVIDIA_VISIBLE_DEVICES=all" "CUDA kernel (SASS)" docker run --rm --network none local/cuda-env:1 vadd-sm
    workloads runtime "--runtime nvidia -e NVIDIA_VISIBLE_DEVICES=all" --runtime nvidia -e NVIDIA_VISIBLE_DEVICES=all
    workloads runtime "--gpus all" --gpus all
    workloads runtime "--gpus device=<UUID>" --gpus "device=$uuid"
    workloads runtime "--gpus \"device=0\"" --gpus '"device=0"'
    workloads runtime "--device nvidia.com/gpu=all (the toolkit's spec)" --device nvidia.com/gpu=all
    try runtime "no GPU requested (must fail: no GPU)" "CUDA kernel (SASS)" docker run --rm --network none local/cuda-base:1 vadd-sm
    step "runtime mode: classic docker build, a RUN step on the GPU"
    try runtime "DOCKER_BUILDKIT=0 docker build (RUN vadd-sm)" "CUDA kernel (SASS)" sh -c \
        "printf 'FROM local/cuda-env:1\nRUN vadd-sm\n' | DOCKER_BUILDKIT=0 docker build --no-cache --network none -t local/build-proof:1 - 2>&1"
    torch_workloads runtime "-e NVIDIA_VISIBLE_DEVICES=all (default runtime)" -e NVIDIA_VISIBLE_DEVICES=all
    verify_doctor runtime

    [ -z "${SKIP_BENCH:-}" ] || return 0
    step "bench/gpu_start, runtime mode (NVIDIA's runtime in its default mode)"
    $PY bench/gpu_start --image local/cuda-base:1 --runs 10 --target 1.1 --plain '--runtime runc' \
        --gpu '--runtime nvidia' --gpu '-e NVIDIA_VISIBLE_DEVICES=all' --gpu '--gpus all' \
        --gpu '--device nvidia.com/gpu=all' | tee "$D/gpu_start-runtime.md"; rc
}


phase_static_cdi() { # for the record, in runtime mode: NVIDIA's runtime reading the spec instead of generating one
    step "bench/gpu_start, runtime mode with the runtime's static cdi mode (then set back)"
    cp /etc/nvidia-container-runtime/config.toml /tmp/config.toml.before
    nvidia-ctk config --in-place --set nvidia-container-runtime.mode=cdi; rc
    $PY bench/gpu_start --image local/cuda-base:1 --runs 10 --target 1.1 --plain '--runtime runc' \
        --gpu '--runtime nvidia' --gpu '-e NVIDIA_VISIBLE_DEVICES=all' --gpu '--gpus all' |
        tee "$D/gpu_start-runtime-static-cdi.md"; rc
    try "runtime (static cdi)" "-e NVIDIA_VISIBLE_DEVICES=all" "CUDA kernel (SASS)" \
        docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=all local/cuda-base:1 vadd-sm
    cp /tmp/config.toml.before /etc/nvidia-container-runtime/config.toml
}

phase_switch() { # the short proof: a bare host to runtime mode by apt from the mirror, then one apply to cdi mode
    settings runtime
    step "gpu-install apply --yes (runtime mode)"
    $GI apply --yes --json >"$D/apply-runtime.json"; rc
    $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print("changed:", r.get("changed"), "failed:", r.get("failed"), (r.get("error") or {}).get("reason", ""))' "$D/apply-runtime.json"
    dpkg -l 'nvidia-container-toolkit*' 'libnvidia-container*' | grep '^ii'
    docker info --format 'default runtime: {{.DefaultRuntime}}'
    workloads runtime "-e NVIDIA_VISIBLE_DEVICES=all (default runtime)" -e NVIDIA_VISIBLE_DEVICES=all
    settings cdi
    step "gpu-install apply --yes (switch to cdi mode)"
    $GI apply --yes --json >"$D/apply-cdi.json"; rc
    $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print("changed:", r.get("changed"), "failed:", r.get("failed"), (r.get("error") or {}).get("reason", ""))' "$D/apply-cdi.json"
    echo "daemon.json:"; cat /etc/docker/daemon.json; echo
    docker info --format 'default runtime: {{.DefaultRuntime}}; runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}'
    workloads cdi "--device nvidia.com/gpu=all" --device nvidia.com/gpu=all
    try cdi "--gpus all (not served by CDI mode)" "nvidia-smi -L" docker run --rm --network none --gpus all local/cuda-base:1 \
        sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
    try cdi "-e NVIDIA_VISIBLE_DEVICES=all (not served by CDI mode)" "CUDA kernel (SASS)" \
        docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=all local/cuda-base:1 vadd-sm
    step "gpu-install verify (cdi mode)"
    $GI verify; rc
}

phase_cdi() {
    if ! docker info --format '{{.DefaultRuntime}}' | grep -qx nvidia; then
        step "this lease starts bare: runtime mode first, so that the switch is a real one"
        apply_mode runtime
    fi
    step "switch to CDI mode"
    apply_mode cdi
    cp /etc/cdi/gpu-install-nvidia.json "$D/spec-cdi.json" 2>/dev/null
    local uuid
    uuid=$(uuids | head -n1)
    step "cdi mode: every start path, CUDA work in each"
    workloads cdi "--device nvidia.com/gpu=all" --device nvidia.com/gpu=all
    workloads cdi "--device nvidia.com/gpu=0" --device nvidia.com/gpu=0
    workloads cdi "--device nvidia.com/gpu=<UUID>" --device "nvidia.com/gpu=$uuid"
    try cdi "--gpus all (not served by CDI mode)" "nvidia-smi -L" docker run --rm --network none --gpus all local/cuda-base:1 \
        sh -c "nvidia-smi -L 2>/dev/null || $SMI -L"
    try cdi "-e NVIDIA_VISIBLE_DEVICES=all (not served by CDI mode)" "CUDA kernel (SASS)" \
        docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=all local/cuda-base:1 vadd-sm
    torch_workloads cdi "--device nvidia.com/gpu=all" --device nvidia.com/gpu=all
    verify_doctor cdi
    [ -z "${SKIP_BENCH:-}" ] || return 0
    step "bench/gpu_start, CDI mode"
    $PY bench/gpu_start --image local/cuda-base:1 --runs 10 --target 1.1 \
        --gpu '--device nvidia.com/gpu=all' --gpu "--device nvidia.com/gpu=$uuid" | tee "$D/gpu_start-cdi.md"; rc
    [ -z "${SKIP_TORCH:-}" ] || return 0
    step "bench/gpu_workload, CDI mode"
    $PY bench/gpu_workload --image local/torch:2 --rounds 3 --gpu '--device nvidia.com/gpu=all' |
        tee "$D/gpu_workload-cdi.md"; rc
}

for phase in "$@"; do
    "phase_$phase"
done
echo DONE
