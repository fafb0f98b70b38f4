"""Thin wrapper: `python scripts/score.py ARGS` is `lrcn score ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
