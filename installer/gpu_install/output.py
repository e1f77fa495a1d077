"""What users see: human text (rich, imported lazily) or one versioned JSON result."""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing for the type checker only: every subcommand imports this module at start
if TYPE_CHECKING:
    from typing import Any

SCHEMA = 1


def emit_json(result: dict[str, Any]) -> None:
    payload = {"schema": SCHEMA}
    payload.update(result)
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit_error(err: Any, want_json: bool) -> None:
    record = err.record()
    if want_json:
        emit_json({"error": record})
        return
    line = f"gpu-install: error: {record['reason']}"
    if record.get("log"):
        line += f" (log: {record['log']})"
    sys.stderr.write(line + "\n")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)
