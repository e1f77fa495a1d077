"""The gpu-install command line: one module per subcommand, one error class, versioned JSON.

Imports are lazy: ``gpu-install detect --json`` is run by scripts and monitoring, and its time is mostly
the interpreter's start and what it imports (bench/detect measures it). Each subcommand's module, argparse
(parser.py holds the grammar), the error classes and the output helpers are imported when they are needed,
not at start.
"""

from __future__ import annotations

import os
import sys

# typing.TYPE_CHECKING without importing typing (mypy reads any TYPE_CHECKING name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace

    Args = argparse.Namespace | SimpleNamespace


def parse_args(argv: list[str]) -> Args:
    """The command line, as the grammar in parser.py reads it.

    ``detect`` and ``detect --json``, what scripts and monitoring run, are read here: importing argparse
    and building every subcommand's parser would be a tenth of that command's time (bench/detect). They
    give the namespace argparse gives; every other command line (help and usage errors included) goes
    through argparse.
    """
    if argv in (["detect"], ["detect", "--json"]):
        from types import SimpleNamespace

        return SimpleNamespace(command="detect", json="--json" in argv, root=None)
    from .parser import build_parser

    return build_parser().parse_args(argv)


def _platform_refusal(args: Args) -> str | None:
    if sys.platform.startswith("linux") or getattr(args, "root", None) or args.command == "cloud-init":
        return None
    found = {"darwin": "macOS", "win32": "Windows", "cygwin": "Windows (Cygwin)"}.get(sys.platform, sys.platform)
    return (
        f"gpu-install runs on Linux hosts and this is {found}: NVIDIA GPU containers need Linux "
        "(on Windows, use WSL2 with the Windows NVIDIA driver and Docker Desktop)."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    want_json = bool(getattr(args, "json", False))
    from .errors import GpuInstallError, codes
    from .signals import Interrupted, install_handlers

    install_handlers()
    try:
        refusal = _platform_refusal(args)
        if refusal:
            raise GpuInstallError(codes.UNSUPPORTED, refusal)
        from importlib import import_module

        command = import_module(f".commands.{args.command.replace('-', '_')}", __package__)
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
