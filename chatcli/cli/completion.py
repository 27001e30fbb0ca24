"""Shell completion: ``chatcli --install-completion [SHELL]``, ``--show-completion [SHELL]`` and the completers.

The protocol is typer's (bash, zsh, fish, PowerShell): the installed script runs ``chatcli``
with ``_CHATCLI_COMPLETE=complete_<shell>`` and the words typed so far (``COMP_WORDS`` for
bash, ``_TYPER_COMPLETE_ARGS`` for the others); :func:`chatcli.cli.main.main` answers it.

The completers run on every Tab, so each is fast and quiet: no torch, no model, no plugin
import, no network; a problem (no history yet, an unreadable folder) gives no candidates,
never a traceback in the shell. Candidates:

* models — the catalog's names, the converted models in chatcli's cache and the Hugging Face
  cache's repositories;
* adapters — names in ``./adapters``, the demo adapters and the user adapter folder (a
  word that looks like a path is left to the shell's own file completion);
* history ids — the newest saved conversations, with their titles as help;
* presets — the saved presets' names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMPLETE_VAR = "_CHATCLI_COMPLETE"
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
FLAGS = ("--install-completion", "--show-completion")


def _quiet(completer):
    """A completer that yields nothing instead of raising (a traceback would land in the shell's prompt)."""

    def run(incomplete: str):
        try:
            return completer(incomplete)
        except Exception:
            return []

    run.__name__ = completer.__name__
    run.__doc__ = completer.__doc__
    return run


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "~", ".")) or os.sep in text or "/" in text


def models_completer(known: tuple[str, ...]):
    """A completer for ``--model``: the ``known`` names, the catalog's, the models in chatcli's cache
    and the Hugging Face cache's repositories (``ORG/NAME``, from folder names alone).

    A word that looks like a path is the shell's to complete (local directories, .gguf files).
    """

    @_quiet
    def complete_models(incomplete: str) -> list[str]:
        if _looks_like_path(incomplete):
            return []
        from chatcli.hub.catalog import CATALOG
        from chatcli.hub.hf.hub_cache import hub_cache_dir
        from chatcli.paths import models_dir

        names = set(known) | set(CATALOG)
        for folder, pick in ((models_dir(), lambda n: None if n.startswith(".") else n),
                             (hub_cache_dir(), lambda n: n[8:].replace("--", "/", 1) if n.startswith("models--") else None)):
            try:
                names.update(filter(None, (pick(p.name) for p in folder.iterdir() if p.is_dir())))
            except OSError:
                pass
        return sorted(n for n in names if n.startswith(incomplete))

    return complete_models


@_quiet
def complete_adapters(incomplete: str) -> list[str]:
    """Adapter names from the search folders (``NAME`` or ``NAME.safetensors``'s stem)."""
    if _looks_like_path(incomplete):
        return []
    from chatcli.lora.search_dirs import adapter_dirs

    names: set[str] = set()
    for folder in adapter_dirs():
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith((".", "_")):
                continue
            if entry.suffix == ".safetensors" and entry.is_file():
                names.add(entry.stem)
            elif (entry / "adapter_config.json").is_file():
                names.add(entry.name)
    return sorted(n for n in names if n.startswith(incomplete))


@_quiet
def complete_history_ids(incomplete: str) -> list[tuple[str, str]]:
    """The newest saved conversations: (id, title)."""
    from chatcli.chat.store import Store, default_db_path

    if not Path(default_db_path()).is_file():  # no history yet: do not create one from a Tab
        return []
    store = Store.open_for_reading()
    try:
        items = store.list(limit=50)
    finally:
        store.close()
    return [(str(s.id), s.title or "") for s in items if str(s.id).startswith(incomplete)]


@_quiet
def complete_presets(incomplete: str) -> list[str]:
    """The saved presets' names."""
    from chatcli.settings.presets import names

    return [n for n in names() if n.startswith(incomplete)]


def complete_choices(choices: tuple[str, ...]):
    """A completer for an option with fixed choices (``--dtype``, ``--quantize``): the choices, in order."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def choices_metavar(choices: tuple[str, ...]) -> str:
    """How ``--help`` shows a choice: ``[float32|bfloat16|float16]``."""
    return "[" + "|".join(choices) + "]"


def completing() -> bool:
    """Whether this process answers a shell's Tab (typer's protocol)."""
    return bool(os.environ.get(COMPLETE_VAR))


def typed_words() -> list[str]:
    """The words typed after ``chatcli`` that the shell sends with a completion request."""
    from typer._click.shell_completion import split_arg_string

    text = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS") or ""
    try:
        return split_arg_string(text)[1:]
    except ValueError:
        return []


def prepare() -> None:
    """Register typer's completion classes (its script format), as ``add_completion`` would."""
    from typer._completion_classes import completion_init

    completion_init()


def _shell(shell: str | None) -> str:
    """The shell named, else the one this runs in (shellingham, then $SHELL)."""
    from chatcli.errors import UsageError

    if shell is None:
        try:
            import shellingham

            shell = shellingham.detect_shell()[0]
        except Exception:
            shell = Path(os.environ.get("SHELL", "")).name or None
    if shell not in SHELLS:
        said = f"{shell!r} is not a shell chatcli completes" if shell else "cannot tell which shell this is"
        raise UsageError(f"{said}: name one, e.g. `chatcli --install-completion bash` ({', '.join(SHELLS)})")
    return shell


def run_flag(flag: str, shell: str | None) -> None:
    """``--show-completion`` prints the script; ``--install-completion`` writes it where the shell reads it."""
    from typer.completion import get_completion_script, install

    from chatcli.errors import ChatcliError

    shell = _shell(shell)
    prepare()
    if flag == "--show-completion":
        sys.stdout.write(get_completion_script(prog_name="chatcli", complete_var=COMPLETE_VAR, shell=shell) + "\n")
        return
    try:
        _, path = install(shell=shell, prog_name="chatcli", complete_var=COMPLETE_VAR)
    except OSError as e:
        raise ChatcliError(f"cannot install {shell} completion ({e.strerror or e}): "
                           f"print the script with `chatcli --show-completion {shell}` and add it yourself") from None
    sys.stderr.write(f"chatcli: {shell} completion installed in {path}; open a new shell to use it\n")
