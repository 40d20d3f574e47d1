"""Regenerate docs/examples/: the table and figures docs/aggregation.md shows.

They come from asymbp.report.example's generated sweep (the test suite's fixture too): run
directories with made-up metrics, chosen to exercise every case (several seeds, diverged,
incomplete and broken runs, a missing condition). They are not experimental results.

    .venv/bin/python scripts/make_aggregate_example.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from asymbp.report.cli import TABLE_MD
from asymbp.report.cli import main as aggregate
from asymbp.report.example import write_sweep

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
FILES = (TABLE_MD, "fig_stabilization.png", "fig_curves.png")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        sweep = write_sweep(Path(tmp))
        out = Path(tmp) / "aggregate"
        code = aggregate([str(sweep), "--out", str(out)])
        if code:
            return code
        EXAMPLES.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(out / name, EXAMPLES / name)
            print(f"wrote {(EXAMPLES / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
