#!/bin/sh
# Build the root filesystem of a systemd Debian test host.
#
#   build-rootfs.sh SUITE DIR BUILD_MIRROR
#
# BUILD_MIRROR is where debootstrap fetches from (apt-cacher-ng on this
# machine); the image itself gets Debian's real mirror, so a host looks like
# any Debian host. The test fixtures add an apt proxy setting at start-up
# that points deb.debian.org at the cache on the Docker bridge.
#
# The image tag is keyed by a hash of this file's text and the suite:
# change anything here and every image is rebuilt.
set -eu

suite=$1
dir=$2
mirror=$3

packages=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,openssh-server,iproute2
components=main,contrib,non-free,non-free-firmware

debootstrap --variant=minbase --components="$components" --include="$packages" \
    "$suite" "$dir" "$mirror"

# Sources as Debian's installer writes them: one-line sources.list up to
# bookworm, deb822 debian.sources from trixie on.
rm -f "$dir/etc/apt/sources.list"
case "$suite" in
    bookworm)
        cat >"$dir/etc/apt/sources.list" <<SRC
deb http://deb.debian.org/debian $suite main contrib non-free non-free-firmware
deb http://deb.debian.org/debian $suite-updates main contrib non-free non-free-firmware
deb http://deb.debian.org/debian-security $suite-security main contrib non-free non-free-firmware
SRC
        ;;
    *)
        cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        ;;
esac

# A host, not a chroot: its own hostname and machine id at boot, no package
# lists or downloaded packages from the build, no units that cannot work in a
# container.
echo "gpuit-$suite" >"$dir/etc/hostname"
: >"$dir/etc/machine-id"
rm -f "$dir/var/lib/dbus/machine-id"
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
mkdir -p "$dir/var/lib/apt/lists/partial"
for unit in systemd-remount-fs.service getty.target console-getty.service \
    systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$dir/etc/systemd/system/$unit"
done
# sshd host keys were made during the build and would be shared by every host:
# make them at boot instead, before sshd's own config test.
rm -f "$dir"/etc/ssh/ssh_host_*
mkdir -p "$dir/etc/systemd/system/ssh.service.d"
cat >"$dir/etc/systemd/system/ssh.service.d/host-keys.conf" <<UNIT
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
# No kernel modules can be loaded from a container; systemd does not skip this
# by itself, and a failed unit would make every host "degraded".
mkdir -p "$dir/etc/systemd/system/systemd-modules-load.service.d"
cat >"$dir/etc/systemd/system/systemd-modules-load.service.d/container.conf" <<UNIT
[Unit]
ConditionVirtualization=!container
UNIT
