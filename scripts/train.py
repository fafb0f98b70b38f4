"""Thin wrapper: `python scripts/train.py ARGS` is `lrcn train ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
