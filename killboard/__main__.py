"""`python -m killboard` and the `killboard` console script: the command line (killboard/cli.py).

cli is imported when the command runs, not when this module is: the worker process
(ingest/offload.py) is spawned, and multiprocessing runs the parent's main module again in it
as `__mp_main__`, so an import up here would load the whole server in every worker (0.41 s
against 0.11 s for what the worker needs)."""

import sys


def run(prog: str = "killboard") -> int:
    from .cli import main

    return main(prog=prog)


if __name__ == "__main__":
    sys.exit(run(prog="python -m killboard"))
