"""Prints the paper-vs-ours table of README.md: ``python studies/usm-lite/make_table.py``."""

import sys

from planner.cost.usm_table import main

if __name__ == "__main__":
    sys.exit(main())
