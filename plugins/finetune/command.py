"""``/finetune`` in the chat: start a background run, show its status, stop it, hot-load the result.

Forms::

    /finetune sft|dpo|reward [FILE | --from-history [IDS] | --from-rankings] [--load] [any `chatcli finetune` flag ...]
    /finetune rl PROMPTS --reward GRADER [--load] [any `chatcli finetune rl` flag ...]
    /finetune status | stop | load | plot [DIR] | groups [DIR]

Without FILE, ``sft`` trains on the current conversation (``--from-history``: on
saved conversations; ``--from-rankings``: on the best ranked answers) and ``dpo`` /
``reward`` on the saved rankings (what ``chatcli rank export --pairs all`` would write). ``--load`` loads
the adapter as soon as the run finishes; otherwise ``/finetune load`` does. One run
at a time per chat session. The settings the run chose from the data, and when it
finishes its "what changed" report, are said in the chat as they arrive (and
``/finetune status`` repeats the report). ``/finetune plot`` (F8 while a run is
going) opens the live curves of the run, or of the run folder DIR
(:mod:`chatcli_finetune.live_plot`). ``/finetune groups`` shows the last step of an RL run:
each group's answers with their rewards and advantages (:mod:`chatcli_finetune.rl.groups`).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from chatcli.chat.frontend import on_ui_thread
from chatcli.errors import UsageError
from chatcli_finetune.background import BackgroundRun

_RUN: dict[str, BackgroundRun | None] = {"current": None}
KINDS = ("sft", "dpo", "reward", "rl")


def current_run() -> BackgroundRun | None:
    return _RUN["current"]


def _data_dir() -> Path:
    from chatcli.paths import data_dir

    return data_dir() / "finetune"


def _conversation_data(ctx, path: Path) -> Path:
    messages = ctx.core.conv.messages()
    if not any(m["role"] == "assistant" for m in messages):
        raise UsageError("this conversation has no answer to learn from: chat first, or give a data FILE")
    path.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
    return path


def _load(ctx, run: BackgroundRun) -> str:
    from chatcli.lora.manager import adapter_name

    engine = ctx.core.engine
    if engine is None:
        raise UsageError("no model is loaded")
    # The engine's manager: loads wait for no answer, and the KV cache follows the new weights.
    manager = engine.adapters
    name = adapter_name(run.out.name)
    if name in manager:
        manager.unload(name)
    if run.kind == "reward":
        from chatcli_finetune.reward import load_reward

        info = load_reward(engine, run.out, name=name)
        text = f"loaded reward model {info.name} ({info.params:,} parameters), off for answers: /score, /rank use it"
    else:
        info = manager.load(run.out, name=name)
        text = f"loaded adapter {info.name} ({info.params:,} parameters) from {run.out}"
    run.loaded = True
    ctx.adapters_changed()
    ctx.core.announce("adapter_loaded", name=info.name, info=info)  # as /load-lora does: plugins, the tour
    return text


def status_item() -> str | tuple[str, str] | None:
    """The status bar's view of this session's run: progress while it runs; when it has
    finished and is not loaded yet, the one-key offer to load it; a failure or a stop
    for a minute."""
    run = current_run()
    if run is None or run.proc is None:
        return None
    if run.running:
        return run.status_line(), "/finetune plot"  # F8: the live curves
    if run.finished:
        if run.loaded:
            return None
        if getattr(run, "auto_load", False):  # --load: no offer, it is being loaded
            return f"finetune {run.kind}: done, loading {run.out.name}"
        # Short (the bar is one line): the folder's name, not its path.
        return f"finetune {run.kind}: done, loss {run.summary.get('final_loss') or 0:.3f} -> {run.out.name}", "/finetune load"
    if run.ended_at is not None and time.monotonic() - run.ended_at < 60:
        return run.status_line()
    return None


def plot_screen(ctx, folder: str | None = None):
    """The live curves of run folder ``folder``, or of this session's run (also the register_tui factory)."""
    if not ctx.frontend.screens:
        raise UsageError("/finetune plot needs the full-screen chat; elsewhere: chatcli finetune report DIR")
    from chatcli_finetune.live_plot import LivePlotScreen

    if folder is not None:
        out = Path(folder).expanduser()
        if not out.is_dir():
            raise UsageError(f"no fine-tuning run folder at {out}")
        return LivePlotScreen(out)
    run = current_run()
    if run is None or run.proc is None:
        raise UsageError("no fine-tuning run in this session: /finetune plot DIR shows a run folder's curves")
    return LivePlotScreen(run.out, status=run.status_line, title=f"Fine-tuning ({run.kind}) curves: {run.out}")


def finetune_command(ctx, args: str) -> None:
    words = shlex.split(args or "")
    if not words or words[0] == "status":
        run = current_run()
        if run is None:
            ctx.say("no fine-tuning run in this session: /finetune sft|dpo|reward [FILE]", "result")
            return
        ctx.say("\n".join([run.status_line(), *run.what_changed.get("lines", [])]), "result")
        return
    action = words[0]
    if action == "stop":
        run = current_run()
        if run is None or not run.running:
            raise UsageError("no fine-tuning run is running")
        run.stop()
        ctx.say("stopping after the current step (a checkpoint is kept; resume with the same command and --resume)")
        return
    if action == "load":
        run = current_run()
        if run is None or not run.finished:
            raise UsageError("no finished fine-tuning run to load: see /finetune status")
        ctx.say(_load(ctx, run), "result")
        return
    if action == "plot":
        ctx.push_screen(plot_screen(ctx, " ".join(words[1:]) or None))
        return
    if action == "groups":
        from chatcli_finetune.rl.groups import groups_view

        ctx.say(groups_view(" ".join(words[1:]) or None, current_run()), "result")
        return
    if action not in KINDS:
        raise UsageError(f"unknown /finetune {action!r}: use sft, dpo, reward, rl, status, stop, load, plot or groups")
    if current_run() is not None and current_run().running:
        raise UsageError("a fine-tuning run is already going: /finetune status, or /finetune stop")
    rest = words[1:]
    auto_load = "--load" in rest
    rest = [w for w in rest if w != "--load"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = _data_dir() / f"{action}-{stamp}"
    if "--out" in rest:
        i = rest.index("--out")
        out = Path(rest[i + 1]).expanduser()
        del rest[i : i + 2]
    from_rankings = "--from-rankings" in rest
    rest = [w for w in rest if w != "--from-rankings"]
    from_history = None
    if "--from-history" in rest:
        i = rest.index("--from-history")
        # An optional value: ids (3,5) or "all"; anything else is the next flag or a FILE.
        has_ids = i + 1 < len(rest) and (rest[i + 1] == "all" or rest[i + 1].replace(",", "").isdigit())
        from_history = rest[i + 1] if has_ids else "all"
        del rest[i : i + (2 if has_ids else 1)]
    if rest and not rest[0].startswith("-"):
        if from_history is not None or from_rankings:
            raise UsageError("give either a data FILE or --from-history / --from-rankings, not both")
        data = Path(rest.pop(0)).expanduser()
        if not data.is_file():
            raise UsageError(f"data file not found: {data}")
    elif action == "rl":
        raise UsageError("/finetune rl needs a PROMPTS file (JSONL, as for 'chatcli rank generate') and --reward GRADER")
    elif action == "sft" and from_history is None and not from_rankings:
        _data_dir().mkdir(parents=True, exist_ok=True)
        data = _conversation_data(ctx, _data_dir() / f"{action}-{stamp}.jsonl")
    else:
        from chatcli_finetune.sources import build_data

        # dpo and reward learn from the saved rankings unless told otherwise.
        data = build_data(action, from_history=from_history, from_rankings=from_rankings or from_history is None,
                          warn=lambda m: ctx.say(m, "warning"))  # fmt: skip
    if action == "rl" and not any(w in ("--reward", "-r") or w.startswith("--reward=") for w in rest):
        raise UsageError("/finetune rl needs --reward: a reward model folder, rule:max-words=N, rule:contains=WORD, "
                         "rule:regex=PATTERN or a plugin grader's name")  # fmt: skip
    model = ctx.core.engine.identity.name if ctx.core.engine is not None else None
    pending: dict[str, bool] = {"load": auto_load}

    def on_end(run: BackgroundRun) -> None:
        # Runs on the watcher thread: the loading and the note happen on the UI thread when the
        # front end has one (ctx.frontend.ui_thread); widgets are not thread-safe.
        if not (pending["load"] and run.finished):
            return

        def load_now() -> None:
            try:
                ctx.say(_load(ctx, run), "result")
            except Exception as e:  # e.g. an answer is streaming: reported, never raised into a thread
                run.auto_load = False  # the status bar offers the one-key load instead
                ctx.say(f"could not load the new adapter ({e}); /finetune load tries again", "error")

        try:
            on_ui_thread(ctx, load_now)
        except RuntimeError:  # the app has closed meanwhile
            pass

    def on_event(event: str, obj: dict) -> None:
        # Watcher thread: the plan (predicted memory), the settings chosen from the data, what the
        # run changed, then the summary (the measured memory peak beside the prediction).
        from chatcli_finetune.report import memory_line, plan_lines

        kind = "warning" if event == "what_changed" and obj.get("verdict") != "changed" else "info"
        if event == "plan":
            lines = plan_lines(obj)
        elif event == "summary":
            if "peak_memory_mb" not in obj or "predicted_memory_mb" not in obj:
                return
            lines = [memory_line(obj)]
        else:
            lines = obj.get("lines") or []
        text = "\n".join(f"finetune {action}: {line}" for line in lines)
        try:
            on_ui_thread(ctx, ctx.say, text, kind)
        except RuntimeError:  # the app has closed meanwhile
            pass

    run = BackgroundRun(action, data, out, rest, model=model, on_end=on_end, on_event=on_event)
    run.auto_load = auto_load
    run.start()
    _RUN["current"] = run
    ctx.say(f"fine-tuning ({action}) started in the background -> {out}; /finetune status, /finetune stop"
            + (" (loads when done)" if auto_load else ""))  # fmt: skip
