"""Rewrite the corpus's golden specs with today's generator (after a deliberate change of behaviour).

    .venv/bin/python tests/unit/cdi_corpus/regenerate.py

Writes ``h100/spec.json`` (the default capabilities, found through the H100's driver directories) and
``spec-all.json`` (every capability) of each layout fixture, exactly as ``tests/unit/test_cdi.py``
regenerates them; the tests then fail on any later divergence. Review the diff before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent
sys.path.insert(0, str(CORPUS))
sys.path.insert(0, str(CORPUS.parent))

import tree  # noqa: E402
from conftest import module_utils  # noqa: E402

H100_DIRS = ["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"]
LAYOUTS = ("debian12", "ubuntu2404-cuda", "rhel9")


def main() -> None:
    cdi = module_utils("cdi")
    with tempfile.TemporaryDirectory() as tmp:
        root = str(tree.build(CORPUS / "h100", Path(tmp) / "h100"))
        spec, _ = cdi.generate(root=root, search_paths=H100_DIRS)
        (CORPUS / "h100" / "spec.json").write_bytes(cdi.dumps(spec))
        for layout in LAYOUTS:
            root = str(tree.build(CORPUS / layout, Path(tmp) / layout))
            spec, _ = cdi.generate(root=root, capabilities=["all"])
            (CORPUS / layout / "spec-all.json").write_bytes(cdi.dumps(spec))


if __name__ == "__main__":
    main()
