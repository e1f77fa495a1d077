"""gpu-install cloud-init: user-data that turns a new cloud VM into a verified GPU host (docs/cloud-init.md)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .. import settings
from ..cloud_init import PROVIDERS, InstallSource, render
from ..errors import GpuInstallError, codes
from ..output import emit_json


def run(args: argparse.Namespace) -> int:
    if args.provider not in PROVIDERS:
        raise GpuInstallError(codes.USAGE, f"unknown provider {args.provider!r}: use one of {', '.join(PROVIDERS)}.")
    # No -c: no settings (the roles' defaults), never this machine's own /etc/gpu-install/config.yml.
    values = settings.load(args.config)[0] if args.config else {}
    source = InstallSource(
        package_version=args.package_version,
        wheel_url=args.wheel_url,
        index_url=args.index_url,
        find_links=args.find_links,
    )
    rendered = render(args.provider, values, source)
    data = rendered.text.encode()
    if args.output:
        _write(Path(args.output), data)
    elif not args.json:
        sys.stdout.write(rendered.text)
        sys.stdout.flush()
    if args.json:
        result = {
            "provider": rendered.provider,
            "output": args.output,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "requirement": source.requirement,
            "notes": list(rendered.notes),
        }
        if not args.output:
            result["user_data"] = rendered.text
        emit_json(result)
    else:
        for note in rendered.notes:
            sys.stderr.write(f"gpu-install: note: {note}\n")
    return 0


def _write(path: Path, data: bytes) -> None:
    """Atomically: a temp file beside it, fsync, rename."""
    try:
        directory = path.resolve().parent
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path.resolve())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise GpuInstallError(codes.HOST_ERROR, f"cannot write {path}: {exc.strerror or exc}.") from None
