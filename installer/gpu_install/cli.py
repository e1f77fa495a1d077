"""The gpu-install command line: one module per subcommand, one error class, versioned JSON."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "detect": "Show what this host is: OS, Docker flavour, GPUs, driver, Secure Boot (changes nothing).",
    "plan": "Show every change apply would make, and change nothing.",
    "apply": "Install and configure the driver, Docker and the NVIDIA container runtime, then verify.",
    "verify": "Prove that a container sees the GPU.",
    "doctor": "Explain what stands between this host and GPU containers, with fixes.",
    "cloud-init": "Render cloud-init user-data that runs gpu-install on a new cloud VM.",
    "cdi": "Write the CDI spec of this host's NVIDIA GPUs and their /dev/char links (CDI mode; runs at boot).",
}

EXIT_HELP = """exit codes:
  0 ok · 1 internal error · 2 usage · 3 unsupported platform or setting · 4 invalid input
  5 package source error · 6 busy · 7 Docker failed to come back (rolled back)
  8 verification failed · 9 reboot required to finish · 10 host error · 130/143 interrupted
"""


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="settings file (YAML; keys are the roles' variables). Default: /etc/gpu-install/config.yml",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="gpu-install",
        description="Make this Linux host run GPU containers.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gpu-install {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one machine-readable JSON result")
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "detect":
            p.add_argument("--root", metavar="DIR", help="read every file under DIR instead of this host")
        if name in ("plan", "apply", "verify", "doctor", "cloud-init"):
            _settings_args(p)
        if name == "apply":
            p.add_argument("-y", "--yes", action="store_true", help="do not ask before changing the host")
        if name == "doctor":
            p.add_argument(
                "--image",
                metavar="IMAGE",
                help="also check that this local image's NVIDIA_REQUIRE_CUDA suits the driver (no pull)",
            )
        if name == "cdi":
            p.add_argument("--output", metavar="FILE", help="the spec file (default: /etc/cdi/gpu-install-nvidia.json)")
            p.add_argument(
                "--capabilities",
                metavar="LIST",
                default="compute,utility",
                help="driver capabilities the spec gives containers, comma-separated (default: compute,utility)",
            )
            p.add_argument("--check", action="store_true", help="say whether the spec is current; write nothing")
            p.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something fails")
        if name == "cloud-init":
            p.add_argument("--provider", required=True, help="aws, azure or gcp")
            p.add_argument("-o", "--output", metavar="FILE", help="write the user-data here (default: stdout)")
            src = p.add_mutually_exclusive_group()
            src.add_argument(
                "--package-version", metavar="VERSION", help="gpu-install version the VM installs (default: this one)"
            )
            src.add_argument("--wheel-url", metavar="URL", help="install this gpu-install wheel (add #sha256=HEX)")
            p.add_argument("--index-url", metavar="URL", help="a PyPI mirror for gpu-install and its dependencies")
            p.add_argument(
                "--find-links",
                metavar="URL",
                help="a wheelhouse; without --index-url the only source (air-gapped: pip --no-index)",
            )
    return parser


def _platform_refusal(args: argparse.Namespace) -> str | None:
    if sys.platform.startswith("linux") or getattr(args, "root", None) or args.command == "cloud-init":
        return None
    found = {"darwin": "macOS", "win32": "Windows", "cygwin": "Windows (Cygwin)"}.get(sys.platform, sys.platform)
    return (
        f"gpu-install runs on Linux hosts and this is {found}: NVIDIA GPU containers need Linux "
        "(on Windows, use WSL2 with the Windows NVIDIA driver and Docker Desktop)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    want_json = bool(getattr(args, "json", False))
    from .errors import GpuInstallError, codes
    from .signals import Interrupted, install_handlers

    install_handlers()
    try:
        refusal = _platform_refusal(args)
        if refusal:
            raise GpuInstallError(codes.UNSUPPORTED, refusal)
        command = importlib.import_module(f".commands.{args.command.replace('-', '_')}", __package__)
        return int(command.run(args))
    except GpuInstallError as err:
        _report_error(err, want_json)
        return err.code
    except Interrupted as intr:
        _report_error(GpuInstallError(intr.code, intr.reason), want_json)
        return intr.code
    except KeyboardInterrupt:
        _report_error(GpuInstallError(codes.INTERRUPTED_SIGINT, "interrupted by SIGINT"), want_json)
        return codes.INTERRUPTED_SIGINT
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return codes.INTERNAL


def _report_error(err: object, want_json: bool) -> None:
    from .output import emit_error

    emit_error(err, want_json)


if __name__ == "__main__":
    sys.exit(main())
