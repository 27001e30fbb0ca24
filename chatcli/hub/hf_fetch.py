"""Download a model from the Hugging Face Hub (``hf:ORG/NAME[@REVISION]``) into the cache.

Only what chatcli loads is fetched (``*.json``, ``*.safetensors``, ``tokenizer*``,
``*.jinja``); pickle weights never are. The snapshot lands in a temporary sibling
and is renamed into place with a manifest (sizes and sha256 of the weights), so
it is verified like a converted model and reused offline without asking the Hub.

Failing fast: with ``HF_HUB_OFFLINE`` set nothing is contacted; otherwise the
Hub's host is probed with a 3-second TCP connect first (skipped behind a proxy),
and downloads run with short timeouts, so an unreachable Hub gives a one-line
:class:`ModelError` within seconds instead of a long hang.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from chatcli.hub.manifest import weights_record, write_manifest
from chatcli.paths import replace_dir
from chatcli.errors import ModelError

Progress = Callable[[str, int, "int | None"], None]

ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]
_REPO_RE = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")
PROBE_TIMEOUT_S = 3.0


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo_id, revision); UsageError-style ModelError if malformed."""
    repo, _, revision = spec.partition("@")
    if not _REPO_RE.fullmatch(repo):
        raise ModelError(f"invalid Hub model {spec!r}: write hf:ORG/NAME or hf:ORG/NAME@REVISION")
    return repo, revision or None


def cache_name(repo: str, revision: str | None) -> str:
    return "hf--" + repo.replace("/", "--") + (f"@{revision}" if revision else "")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def probe_hub(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the Hub's host accepts a TCP connection, else why not (one phrase)."""
    from huggingface_hub import constants

    url = urlparse(endpoint or constants.ENDPOINT)
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connect proves nothing; rely on the download timeouts
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port} unreachable: {e.strerror or e.__class__.__name__}"


def fetch(spec: str, dest: Path, progress: Progress | None = None) -> Path:
    """Download ``spec`` (without the ``hf:`` prefix) into ``dest``; return ``dest``."""
    repo, revision = parse_spec(spec)
    if offline():
        raise ModelError(f"hf:{spec} is not in the cache and HF_HUB_OFFLINE is set: unset it, or use a local directory")
    problem = probe_hub()
    if problem:
        raise ModelError(f"cannot reach the Hugging Face Hub to download hf:{spec} ({problem}); "
                         "check the network, or use a local model directory or .gguf file")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    constants.HF_HUB_DOWNLOAD_TIMEOUT = min(constants.HF_HUB_DOWNLOAD_TIMEOUT, 20)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    stage = f"downloading hf:{spec}"
    try:
        if progress:
            progress(stage, 0, None)
        snapshot_download(repo, revision=revision, local_dir=tmp, allow_patterns=ALLOW_PATTERNS, etag_timeout=5)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping, not model files
        weights = sorted(tmp.glob("*.safetensors"))
        if not (tmp / "config.json").is_file():
            raise ModelError(f"hf:{spec} has no config.json: it is not a transformers model repository")
        if not weights:
            raise ModelError(f"hf:{spec} has no .safetensors weights (chatcli does not load pickle .bin files); "
                             "pick a repository that ships safetensors")
        if progress:
            progress(stage, 1, 1)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file() and p.suffix != ".safetensors"}
        write_manifest(tmp, {
            "converter": "chatcli.hf_fetch",
            "converter_version": "1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"kind": "hf", "repo": repo, "revision": revision},
            "weights": [weights_record(p) for p in weights],
            "files": files,
        })
        replace_dir(tmp, dest)
    except ModelError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (RepositoryNotFoundError, GatedRepoError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        gated = isinstance(e, GatedRepoError)
        raise ModelError(f"hf:{spec} " + ("is gated: accept its license on the Hub and log in (hf auth login)"
                                          if gated else "was not found on the Hub (check the name, or log in if private)"))
    except RevisionNotFoundError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"hf:{spec}: revision {revision!r} not found on the Hub") from None
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise ModelError(f"downloading hf:{spec} failed ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "check the network and retry") from None
    return dest
