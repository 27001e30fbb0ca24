"""``python -m chatcli`` is the same as the ``chatcli`` console script."""

from chatcli.cli.main import main

main()
