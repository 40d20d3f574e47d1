"""Write docs/RESULTS.md from an aggregated report: the paper table, figures and a verdict on each
of the paper's four claims (asymbp.report.claims computes them from the numbers).

    python scripts/write_results.py REPORT_DIR [--out docs] [--command "how the report was made"]
"""

import sys

from asymbp.report.claims import main

if __name__ == "__main__":
    sys.exit(main())
