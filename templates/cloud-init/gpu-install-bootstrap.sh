#!/bin/bash
# gpu-install-bootstrap: written by the user-data `gpu-install cloud-init` renders (docs/cloud-init.md).
#   first-boot  (cloud-init runcmd) install gpu-install, apply, verify; on exit 9 ask cloud-init to reboot once
#   finish      (gpu-install-finish.service) apply and verify after that reboot, or at an image's first boot
#   report      (cloud-init per-boot script) fail this boot's cloud-init status if the last run failed
# Settings: /etc/gpu-install/config.yml. Its own inputs: /etc/gpu-install/cloud-init.env.
# Log: /var/log/gpu-install/cloud-init.log (and the serial console). Marker: /var/lib/gpu-install/cloud-init.json
set -u -o pipefail
set -a
. /etc/gpu-install/cloud-init.env
set +a
VENV=/opt/gpu-install/venv
GI=$VENV/bin/gpu-install
CONFIG=/etc/gpu-install/config.yml
STATE=/var/lib/gpu-install
MARKER=$STATE/cloud-init.json
REBOOTED=$STATE/cloud-init.rebooted
BUILDER=$STATE/cloud-init.image-builder
REBOOT_FLAG=/run/gpu-install/reboot
UNIT=gpu-install-finish.service
LOG=/var/log/gpu-install/cloud-init.log
INSTANCE_TYPE=unknown

say() { printf 'gpu-install-bootstrap: %s\n' "$*"; }

mark() { # STATE EXIT_CODE REASON
    mkdir -p "$STATE"
    python3 - "$MARKER" "$1" "$2" "$3" "$GPU_INSTALL_PROVIDER" "$INSTANCE_TYPE" "$LOG" <<'PY'
import json, os, sys, time
path, state, code, reason, provider, itype, log = sys.argv[1:8]
doc = {"schema": 1, "state": state, "exit_code": int(code), "reason": reason, "provider": provider,
       "instance_type": itype, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "log": log}
with open(path + ".tmp", "w") as f:
    f.write(json.dumps(doc, indent=2) + "\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(path + ".tmp", path)
PY
    say "marker: $1 (exit code $2): $3"
}

fail() { # EXIT_CODE REASON
    mark failed "$1" "$2"
    say "FAILED: $2 (log: $LOG, runs: /var/log/gpu-install/runs)"
    exit "$1"
}

# The instance type, from the cloud's metadata service (never through a proxy).
metadata_instance_type() {
    python3 - <<'PY'
import os, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def fetch(url, header, method="GET"):
    req = urllib.request.Request(url, method=method)
    if header:
        name, _, value = header.partition(":")
        req.add_header(name.strip(), value.strip())
    with opener.open(req, timeout=2) as resp:
        return resp.read().decode().strip()
header = os.environ["GPU_INSTALL_MD_HEADER"]
if os.environ["GPU_INSTALL_MD_TOKEN_URL"]:
    token = fetch(os.environ["GPU_INSTALL_MD_TOKEN_URL"], os.environ["GPU_INSTALL_MD_TOKEN_HEADER"], "PUT")
    header = os.environ["GPU_INSTALL_MD_TOKEN_USE"] + ": " + token
print(fetch(os.environ["GPU_INSTALL_MD_URL"], header).rsplit("/", 1)[-1])
PY
}

probe_instance_type() {
    INSTANCE_TYPE=$(metadata_instance_type 2>/dev/null) && [ -n "$INSTANCE_TYPE" ] || INSTANCE_TYPE=unknown
    case " $GPU_INSTALL_NVSWITCH_TYPES " in
    *" $INSTANCE_TYPE "*)
        say "instance type $INSTANCE_TYPE ($GPU_INSTALL_PROVIDER): NVSwitch board; the driver role adds" \
            "nvidia-fabricmanager of nvidia_driver_branch" ;;
    *) say "instance type $INSTANCE_TYPE ($GPU_INSTALL_PROVIDER)" ;;
    esac
}

pick_python() {
    for p in python3 python3.13 python3.12 python3.11 python3.10; do
        if command -v "$p" >/dev/null && "$p" -c \
            'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

# A Python of 3.10 or newer with venv: Debian/Ubuntu split venv off (python3-venv); Amazon Linux 2023 and
# EL 8/9 ship an older python3 beside python3.11.
install_python() {
    say "installing a Python with venv"
    if command -v apt-get >/dev/null; then
        set -- -o "DPkg::Lock::Timeout=$GPU_INSTALL_LOCK_TIMEOUT"
        [ -z "$GPU_INSTALL_PROXY" ] || set -- "$@" -o "Acquire::http::Proxy=$GPU_INSTALL_PROXY" \
            -o "Acquire::https::Proxy=$GPU_INSTALL_PROXY"
        apt-get "$@" -q update && DEBIAN_FRONTEND=noninteractive apt-get "$@" -q -y install python3-venv
    elif command -v dnf >/dev/null; then
        set --
        [ -z "$GPU_INSTALL_PROXY" ] || set -- "--setopt=proxy=$GPU_INSTALL_PROXY"
        dnf "$@" -q -y install python3.11
    else
        return 1
    fi
}

install_gpu_install() {
    if [ -n "$GPU_INSTALL_WANT_VERSION" ] && [ -x "$GI" ] && "$VENV/bin/python" -c \
        'import sys; from importlib.metadata import version; sys.exit(version("gpu-install") != sys.argv[1])' \
        "$GPU_INSTALL_WANT_VERSION" 2>/dev/null; then
        say "gpu-install $GPU_INSTALL_WANT_VERSION is installed in $VENV"
        return 0
    fi
    mark installing 0 "installing $GPU_INSTALL_REQUIREMENT"
    py=$(pick_python) || { install_python && py=$(pick_python); } ||
        fail 3 "no Python 3.10+ with venv here, and none could be installed: gpu-install needs one"
    "$py" -m venv "$VENV" || fail 10 "could not create $VENV with $py"
    set -- --quiet --disable-pip-version-check --no-input
    [ -z "$GPU_INSTALL_INDEX_URL" ] || set -- "$@" --index-url "$GPU_INSTALL_INDEX_URL"
    [ -z "$GPU_INSTALL_FIND_LINKS" ] || set -- "$@" --find-links "$GPU_INSTALL_FIND_LINKS"
    [ "$GPU_INSTALL_NO_INDEX" != 1 ] || set -- "$@" --no-index
    [ -z "$GPU_INSTALL_PROXY" ] || set -- "$@" --proxy "$GPU_INSTALL_PROXY"
    for h in $GPU_INSTALL_TRUSTED_HOSTS; do set -- "$@" --trusted-host "$h"; done
    say "pip install $GPU_INSTALL_REQUIREMENT ($*)"
    "$VENV/bin/pip" install "$@" "$GPU_INSTALL_REQUIREMENT" ||
        fail 5 "pip could not install $GPU_INSTALL_REQUIREMENT: check the package index, mirror or wheel URL"
    ln -sfn "$GI" /usr/local/bin/gpu-install
    say "installed $("$GI" --version)"
}

# Secure Boot on Ubuntu with no nvidia_driver_source in the settings: Canonical's signed precompiled modules
# (gpu-install detect says whether Secure Boot is on; the driver role refuses unsigned modules under it).
secure_boot_source() { # SETTINGS_FILE
    [ -n "$GPU_INSTALL_SECURE_BOOT_SOURCE" ] || return 0
    grep -q '^nvidia_driver_source:' "$1" && return 0
    if "$GI" detect --json 2>/dev/null | "$VENV/bin/python" -c 'import json, sys
f = json.load(sys.stdin)
os_ = f.get("os") or {}
ubuntu = "ubuntu" in (os_.get("id"), (os_.get("like") or {}).get("id"))
sys.exit(0 if f.get("secure_boot") and ubuntu else 1)'; then
        say "Secure Boot is on: nvidia_driver_source: $GPU_INSTALL_SECURE_BOOT_SOURCE (signed modules) in $1"
        printf 'nvidia_driver_source: %s  # gpu-install cloud-init: Secure Boot is on\n' \
            "$GPU_INSTALL_SECURE_BOOT_SOURCE" >>"$1"
    fi
}

apply() { # SETTINGS_FILE
    secure_boot_source "$1"
    mark applying 0 "gpu-install apply --yes -c $1"
    say "gpu-install apply --yes -c $1"
    "$GI" apply --yes -c "$1"
}

verify() {
    mark verifying 0 "gpu-install verify"
    say "gpu-install verify"
    "$GI" verify || fail $? "gpu-install verify failed: containers do not see this host's GPUs"
    mark done 0 "this host runs GPU containers (apply and verify passed)"
}

reboot_once() { # HOW
    [ ! -e "$REBOOTED" ] || fail 9 "the driver still needs a reboot after the one reboot gpu-install made"
    command -v systemctl >/dev/null && systemctl enable "$UNIT" ||
        fail 9 "a reboot is needed, and $UNIT could not be enabled to finish after it"
    touch "$REBOOTED"
    mark reboot-pending 9 "rebooting once to load the NVIDIA driver; $UNIT finishes on the next boot"
    if [ "$1" = cloud-init ]; then
        mkdir -p "${REBOOT_FLAG%/*}" && touch "$REBOOT_FLAG"  # cloud-init's power_state reboots after final
    else
        systemctl reboot --no-block
    fi
}

first_boot() {
    probe_instance_type
    install_gpu_install
    if [ "$GPU_INSTALL_IMAGE_BUILD" = 1 ]; then
        apply /etc/gpu-install/image-build.yml || fail $? "gpu-install apply (image build) failed"
        systemctl enable "$UNIT" || fail 1 "could not enable $UNIT for the image's first boot"
        rm -f "$REBOOTED"
        cat /var/lib/cloud/data/instance-id >"$BUILDER" 2>/dev/null || :
        mark image-built 0 "image built without a GPU; $UNIT runs the GPU steps at an instance's first boot"
        return 0
    fi
    apply "$CONFIG"
    rc=$?
    case $rc in
    0) verify ;;
    9) reboot_once cloud-init ;;
    *) fail "$rc" "gpu-install apply failed" ;;
    esac
}

finish() {
    if [ -s "$BUILDER" ] && [ "$(cat /var/lib/cloud/data/instance-id 2>/dev/null)" = "$(cat "$BUILDER")" ]; then
        say "this is the image builder itself: the GPU steps wait for an instance made from the image"
        return 0
    fi
    probe_instance_type
    [ -x "$GI" ] || fail 1 "$GI is missing: the first boot did not install gpu-install"
    apply "$CONFIG"
    rc=$?
    case $rc in
    0) verify && systemctl disable "$UNIT" ;;
    9) reboot_once systemd ;;
    *) fail "$rc" "gpu-install apply failed" ;;
    esac
}

report() {
    [ -f "$MARKER" ] || exit 0
    python3 - "$MARKER" "$REBOOT_FLAG" <<'PY'
import json, os, sys
doc = json.load(open(sys.argv[1]))
state = doc.get("state")
if state == "failed":
    sys.exit("gpu-install-bootstrap: gpu-install failed: %s (exit code %s; log: %s)"
             % (doc.get("reason"), doc.get("exit_code"), doc.get("log")))
if state == "reboot-pending" and not os.path.exists(sys.argv[2]):
    sys.exit("gpu-install-bootstrap: the reboot happened but gpu-install-finish.service did not finish the setup")
print("gpu-install-bootstrap: state %s: %s" % (state, doc.get("reason")))
PY
}

case ${1:-} in
first-boot | finish)
    mkdir -p "${LOG%/*}" && chmod 0750 "${LOG%/*}"
    exec > >(tee -a "$LOG") 2>&1
    say "$1 for $GPU_INSTALL_PROVIDER, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    "${1//-/_}"
    ;;
report) report ;;
*)
    echo "usage: $0 first-boot|finish|report" >&2
    exit 2
    ;;
esac
