"""Thin wrapper: `python scripts/classify.py ARGS` is `lrcn classify ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
