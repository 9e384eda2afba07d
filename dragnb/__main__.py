"""``python -m dragnb``: the command line (see ``dragnb/cli.py``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
