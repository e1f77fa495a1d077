#!/usr/bin/env bash
# Runs ON the lent GPU machine (device tool), from the repository root, as root.
# Proves gpu-install's own CDI spec end to end with a real Docker (26.1 when it ran: Debian trixie's; the carry now holds sid's 28.5)
# binaries, carried in .device-carry/docker-bin.tar.xz) and runs bench/gpu_start.
# Writes into $OUT: log.txt, spec.json, smi.txt, bench.md, capture.tar.gz, dockerd.log.
# Changes no GPU setting. /etc/docker and /etc/cdi are the bare machine's own, given back after.
set -uo pipefail
OUT=${OUT:?}
PY=/opt/torch/.venv/bin/python3
exec > >(tee "$OUT/log.txt") 2>&1
set -x
uname -a; nvidia-smi -L || /usr/local/nvidia/bin/nvidia-smi -L

# --- Docker 26.1 (trixie) binaries ---------------------------------------------
mkdir -p /tmp/dockerbin && tar -C /tmp/dockerbin -xJf .device-carry/docker-bin.tar.xz || exit 1
export PATH=/tmp/dockerbin:$PATH
mkdir -p /etc/docker /etc/cdi
printf '{"features": {"cdi": true}}\n' >/etc/docker/daemon.json
setsid dockerd --iptables=false --ip6tables=false --bridge=none --userland-proxy=false --data-root /tmp/dr --exec-root /tmp/de \
  >/tmp/dockerd.log 2>&1 </dev/null &
set +x; for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done; set -x
docker version --format '{{.Server.Version}}' || { cp /tmp/dockerd.log "$OUT/"; exit 1; }

# --- an image: busybox + the host's glibc --------------------------------------
img=/tmp/img; mkdir -p $img/bin $img/lib64 $img/lib/x86_64-linux-gnu $img/usr/bin $img/usr/lib/x86_64-linux-gnu $img/etc $img/tmp $img/proc $img/sys $img/dev
cp /tmp/dockerbin/busybox $img/bin/busybox
for t in sh ls cat true echo env; do ln -sf busybox $img/bin/$t; done
cp -L /lib64/ld-linux-x86-64.so.2 $img/lib64/
for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do cp -L /lib/x86_64-linux-gnu/$l $img/lib/x86_64-linux-gnu/; done
tar -C $img -c . | docker import - local/gpu-base:1

# --- the spec, by gpu-install's generator ----------------------------------------
PYTHONPATH=installer $PY - <<'PYEOF' || exit 1
import json, sys
from gpu_install.collection import module_utils
cdi = module_utils("cdi")
spec, found = cdi.generate(search_paths=["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"])
assert not cdi.validate(spec)
data = cdi.dumps(spec)
open("/etc/cdi/gpu-install-nvidia.json", "wb").write(data)
spec2, _ = cdi.generate(search_paths=["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"])
print("deterministic:", cdi.dumps(spec2) == data)
print(json.dumps(found.as_dict(), indent=1))
PYEOF
cp /etc/cdi/gpu-install-nvidia.json "$OUT/spec.json"
{
  echo "== NVML outside (pynvml)"
  $PY -c 'import pynvml as n; n.nvmlInit(); print(n.nvmlSystemGetDriverVersion()); [print(i, n.nvmlDeviceGetName(n.nvmlDeviceGetHandleByIndex(i)), n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i))) for i in range(n.nvmlDeviceGetCount())]'
  uuid=$($PY -c 'import pynvml as n; n.nvmlInit(); u=n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(0)); print(u.decode() if isinstance(u, bytes) else u)')
  echo "== inside: --device nvidia.com/gpu=all"
  docker run --rm --network none --device nvidia.com/gpu=all local/gpu-base:1 nvidia-smi -L; echo "rc=$?"
  echo "== inside: --device nvidia.com/gpu=0"
  docker run --rm --network none --device nvidia.com/gpu=0 local/gpu-base:1 nvidia-smi -L; echo "rc=$?"
  echo "== inside: --device nvidia.com/gpu=$uuid"
  docker run --rm --network none --device "nvidia.com/gpu=$uuid" local/gpu-base:1 nvidia-smi -L; echo "rc=$?"
  echo "== inside: no device (expect failure)"
  docker run --rm --network none local/gpu-base:1 sh -c 'ls /dev; nvidia-smi -L'; echo "rc=$?"
  echo "== inside: what the spec put there"
  docker run --rm --network none --device nvidia.com/gpu=all local/gpu-base:1 sh -c 'ls -l /dev/nvidia* /usr/lib/x86_64-linux-gnu /usr/bin; env | grep NVIDIA'
} 2>&1 | tee "$OUT/smi.txt"

# --- the benchmark ------------------------------------------------------------------
$PY bench/gpu_start --image local/gpu-base:1 --runs 20 | tee "$OUT/bench.md"

# --- a capture for the unit tests ---------------------------------------------------
cap=/tmp/capture; mkdir -p $cap
for f in /proc/driver/nvidia/version /proc/sys/kernel/arch /proc/driver/nvidia/gpus/*/information /etc/ld.so.cache /etc/os-release; do
  mkdir -p "$cap$(dirname "$f")" && cat "$f" >"$cap$f"
done
find /usr/local/nvidia /usr/bin/nvidia-* /dev/nvidia* /dev/nvidia-caps /lib/firmware/nvidia /usr/lib/firmware/nvidia \
  /run/nvidia-persistenced /run/nvidia-fabricmanager -maxdepth 3 -printf '%y %p\t%l\n' >$cap/listing.txt 2>/dev/null
ldconfig -p >$cap/ldconfig-p.txt
head -c 2000 /usr/bin/nvidia-smi >$cap/usr-bin-nvidia-smi.txt
tar -C $cap -czf "$OUT/capture.tar.gz" .
cp /tmp/dockerd.log "$OUT/"
echo DONE
