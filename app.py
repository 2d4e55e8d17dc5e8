"""Entry point: `python app.py --help`."""

from killboard.cli import main

if __name__ == "__main__":
    main()
