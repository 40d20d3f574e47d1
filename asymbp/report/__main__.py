"""`python -m asymbp.report`: the same as `asymbp-aggregate`."""

import sys

from asymbp.report.cli import main

sys.exit(main())
