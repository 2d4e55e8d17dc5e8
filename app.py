"""Entry point: `python app.py --help`."""

import sys

from killboard.__main__ import run  # light: the command line is imported when it runs

if __name__ == "__main__":
    sys.exit(run(prog="python app.py"))
