"""gpu-install cloud-init: user-data for a new cloud VM."""

from __future__ import annotations

import argparse

from ..errors import GpuInstallError, codes

PROVIDERS = ("aws", "azure", "gcp")


def run(args: argparse.Namespace) -> int:
    if args.provider not in PROVIDERS:
        raise GpuInstallError(codes.USAGE, f"unknown provider {args.provider!r}: use one of {', '.join(PROVIDERS)}.")
    raise GpuInstallError(
        codes.UNSUPPORTED,
        "cloud-init user-data rendering is not in this release yet: install gpu-install in your image and run "
        "'gpu-install apply --yes' from your own user-data.",
    )
