#!/usr/bin/env bash
# Runs ON the lent GPU machine (device tool), from the repository root, as root: gpu-install's CDI mode
# end to end through the CLI, the driver left as it is (nvidia_driver_source: none). On a machine with
# several GPUs it is also the isolation proof (verify checks each GPU alone; doctor prints topology).
# Build the carry here first with scripts/device/carry, then: run(command="OUT=$OUT bash scripts/device/prove-cdi.sh",
# carry=[".device-carry"]).
#
# There: Ubuntu 24.04, driver 580 loaded from /usr/local/nvidia, no Docker, no systemd, no network.
# Docker (the carry's: 28.5 from Debian sid; 26.1 from trixie when this ran in docs/gpu-proof/2026-12-04-h200) comes from Debian's static binaries (installed under /usr/local/bin, as Docker's "install
# from binaries" does; gpu-install detects that flavour as "static"), dockerd started by hand with CDI
# on (a static dockerd has no service manager to restart it). An image needs no registry: busybox and
# the host's glibc, imported. Changes no GPU setting.
# Writes into $OUT: log.txt, plan.json, apply.json, verify.json, doctor.json, spec.json, dockerd.log.
set -uo pipefail
OUT=${OUT:?}
PY=/opt/torch/.venv/bin/python3
GI=/opt/torch/.venv/bin/gpu-install
C=.device-carry
exec > >(tee "$OUT/log.txt") 2>&1
step() { printf '\n===== %s\n' "$*"; }
rc() { echo "(exit $?)"; }

step "the host"
uname -r
/usr/local/nvidia/bin/nvidia-smi -L || nvidia-smi -L
$PY -c 'import pynvml as n; n.nvmlInit(); print("NVML outside:", [n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)) for i in range(n.nvmlDeviceGetCount())])'

step "install gpu-install and ansible into $PY's venv (no network: carried wheels)"
$PY -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check "$C"/whl/*.whl "$C"/dist/*.whl || exit 1
$GI --version

step "Docker from static binaries, CDI on"
tar -C /usr/local/bin -xJf "$C/docker-bin.tar.xz" || exit 1
mkdir -p /etc/docker
printf '{"features": {"cdi": true}}\n' >/etc/docker/daemon.json
setsid dockerd --iptables=false --ip6tables=false --bridge=none --userland-proxy=false \
    --data-root /tmp/dr --exec-root /tmp/de >/tmp/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker version --format 'Docker {{.Server.Version}}' || { cp /tmp/dockerd.log "$OUT/"; exit 1; }

step "an image without a registry: busybox and the host's glibc"
img=/tmp/img
mkdir -p $img/bin $img/lib64 $img/lib/x86_64-linux-gnu $img/usr/bin $img/usr/lib/x86_64-linux-gnu $img/etc $img/tmp
cp /usr/local/bin/busybox $img/bin/busybox
for t in sh ls cat true echo env; do ln -sf busybox $img/bin/$t; done
cp -L /lib64/ld-linux-x86-64.so.2 $img/lib64/
for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do cp -L /lib/x86_64-linux-gnu/$l $img/lib/x86_64-linux-gnu/; done
tar -C $img -c . | docker import - local/gpu-base:1

step "gpu-install detect"
$GI detect

step "settings"
mkdir -p /etc/gpu-install
cat >/etc/gpu-install/config.yml <<'YAML'
nvidia_driver_source: none
nvidia_container_mode: cdi
docker_package: none
gpu_verify_image: local/gpu-base:1
gpu_verify_pull: false
YAML
cat /etc/gpu-install/config.yml

step "gpu-install plan"
$GI plan; rc
$GI plan --json >"$OUT/plan.json"; rc

step "gpu-install apply --yes"
$GI apply --yes; rc

step "gpu-install apply --yes --json (again: nothing to change)"
$GI apply --yes --json >"$OUT/apply.json"; rc
$PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print("changed:", r.get("changed"), "failed:", r.get("failed"))' "$OUT/apply.json"

step "gpu-install verify"
$GI verify; rc
$GI verify --json >"$OUT/verify.json"; rc

step "gpu-install doctor"
$GI doctor; rc
$GI doctor --json >"$OUT/doctor.json"; rc

step "gpu-install cdi --check (the boot-time refresh's command: the spec is current)"
$GI cdi --check; rc

step "by hand: the spec gpu-install wrote, used by Docker"
cp /etc/cdi/gpu-install-nvidia.json "$OUT/spec.json"
# Every GPU by index and by UUID (on a host with several GPUs this is the isolation proof: each
# container lists exactly one GPU, the one NVML names outside).
selectors=$($PY -c 'import pynvml as n; n.nvmlInit(); print(" ".join(f"{i} {n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i))}" for i in range(n.nvmlDeviceGetCount())))')
for dev in all $selectors; do
    echo "--device nvidia.com/gpu=$dev:"
    docker run --rm --network none --device "nvidia.com/gpu=$dev" local/gpu-base:1 nvidia-smi -L; rc
done
ls -l /dev/char | grep nvidia || true
cp /tmp/dockerd.log "$OUT/"
echo DONE
