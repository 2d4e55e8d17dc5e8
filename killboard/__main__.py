"""`python -m killboard`: the same command line as the `killboard` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m killboard"))
