"""Running the CLI in-process in tests: ``chatcli ARGS`` through ``main``, its exit code and output."""

from __future__ import annotations

import pytest

from chatcli.cli.main import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``chatcli *argv`` run in this process."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err
