"""``python -m tutor.bench``: see :mod:`tutor.bench.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
