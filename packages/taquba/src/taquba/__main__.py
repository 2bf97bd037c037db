"""``python -m taquba``: the same as the ``taquba`` command."""

from taquba._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
