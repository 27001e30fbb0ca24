"""``python -m chatcli`` is the same as the ``chatcli`` console script."""

from chatcli.cli import main

main()
