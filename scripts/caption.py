"""Thin wrapper: `python scripts/caption.py ARGS` is `lrcn caption ARGS`."""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
