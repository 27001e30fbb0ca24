"""What a model name means: the forms ``--model`` accepts, told apart from the disk alone.

First match wins:

1. a catalog alias (``chatcli models list --available``), e.g. ``smollm2-135m-instruct``;
2. ``hf:ORG/NAME[@REVISION]``: a Hugging Face repository;
3. an existing local path: a model directory or a ``.gguf`` file;
4. the name of an entry in chatcli's own cache (``chatcli models list``), e.g. ``gguf-1a2b...``;
5. ``ORG/NAME[@REVISION]`` when no such local path exists: a Hugging Face repository id. It
   always means that repository: ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the Hub's
   safetensors, never swapped for the Q4_1 GGUF copy the default alias converts.

Anything else fails in one line: a path-shaped name that does not exist is "no such file or
directory" (:class:`ModelError`, exit 1); a name of no accepted form is :class:`BadModelSpec`
(a usage error, exit 2) listing the forms.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chatcli.errors import ModelError, UsageError, did_you_mean

FORMS = ("a catalog name or a cached model (`chatcli models list [--available]`), a Hugging Face id "
         "ORG/NAME[@REVISION], a model directory or a .gguf file")

# huggingface_hub's validate_repo_id: word characters, '-' and '.', starting and ending with a word
# character, at most 96 each; '--' and '..' are refused.
_PART = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_RE = re.compile(rf"{_PART}/{_PART}")
_PATH_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json")


class BadModelSpec(UsageError, ModelError):
    """A model name of no accepted form (exit 2); still a :class:`ModelError` to callers that catch those."""


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["alias", "hub", "path", "entry"]
    text: str
    repo: str | None = None
    revision: str | None = None
    path: Path | None = None


def parse_model_spec(spec: str, aliases: Collection[str], entries_dir: Path) -> ModelSpec:
    """Which form ``spec`` has (see the module docstring); raises for none."""
    text = spec.strip()
    if not text:
        raise BadModelSpec(f"empty model name: use {FORMS}")
    if text in aliases:
        return ModelSpec("alias", text)
    if text.startswith("hf:"):
        repo, revision = parse_repo_id(text[3:])
        return ModelSpec("hub", text, repo=repo, revision=revision)
    path = Path(text).expanduser()
    if _exists(path):
        return ModelSpec("path", text, path=path)
    if _plain_name(text) and (entries_dir / text).is_dir():
        return ModelSpec("entry", text, path=entries_dir / text)
    if not _path_shaped(text):
        try:
            repo, revision = parse_repo_id(text)
        except BadModelSpec:
            pass
        else:
            return ModelSpec("hub", text, repo=repo, revision=revision)
    if _path_shaped(text) or "/" in text:
        raise ModelError(f"no such file or directory: {text} (a model is {FORMS})")
    raise BadModelSpec(f"unknown model {text!r}{did_you_mean(text, aliases)}: use {FORMS}")


def parse_repo_id(text: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None); :class:`BadModelSpec` if malformed."""
    repo, at, revision = text.strip().partition("@")
    if not _REPO_RE.fullmatch(repo) or "--" in repo or ".." in repo or (at and not revision.strip()) \
            or any(c.isspace() for c in revision):
        raise BadModelSpec(f"invalid Hugging Face id {text!r}: write ORG/NAME or ORG/NAME@REVISION")
    return repo, revision or None


def looks_like_repo_id(text: str) -> bool:
    try:
        parse_repo_id(text)
    except BadModelSpec:
        return False
    return not _path_shaped(text)


def _exists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _plain_name(text: str) -> bool:
    return "/" not in text and os.sep not in text and not text.startswith(".")


def _path_shaped(text: str) -> bool:
    """Written as a path: absolute, home- or dot-relative, OS separators, several '/' or a file suffix."""
    return (text.startswith(("/", "~", ".")) or (os.sep != "/" and os.sep in text) or text.count("/") > 1
            or text.lower().endswith(_PATH_SUFFIXES))
