"""Entry point: `python app.py --help`."""

import sys

from killboard.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python app.py"))
