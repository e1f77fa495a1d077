"""The command line's grammar: argparse, imported only when a command line needs it (see cli.parse_args)."""

from __future__ import annotations

import argparse

SUBCOMMANDS = {
    "detect": "Show what this host is: OS, Docker flavour, GPUs, driver, Secure Boot (changes nothing).",
    "plan": "Show every change apply would make, and change nothing.",
    "apply": "Install and configure the driver, Docker and the NVIDIA container runtime, then verify.",
    "remove": "Take back what gpu-install did on this host (the driver too with --driver), showing the plan first.",
    "verify": "Prove that a container sees the GPU.",
    "doctor": "Explain what stands between this host and GPU containers, with fixes.",
    "cloud-init": "Render cloud-init user-data that runs gpu-install on a new cloud VM.",
    "cdi": "Write the CDI spec of this host's NVIDIA GPUs and their /dev/char links (CDI mode; runs at boot).",
    "k8s": "Print the Kubernetes objects a cluster needs for gpu-install's GPU nodes (the nvidia RuntimeClass).",
}

EXIT_HELP = """exit codes:
  0 ok · 1 internal error · 2 usage · 3 unsupported platform or setting · 4 invalid input
  5 package source error · 6 busy · 7 an engine failed to come back (rolled back)
  8 verification failed · 9 reboot required to finish · 10 host error · 130/143 interrupted
"""


class _LazyWidth(argparse.HelpFormatter):
    """argparse's formatter, sized to the terminal only when it formats text.

    argparse makes a formatter for every add_argument (to check the metavar), and the stock one asks the
    terminal's width at once, which imports shutil (and with it zlib, bz2 and lzma): a few milliseconds
    of every run spent for help text that is rarely printed. The width is the one argparse would use.
    """

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        self._lazy_position = max_help_position if width is None else None
        super().__init__(prog, indent_increment, max_help_position, 80 if width is None else width)

    def format_help(self) -> str:
        if self._lazy_position is not None:
            import shutil

            self._width = shutil.get_terminal_size().columns - 2
            self._max_help_position = min(self._lazy_position, max(self._width - 20, self._indent_increment * 2))
            self._lazy_position = None
        return super().format_help()


class _LazyWidthRaw(_LazyWidth, argparse.RawDescriptionHelpFormatter):
    pass


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
        formatter_class=_LazyWidthRaw,
    )
    parser.add_argument("--version", action="version", version=f"gpu-install {__version__}")
    # prog given: argparse would format the usage (no positionals before COMMAND: just the program's name)
    # to compute it, and formatting asks the terminal's width.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog=parser.prog)
    sub.required = True
    common = argparse.ArgumentParser(add_help=False, formatter_class=_LazyWidth)
    common.add_argument("--json", action="store_true", help="print one machine-readable JSON result")
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, formatter_class=_LazyWidth)
        if name == "detect":
            p.add_argument("--root", metavar="DIR", help="read every file under DIR instead of this host")
        if name in ("plan", "apply", "verify", "doctor", "cloud-init", "remove"):
            _settings_args(p)
        if name in ("apply", "remove"):
            p.add_argument("-y", "--yes", action="store_true", help="do not ask before changing the host")
        if name == "remove":
            p.add_argument(
                "--driver",
                action="store_true",
                help="also remove the NVIDIA driver gpu-install installed, inside the drain commands (then reboot)",
            )
            p.add_argument("--check", action="store_true", help="print what remove would take back; change nothing")
        if name in ("plan", "apply"):
            p.add_argument(
                "--full",
                action="store_true",
                help="run every check even when the host is as the last successful apply left it",
            )
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
        if name == "k8s":
            objects = p.add_subparsers(dest="k8s_command", metavar="OBJECT", prog=f"{parser.prog} k8s")
            objects.required = True
            rc = objects.add_parser(
                "runtimeclass",
                help="the RuntimeClass (node.k8s.io/v1) whose handler is containerd's nvidia runtime",
                description="Print the RuntimeClass (node.k8s.io/v1) whose handler is the nvidia runtime gpu-install "
                "adds to containerd; pipe it to kubectl apply -f -.",
                formatter_class=_LazyWidth,
            )
            # SUPPRESS: given before or after OBJECT, --json is kept (a subparser's default would reset it).
            rc.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            rc.add_argument("--name", metavar="NAME", help="the RuntimeClass's name (default: nvidia, the handler)")
            rc.add_argument(
                "--node-selector",
                metavar="KEY=VALUE",
                action="append",
                help="schedule its pods only on nodes with this label (repeatable), e.g. nvidia.com/gpu.present=true",
            )
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
