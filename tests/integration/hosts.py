"""Real systemd Debian hosts for the integration tests, as Docker containers.

Each host is a container running /lib/systemd/systemd as PID 1 that can run
its own dockerd (the recipe in shared/DESIGN.md, "What the test machines give
you"). Images come in two layers, both keyed by content and reused:

* base ``local/gpu-install-host:<suite>-base-<key>``: debootstrap minbase with
  systemd, python3, sshd (images/build-rootfs.sh); key = hash of the suite and
  that script's text. Built through apt-cacher-ng on this machine.
* venv ``local/gpu-install-host:<suite>-<key>``: the base plus
  /opt/gpu-install/venv holding the project's dependencies, installed offline
  from a wheelhouse made on this machine for the host's Python and glibc; key =
  hash of the base tag, the dependency list, the wheelhouse's target and
  VENV_SCRIPT.

* a test file's own layer (``ensure_layer``), e.g.
  ``local/gpu-install-host:trixie-containerd-2.1-<key>``: the venv layer plus
  what the file's script installs through apt-cacher-ng (and files it mounts);
  key = hash of the venv tag, the layer's name, the script and the files' key.
  ``host_factory(suite, image=tag, tmpfs=(...))`` starts hosts of it.

All are also ``docker save``d under $GPU_INSTALL_TEST_CACHE/images, so a
machine that keeps the cache but gets a fresh dockerd loads rather than builds.

Per host, the project wheel (built once per session) is installed into the
venv with ``--no-deps`` and /usr/local/bin/gpu-install is a symlink to its
script. apt in the hosts reaches deb.debian.org through apt-cacher-ng on the
Docker bridge gateway (an apt proxy setting written at start).

Containers and volumes are named ``gpuit-*`` and labelled with the pid of the
process that made them; ones whose process is gone are removed at start.

Run as a script to prepare the images ahead of pytest:

    python tests/integration/hosts.py prepare [SUITE...]
    python tests/integration/hosts.py reap
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD_SCRIPT = HERE / "images" / "build-rootfs.sh"
CACHE = Path(os.environ.get("GPU_INSTALL_TEST_CACHE", "/var/cache/gpu-install-test"))
ACNG_PORT = 3142
REPO = "local/gpu-install-host"
SUITES = ("bookworm", "trixie")
VENV = "/opt/gpu-install/venv"
OWNER_LABEL = "gpuit.owner"
PREFIX = "gpuit-"

# Runs in a one-off container of the base image with the wheelhouse at
# /wheels; its text is part of the venv layer's key.
VENV_SCRIPT = f"""set -eu
python3 -m venv {VENV}
{VENV}/bin/pip install --quiet --no-index --find-links /wheels -r /wheels/requirements.txt
{VENV}/bin/pip --version
"""

# The flags that make a container a systemd host able to run its own dockerd
# (plain --privileged fails here: CAP_SYS_RESOURCE is not in the bounding set).
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/tmp",
]  # fmt: skip


def log(msg: str) -> None:
    print(f"[hosts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def docker(
    *args: str, check: bool = True, input: bytes | None = None, timeout: float | None = None, capture: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        ["docker", *args],
        input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}): {err}")
    return proc


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock shared by every process on this machine (xdist workers too)."""
    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "locks" / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_labels(tag: str) -> dict[str, str]:
    out = docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag).stdout
    return json.loads(out) or {}


def _tarball(tag: str) -> Path:
    return CACHE / "images" / (re.sub(r"[/:]", "_", tag) + ".tar")


def _restore(tag: str) -> bool:
    """The image is in dockerd, or loaded from the cache's saved copy."""
    if image_exists(tag):
        return True
    tar = _tarball(tag)
    if tar.is_file():
        log(f"loading {tag} from {tar}")
        with open(tar, "rb") as fh:
            proc = subprocess.run(["docker", "load", "-q"], stdin=fh, capture_output=True, check=False)
        if proc.returncode == 0 and image_exists(tag):
            return True
        log(f"could not load {tar} ({proc.stderr.decode(errors='replace').strip()}); rebuilding")
        tar.unlink(missing_ok=True)
    return False


def _save(tag: str) -> None:
    """Keep a ``docker save`` copy of the image and drop older versions of it."""
    tar = _tarball(tag)
    tar.parent.mkdir(parents=True, exist_ok=True)
    stem = tag.rsplit("-", 1)[0]  # local/gpu-install-host:<suite> or :<suite>-base
    older = re.compile(re.escape(stem) + r"-[0-9a-f]{12}")
    for old in tar.parent.glob("*.tar"):
        if old != tar and older.fullmatch(old.name.removesuffix(".tar").replace("_", "/", 1).replace("_", ":", 1)):
            old.unlink(missing_ok=True)
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", REPO).stdout.decode().split()
    for other in listed:
        if other != tag and older.fullmatch(other):
            docker("rmi", other, check=False)
    tmp = tar.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        subprocess.run(["docker", "save", tag], stdout=fh, check=True)
    os.replace(tmp, tar)


def _remove_tree(path: Path) -> None:
    """rm -rf a debootstrap target safely: a killed debootstrap leaves /proc,
    /sys and bind-mounted /dev nodes mounted inside it, and deleting through
    those would reach this machine's own files."""
    if not path.exists():
        return
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4].encode().decode("unicode_escape") for line in fh]
    inside = sorted((p for p in points if p == real or p.startswith(real + "/")), key=len, reverse=True)
    for point in inside:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", real], check=False)


# --- base layer --------------------------------------------------------------


def base_tag(suite: str) -> str:
    return f"{REPO}:{suite}-base-{_sha(suite, BUILD_SCRIPT.read_bytes())}"


_QUIET = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ")


def _build_base(suite: str, tag: str) -> None:
    mirror = f"http://127.0.0.1:{ACNG_PORT}/deb.debian.org/debian"
    (CACHE / "build").mkdir(parents=True, exist_ok=True)
    (CACHE / "log").mkdir(parents=True, exist_ok=True)
    logfile = CACHE / "log" / f"build-{suite}.log"
    rootfs = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=CACHE / "build"))
    start = time.monotonic()
    log(f"{suite}: debootstrap through apt-cacher-ng into {rootfs} (full log: {logfile})")
    try:
        with open(logfile, "w") as lf:
            proc = subprocess.Popen(
                ["sh", str(BUILD_SCRIPT), suite, str(rootfs / "root"), mirror],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            quiet = 0
            for line in proc.stdout:
                lf.write(line)
                if _QUIET.match(line):
                    quiet += 1
                    if quiet % 100 == 0:
                        log(f"{suite}: {quiet} package steps done")
                    continue
                log(f"{suite}: {line.rstrip()}")
            if proc.wait() != 0:
                raise RuntimeError(f"building the {suite} root filesystem failed; see {logfile}")
        info = subprocess.run(
            [
                "chroot",
                str(rootfs / "root"),
                "python3",
                "-c",
                "import sys, platform; print(f'{sys.version_info[0]}.{sys.version_info[1]}', "
                "platform.machine(), platform.libc_ver()[1])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        pyver, machine, glibc = info
        log(f"{suite}: importing as {tag} (python {pyver}, {machine}, glibc {glibc})")
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs / "root"), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                f"LABEL gpuit.suite={suite} gpuit.python={pyver} gpuit.machine={machine} gpuit.glibc={glibc}",
                "--change",
                'CMD ["/lib/systemd/systemd"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError(f"tar of the {suite} root filesystem failed")
    except BaseException:
        with contextlib.suppress(NameError, OSError):
            proc.kill()
            proc.wait()
        raise
    finally:
        _remove_tree(rootfs)
    log(f"{suite}: base image built in {time.monotonic() - start:.0f} s; saving a copy under {CACHE / 'images'}")
    _save(tag)


def ensure_base(suite: str) -> str:
    tag = base_tag(suite)
    if not _restore(tag):
        _build_base(suite, tag)
    return tag


# --- venv layer --------------------------------------------------------------


def _dependencies() -> list[str]:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"].get("dependencies", []))


def _platforms(machine: str, glibc: str) -> list[str]:
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
    return [*tags, f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def host_wheelhouse(pyver: str, machine: str, glibc: str) -> Path:
    """Wheels of the project's dependencies for a host's Python, from PyPI on this machine."""
    deps = _dependencies()
    wh = CACHE / "host-wheels" / _sha(*deps, "--", pyver, machine, glibc)
    if (wh / "requirements.txt").is_file():
        os.utime(wh)
        return wh
    # Keep the wheelhouses used last (both suites' current and previous sets).
    done = [p for p in (CACHE / "host-wheels").glob("*") if ".tmp" not in p.name]
    kept = sorted(done, key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[4:]:
        shutil.rmtree(old, ignore_errors=True)
    log(f"downloading dependency wheels for Python {pyver} ({machine}, glibc {glibc}) into {wh}")
    tmp = wh.with_name(wh.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    abi = "cp" + pyver.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-qq",
        "--only-binary=:all:",
        "--dest",
        str(tmp),
        "--python-version",
        pyver,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for plat in _platforms(machine, glibc):
        cmd += ["--platform", plat]
    subprocess.run([*cmd, *deps], check=True)
    (tmp / "requirements.txt").write_text("\n".join(deps) + "\n")
    shutil.rmtree(wh, ignore_errors=True)
    os.replace(tmp, wh)
    return wh


def venv_tag(suite: str) -> str:
    # The base tag stands for the host's Python and glibc, so the wheelhouse's
    # target is covered without looking into the base image.
    return f"{REPO}:{suite}-{_sha(base_tag(suite), *_dependencies(), VENV_SCRIPT)}"


def ensure_venv_image(suite: str) -> str:
    tag = venv_tag(suite)
    if _restore(tag):
        return tag
    base = ensure_base(suite)
    labels = image_labels(base)
    wh = host_wheelhouse(labels["gpuit.python"], labels["gpuit.machine"], labels["gpuit.glibc"])
    log(f"{suite}: installing the dependencies into {VENV} -> {tag}")
    name = f"{PREFIX}build-{suite}-{os.getpid()}"
    docker("rm", "-f", name, check=False)
    try:
        proc = docker(
            "run",
            "--name",
            name,
            "--label",
            f"{OWNER_LABEL}={os.getpid()}",
            "--network",
            "none",
            "-v",
            f"{wh}:/wheels:ro",
            base,
            "sh",
            "-c",
            VENV_SCRIPT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{suite}: installing the venv failed:\n{proc.stdout.decode()}{proc.stderr.decode()}")
        docker("commit", "--change", 'CMD ["/lib/systemd/systemd"]', name, tag)
    finally:
        docker("rm", "-f", name, check=False)
    log(f"{suite}: saving a copy of {tag}")
    _save(tag)
    return tag


def prepare(suites: Sequence[str] = SUITES) -> dict[str, str]:
    """Make sure every suite's host image exists; build missing ones in parallel."""
    with _locked("images"):
        # Leftovers of builds that were killed (no build runs without this lock).
        for leftover in (CACHE / "build").glob("*"):
            log(f"removing leftover build directory {leftover}")
            _remove_tree(leftover)
        with ThreadPoolExecutor(max_workers=len(suites)) as pool:
            tags = dict(zip(suites, pool.map(ensure_venv_image, suites), strict=True))
    return tags


# --- prepared layers ---------------------------------------------------------


def bridge_gateway() -> str:
    """The Docker bridge's gateway: this machine, where apt-cacher-ng listens for the hosts."""
    fmt = "{{(index .IPAM.Config 0).Gateway}}"
    return docker("network", "inspect", "-f", fmt, "bridge").stdout.decode().strip()


def layer_tag(suite: str, name: str, script: str, key: Sequence[str | bytes] = ()) -> str:
    return f"{REPO}:{suite}-{name}-{_sha(venv_tag(suite), name, script, *key)}"


def ensure_layer(suite: str, name: str, script: str, files: Path | None = None, key: Sequence[str | bytes] = ()) -> str:
    """The suite's venv image plus what ``script`` installs: a test file's own prepared host image.

    The script runs as root with ``sh -eu`` in a one-off container of the venv image (no systemd), apt reaching
    deb.debian.org through apt-cacher-ng as the hosts' apt does; ``files`` is mounted read-only at /layer.
    Keyed by the venv tag, ``name``, the script's text and ``key`` (what ``files`` are made from: the caller
    names it), committed as ``local/gpu-install-host:<suite>-<name>-<key>`` and saved like the other layers.
    apt's lists and archives are emptied afterwards (a host runs apt-get update before it installs anything).
    """
    tag = layer_tag(suite, name, script, key)
    with _locked("images"):
        if _restore(tag):
            return tag
        base = ensure_venv_image(suite)
        log(f"{suite}: preparing the {name} layer -> {tag}")
        began = time.monotonic()
        proxy = f'Acquire::http::Proxy::deb.debian.org "http://{bridge_gateway()}:{ACNG_PORT}";'
        wrapped = (
            f"set -eu\nprintf '%s\\n' '{proxy}' > /etc/apt/apt.conf.d/01gpuit-proxy\n{script}\n"
            "rm -f /etc/apt/apt.conf.d/01gpuit-proxy\napt-get clean\nrm -rf /var/lib/apt/lists/*\n"
        )
        name_ = f"{PREFIX}layer-{suite}-{name}-{os.getpid()}"
        docker("rm", "-f", name_, check=False)
        mounts = ["-v", f"{files}:/layer:ro"] if files is not None else []
        try:
            proc = docker(
                "run", "--name", name_, "--label", f"{OWNER_LABEL}={os.getpid()}", *mounts, base, "sh", "-c", wrapped,
                check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
                raise RuntimeError(f"{suite}: preparing the {name} layer failed:\n{out[-4000:]}")
            docker("commit", "--change", 'CMD ["/lib/systemd/systemd"]', name_, tag)
        finally:
            docker("rm", "-f", name_, check=False)
        log(f"{suite}: {name} layer prepared in {time.monotonic() - began:.0f} s; saving a copy")
        _save(tag)
    return tag


# --- the project wheel ---------------------------------------------------------


def build_wheel(dest: Path) -> Path:
    """The gpu-install wheel from this checkout, as users get it."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(ROOT)]
    with contextlib.suppress(ImportError):
        import hatchling  # noqa: F401

        cmd.insert(4, "--no-build-isolation")
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    (wheel,) = dest.glob("gpu_install-*.whl")
    return wheel


# --- hosts ---------------------------------------------------------------------


class HostCommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        def tail(s: str | bytes | None) -> str:
            if isinstance(s, bytes):
                s = s.decode(errors="replace")
            return "\n".join((s or "").splitlines()[-40:])

        return f"{super().__str__()}\n--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"


@dataclass
class Host:
    """A running systemd Debian host. Commands are argv lists run with docker exec."""

    name: str
    suite: str
    image: str
    ip: str = ""
    _volume: str = field(default="", repr=False)

    def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 1800,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        if isinstance(argv, str):
            raise TypeError("argv must be a list; use ['sh', '-c', script] for a shell")
        cmd = ["docker", "exec"]
        if input is not None:
            cmd.append("-i")
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        cmd += [self.name, *argv]
        if text and isinstance(input, bytes):
            input = input.decode()
        elif not text and isinstance(input, str):
            input = input.encode()
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=text,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL if input is None else None,
        )
        result = subprocess.CompletedProcess(list(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise HostCommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
        return result

    def put(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        """Write a file atomically (parents made), owned by root."""
        if isinstance(content, str):
            content = content.encode()
        script = (
            "import os, sys\n"
            "path, mode = sys.argv[1], int(sys.argv[2], 8)\n"
            "os.makedirs(os.path.dirname(path) or '/', exist_ok=True)\n"
            "tmp = path + '.gpuit-tmp'\n"
            "with open(tmp, 'wb') as f:\n"
            "    f.write(sys.stdin.buffer.read())\n"
            "os.chmod(tmp, mode)\n"
            "os.replace(tmp, path)\n"
        )
        self.run(["python3", "-c", script, path, f"{mode:o}"], input=content, text=False)

    def get(self, path: str) -> bytes:
        return self.run(["cat", "--", path], text=False).stdout

    def authorize_ssh_key(self, public_key: str) -> None:
        """Let root log in over SSH (at ``self.ip``, port 22) with this key."""
        self.run(["install", "-d", "-m", "0700", "/root/.ssh"])
        self.put("/root/.ssh/authorized_keys", public_key.strip() + "\n", 0o600)

    def __str__(self) -> str:
        return f"{self.name} ({self.suite}, {self.ip})"


_counter = itertools.count(1)
_counter_lock = threading.Lock()


@dataclass(frozen=True)
class SshKey:
    """A key pair made for a test session; ``argv(host, ...)`` is an ssh command line."""

    private: Path
    public: str

    @classmethod
    def generate(cls, directory: Path) -> SshKey:
        path = directory / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpu-install-tests", "-f", str(path)], check=True
        )
        return cls(private=path, public=path.with_suffix(".pub").read_text())

    def options(self) -> list[str]:
        return [
            "-i",
            str(self.private),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]

    def argv(self, host: Host, *command: str) -> list[str]:
        return ["ssh", *self.options(), f"root@{host.ip}", *command]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> None:
    """Remove gpuit- containers and volumes left by test processes that are gone."""
    fmt = f'{{{{.Names}}}} {{{{.Label "{OWNER_LABEL}"}}}}'
    out = docker("ps", "-a", "--filter", f"label={OWNER_LABEL}", "--format", fmt).stdout.decode()
    for line in out.splitlines():
        name, _, owner = line.partition(" ")
        if name.startswith(PREFIX) and not (owner.isdigit() and _pid_alive(int(owner))):
            log(f"removing stale container {name}")
            docker("rm", "-f", "-v", name, check=False)
    fmt = f'{{{{.Name}}}} {{{{.Label "{OWNER_LABEL}"}}}}'
    out = docker("volume", "ls", "--filter", f"label={OWNER_LABEL}", "--format", fmt).stdout.decode()
    for line in out.splitlines():
        name, _, owner = line.partition(" ")
        if name.startswith(PREFIX) and not (owner.isdigit() and _pid_alive(int(owner))):
            log(f"removing stale volume {name}")
            docker("volume", "rm", "-f", name, check=False)


class HostFactory:
    """Starts fresh hosts of a suite; removes every host it started at close()."""

    def __init__(self, wheel: Path, images: Mapping[str, str]) -> None:
        self.wheel = wheel
        self.images = dict(images)
        self.hosts: list[Host] = []

    def __call__(self, suite: str, image: str | None = None, tmpfs: Sequence[str] = ()) -> Host:
        """A fresh host of the suite's image (or of ``image``, a layer made from it), with more tmpfs mounts."""
        if suite not in self.images:
            self.images.update(prepare([suite]))
        with _counter_lock:
            n = next(_counter)
        name = f"{PREFIX}{suite}-{os.getpid()}-{n}"
        volume = f"{name}-docker"
        owner = f"{OWNER_LABEL}={os.getpid()}"
        docker("volume", "create", "--label", owner, volume)
        host = Host(name=name, suite=suite, image=image or self.images[suite], _volume=volume)
        self.hosts.append(host)
        began = time.monotonic()
        try:
            docker(
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                f"{suite}-{n}",
                "--label",
                owner,
                *RUN_FLAGS,
                *(arg for path in tmpfs for arg in ("--tmpfs", path)),
                "-v",
                f"{volume}:/var/lib/docker",
                host.image,
                "/lib/systemd/systemd",
            )
            host.ip, gateway = (
                docker("inspect", "-f", "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}", name)
                .stdout.decode()
                .split()
            )
            self._wait_for_systemd(host)
            # apt reaches Debian's archive through the cache on this machine.
            host.put(
                "/etc/apt/apt.conf.d/01gpuit-proxy",
                f'Acquire::http::Proxy::deb.debian.org "http://{gateway}:{ACNG_PORT}";\n',
            )
            remote = f"/root/{self.wheel.name}"
            host.put(remote, self.wheel.read_bytes())
            host.run([f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", remote])
            host.run(["ln", "-sf", f"{VENV}/bin/gpu-install", "/usr/local/bin/gpu-install"])
            host.run(["rm", "-f", remote])
        except BaseException:
            self.remove(host)
            raise
        log(f"started {host} in {time.monotonic() - began:.1f} s")
        return host

    @staticmethod
    def _wait_for_systemd(host: Host, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = host.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=max(1.0, deadline - time.monotonic())
            )
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = host.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
                    log(f"{host.name}: systemd is degraded: {failed.strip()}")
                return
            time.sleep(0.5)  # the bus is not up yet, or still "starting"
        logs = docker("logs", "--tail", "50", host.name, check=False)
        raise RuntimeError(
            f"{host.name}: systemd did not finish booting (state {state!r}):\n"
            f"{logs.stdout.decode(errors='replace')}{logs.stderr.decode(errors='replace')}"
        )

    def remove(self, host: Host) -> None:
        docker("rm", "-f", "-v", host.name, check=False)
        docker("volume", "rm", "-f", host._volume, check=False)
        if host in self.hosts:
            self.hosts.remove(host)

    def close(self) -> None:
        for host in list(self.hosts):
            self.remove(host)


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        suites = argv[1:] or list(SUITES)
        start = time.monotonic()
        for suite, tag in prepare(suites).items():
            log(f"{suite}: {tag}")
        log(f"host images ready in {time.monotonic() - start:.0f} s")
        return 0
    if argv[:1] == ["reap"]:
        reap_stale()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
