"""Open only regular files: a FIFO, a device, a socket or a directory is refused, never waited on.

Opening a FIFO for reading blocks until some other process opens it for writing, and
reading a character device (``/dev/zero``) never ends; a file chatcli is pointed at
(weights, an adapter, a config, a data file) must therefore be checked *on the open
descriptor*: :func:`open_regular` opens with ``O_NONBLOCK`` (a FIFO opens at once
instead of blocking), ``fstat``\\ s the descriptor and refuses anything that is not a
regular file with one line (:class:`NotRegularFile`, a :class:`ChatcliError`). Checking
the descriptor, not the path, leaves no window for the path to be swapped in between.

:func:`check_regular` is for paths handed to a library that opens the file itself
(safetensors memory-maps, the GGUF reader): it checks the same way just before. Other
``OSError``\\ s (missing file, no permission) propagate unchanged for the caller to word.
"""

from __future__ import annotations

import io
import os
import stat
from typing import BinaryIO

from chatcli.errors import ChatcliError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class NotRegularFile(ChatcliError):
    """A path that names a FIFO, a device, a socket or a directory where a file is read."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """``path`` opened for binary reading; :class:`NotRegularFile` unless it is a regular file.

    ``what`` names the file in the message ("adapter weights", "config", ...).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)  # Windows: no newline translation
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(
                f"{what} {path} is {_kind(mode)}, not a regular file: chatcli reads only regular files"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # no effect on a regular file's reads; keeps later users unsurprised
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, what: str = "file") -> int:
    """Refuse a non-regular file as :func:`open_regular` does; return its size in bytes."""
    with open_regular(path, what) as f:
        return os.fstat(f.fileno()).st_size


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    with open_regular(path, what) as f:
        return f.read()


def read_text(path: str | os.PathLike, what: str = "file", encoding: str = "utf-8", errors: str = "strict") -> str:
    """The file's text; a decoding error is ``UnicodeDecodeError`` (a ``ValueError``), as ``Path.read_text``."""
    with open_regular(path, what) as f:
        return io.TextIOWrapper(f, encoding=encoding, errors=errors).read()
