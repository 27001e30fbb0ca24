"""Download a model repository from the Hugging Face Hub into the standard cache.

:func:`download` calls ``huggingface_hub.snapshot_download`` with the cache folder and the
endpoint read from the environment at that moment (``HF_HUB_CACHE``/``HF_HOME``,
``HF_ENDPOINT``), so the files land where transformers, vLLM and mlx-lm look and nothing is
copied into chatcli's own folders. Resuming is huggingface_hub's: a finished file is never
fetched again, a transfer that breaks off is retried (older versions continue an ``.incomplete``
part from where it stopped, newer ones with ``hf_xet`` reuse the chunks they already have). Only what chatcli loads is fetched: the top-level ``*.json``,
``*.safetensors``, ``tokenizer*`` and ``*.jinja`` files (no pickle weights, no ONNX or GGUF
variants, nothing in sub-folders). Progress goes through chatcli's progress function.

Failing fast: with ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set nothing is contacted;
otherwise the endpoint's host is first probed with a 3-second TCP connect (skipped behind a
proxy), so an unreachable Hub gives a one-line :class:`ModelError` within seconds instead of
huggingface_hub's retries. A gated or private repository (401/403) is one line saying how to
log in; an unknown repo or revision, a repository without safetensors weights or a server
that is not a Hub each get their own line.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from chatcli.errors import ModelError
from chatcli.hub.hf.hub_cache import hub_cache_dir, repo_folder, snapshot_problem

Progress = Callable[[str, int, "int | None"], None]

DEFAULT_ENDPOINT = "https://huggingface.co"
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]
IGNORE_PATTERNS = ["*/*"]  # top-level files only: no onnx/, original/, runs/ ...
PROBE_TIMEOUT_S = 3.0
ETAG_TIMEOUT_S = 10.0
_TRUE = ("1", "true", "yes", "on")


def endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """True when the environment forbids contacting the Hub (huggingface_hub's and transformers' switches)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def probe_hub(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the Hub's host accepts a TCP connection, else why not (one phrase)."""
    parsed = urlparse(url or endpoint())
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                        "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connect proves nothing; rely on the download timeouts
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port} unreachable: {e.strerror or e.__class__.__name__}"


def download(repo: str, revision: str | None = None, progress: Progress | None = None, *,
             fallback: str = "", force: bool = False) -> Path:
    """Fetch ``repo`` at ``revision`` into the Hugging Face cache; return its snapshot folder.

    Files already there are kept (``force`` fetches them again). ``fallback`` ends the message
    when the Hub cannot be reached (e.g. "the default model (-m smollm2-135m-instruct)").
    """
    label = repo + (f"@{revision}" if revision else "")
    cache = hub_cache_dir()
    if offline():
        raise ModelError(f"{label} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set: "
                         "unset it to download, or use a local model directory")
    url = endpoint()
    problem = probe_hub(url)
    if problem:
        raise ModelError(unreachable_message(label, cache, problem, fallback))
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    from chatcli.hub.hf.download_bars import bar_class

    stage = f"downloading {label}"
    try:
        # The file list with sizes first, so the bar's total is the whole download from the start
        # (huggingface_hub's own total grows file by file as each transfer begins).
        info = HfApi(endpoint=url).model_info(repo, revision=revision, files_metadata=True, timeout=ETAG_TIMEOUT_S)
        path = Path(snapshot_download(
            repo, revision=revision, cache_dir=str(cache), endpoint=url,
            allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS, etag_timeout=ETAG_TIMEOUT_S,
            force_download=force,
            tqdm_class=bar_class(progress or _silent, stage, total=_bytes_to_fetch(info, repo, force)),
        ))
    except GatedRepoError:
        raise ModelError(gated_message(label, f"{url}/{repo}")) from None
    except RepositoryNotFoundError:
        raise ModelError(f"{label} was not found on the Hub at {url}: check the name (ORG/NAME), "
                         "or for a private repository log in (`huggingface-cli login`) or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise ModelError(f"{repo} has no revision {revision!r} on the Hub: use a branch, tag or commit it has") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelError(gated_message(label, f"{url}/{repo}")) from None
        raise ModelError(f"downloading {label} failed: the Hub answered {status or 'an error'} "
                         f"({_first_line(e)}); retry later") from None
    except LocalEntryNotFoundError as e:  # the connection broke, or the endpoint is not a Hub
        raise ModelError(f"downloading {label} failed ({_first_line(e)}); check the network and HF_ENDPOINT, "
                         "and retry: finished files are kept") from None
    except OSError as e:
        raise ModelError(f"downloading {label} failed ({e.__class__.__name__}: {_first_line(e)}); "
                         "retry: finished files are kept") from None
    problem = snapshot_problem(path)
    if problem:
        raise ModelError(f"{label} cannot be loaded by chatcli ({problem}): it needs config.json, tokenizer.json "
                         "and .safetensors weights (pickle .bin files are refused)")
    return path


def _bytes_to_fetch(info, repo: str, force: bool) -> int | None:
    """Bytes of the files this download will fetch (those matching the patterns, not yet in the
    snapshot unless ``force``); None when the Hub did not give every size."""
    from huggingface_hub.utils import filter_repo_objects

    sizes = {s.rfilename: s.size for s in info.siblings or []}
    names = list(filter_repo_objects(sizes, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))
    snapshot = repo_folder(repo) / "snapshots" / str(info.sha)
    wanted = [n for n in names if force or not (snapshot / n).is_file()]
    if any(sizes[n] is None for n in wanted):
        return None
    return sum(sizes[n] for n in wanted) or None


def unreachable_message(label: str, cache: Path, problem: str, fallback: str = "") -> str:
    """One line: the model is not cached and the Hub cannot be reached; how to get it anyway."""
    ways = "set HF_ENDPOINT to a mirror you can reach, or give a local model directory"
    if fallback:
        ways += f", or use {fallback}"
    return f"{label} is not in the Hugging Face cache ({cache}) and the Hub cannot be reached ({problem}): {ways}"


def gated_message(label: str, page: str) -> str:
    return (f"{label} is gated: accept its licence on {page} and log in (`huggingface-cli login`, "
            "or set HF_TOKEN), then retry")


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split("\n")[0].split())
    return (text[:200] + "...") if len(text) > 200 else text or error.__class__.__name__


def _silent(stage: str, done: int, total: int | None) -> None:
    """Stands in for a missing progress function, so huggingface_hub draws no bars of its own."""
