"""Fill the feature store: ``python scripts/extract_features.py -c CONFIG [--split S] [key=value ...]``.

The same as ``lrcn extract-features``; see ``lrcn.extract``.
"""

import sys

from lrcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract-features", *sys.argv[1:]]))
