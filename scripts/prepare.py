"""Thin wrapper: `python scripts/prepare.py ARGS` is `lrcn prepare ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
