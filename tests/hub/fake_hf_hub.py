"""A local stand-in for the Hugging Face Hub, for ``HF_ENDPOINT``: what ``snapshot_download`` asks, answered.

It serves repositories made of local files (e.g. a tiny checkpoint from ``tests/tiny.py``)
with the requests and headers huggingface_hub uses (read from its source, 0.2x to 2.x):

- ``GET /api/models/ORG/NAME[/revision/REV]``: the repo info (``sha`` = the commit, ``siblings``);
- ``GET /api/models/ORG/NAME/tree/REV[/PATH]``: the file list (newer versions list the tree);
- ``HEAD``/``GET /ORG/NAME/resolve/REV/FILE``: ``X-Repo-Commit``, ``ETag``, ``Content-Length``;
  a ``*.safetensors`` file answers as an LFS file does, with a redirect to another URL
  (``Location: http://localhost:PORT/lfs/SHA256``: another host name, as the Hub's CDN
  link is, so huggingface_hub reads the metadata off the redirect itself) plus ``X-Linked-Etag``/``X-Linked-Size``, and ``GET`` honours
  ``Range`` (resumed downloads).

A repo can be gated (401 with ``X-Error-Code: GatedRepo`` unless the right token is sent), and
every request is recorded in :attr:`FakeHub.requests` (method, path) so a test can assert that
nothing was asked (``Range`` headers in :attr:`FakeHub.ranges`). ``fail_after`` bytes makes a large file's GET break off once (to test resume).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated_token: str | None = None  # when set, only "Bearer <token>" may read it

    @classmethod
    def from_dir(cls, directory: Path, **kw) -> "FakeRepo":
        return cls({p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}, **kw)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)  # the Range headers of GETs (resumed downloads)
    fail_after: int | None = None  # break the next large GET after this many bytes (once)
    url: str = ""
    cdn_url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.cdn_url = f"http://localhost:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------ answering

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path))
        if h.headers.get("Range"):
            self.ranges.append(h.headers["Range"])
        parts = path.strip("/").split("/")
        if path.startswith("/lfs/"):
            return self._lfs(h, parts[1], head)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            repo = self._repo(h, repo_id)
            if repo is None:
                return
            rest = parts[4:]
            if not rest or rest[0] == "revision":
                return self._json(h, self._info(repo_id, repo))
            if rest[0] == "tree":
                return self._json(h, [self._entry(n, b) for n, b in sorted(repo.files.items())])
            return self._error(h, 404, "EntryNotFound", "no such endpoint")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            repo = self._repo(h, repo_id)
            if repo is None:
                return
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self._error(h, 404, "EntryNotFound", f"{name} does not exist")
            return self._file(h, repo, name, head)
        return self._error(h, 404, "RepoNotFound", "not found")

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str) -> FakeRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 401, "RepoNotFound", "Repository not found")  # the Hub's answer without a token
            return None
        if repo.gated_token and h.headers.get("Authorization") != f"Bearer {repo.gated_token}":
            self._error(h, 401, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return None
        return repo

    def _info(self, repo_id: str, repo: FakeRepo) -> dict:
        return {"_id": "x", "id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                "gated": "auto" if repo.gated_token else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "lastModified": "2024-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": n, "size": len(b)} for n, b in sorted(repo.files.items())]}

    @staticmethod
    def _entry(name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if name.endswith(".safetensors"):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _file(self, h: BaseHTTPRequestHandler, repo: FakeRepo, name: str, head: bool) -> None:
        data = repo.files[name]
        sha = hashlib.sha256(data).hexdigest()
        if name.endswith(".safetensors"):  # as an LFS file: a relative redirect to the content
            h.send_response(302)
            h.send_header("Location", f"{self.cdn_url}/lfs/{sha}")  # another host, as the Hub's CDN link
            h.send_header("X-Repo-Commit", repo.commit)
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(len(data)))
            h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self._bytes(h, data, head, {"X-Repo-Commit": repo.commit, "ETag": f'"{sha}"'})

    def _lfs(self, h: BaseHTTPRequestHandler, sha: str, head: bool) -> None:
        for repo in self.repos.values():
            for data in repo.files.values():
                if hashlib.sha256(data).hexdigest() == sha:
                    return self._bytes(h, data, head, {"ETag": f'"{sha}"'}, breakable=True)
        self._error(h, 404, "EntryNotFound", "no such blob")

    def _bytes(self, h: BaseHTTPRequestHandler, data: bytes, head: bool, headers: dict, breakable: bool = False) -> None:
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        h.send_response(206 if start else 200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        if breakable and self.fail_after is not None and len(body) > self.fail_after:
            cut, self.fail_after = self.fail_after, None
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the transfer breaks off: the client keeps an .incomplete file
            return
        h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, obj) -> None:
        body = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)


@contextmanager
def serving(repos: dict[str, FakeRepo]) -> Iterator[FakeHub]:
    """A started :class:`FakeHub` for the ``with`` block."""
    hub = FakeHub(repos).start()
    try:
        yield hub
    finally:
        hub.stop()
