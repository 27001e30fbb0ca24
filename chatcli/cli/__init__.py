"""The ``chatcli`` command line: one module per command group, a thin typer layer over the rest."""
