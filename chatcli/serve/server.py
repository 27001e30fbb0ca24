"""Running the app with uvicorn: in the foreground (``chatcli serve``) or on a background thread.

:func:`build` loads nothing itself: it wraps an already loaded engine in the app, with
the adapters it was started with (``--lora``) switched off and addressable by name.
:class:`BackgroundServer` binds a free loopback port itself and serves from a thread
(tests, embedding); :func:`serve_forever` is the CLI's blocking call.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Sequence

from starlette.applications import Starlette

from chatcli.serve.adapters import ServedAdapters, default_adapter_dirs
from chatcli.serve.app import make_app

LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build(engine, *, model_id: str | Sequence[str] | None = None, adapter_dirs: Sequence[Path] | None = None,
          api_key: str | None = None) -> Starlette:  # fmt: skip
    """The app for a loaded engine; its names are ``model_id`` (one, or several as vLLM's
    ``--served-model-name a b``; default: the name it was loaded by)."""
    dirs = default_adapter_dirs() if adapter_dirs is None else list(adapter_dirs)
    adapters = ServedAdapters(engine.adapters, dirs, model_id or engine.identity.name)
    adapters.switch_all_off()
    return make_app(engine, adapters, api_key)


def _config(app: Starlette, host: str, port: int, log_level: str):
    import uvicorn

    # One process, one engine thread: uvicorn's workers would each load the model.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, lifespan="off",
                          timeout_graceful_shutdown=2)  # fmt: skip


def serve_forever(app: Starlette, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.Server(_config(app, host, port, log_level)).run()


class BackgroundServer:
    """``with BackgroundServer(app) as s:`` serves ``app`` at ``s.base_url`` on a free loopback port."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self.server = uvicorn.Server(_config(app, host, self.port, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
