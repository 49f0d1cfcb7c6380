"""``python -m fraudgen`` = the ``fraudgen`` command (handy where the console script is not on PATH)."""

from fraudgen.cli import main

if __name__ == "__main__":
    main()
