"""Thin wrapper: `python scripts/evaluate.py ARGS` is `lrcn evaluate ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
