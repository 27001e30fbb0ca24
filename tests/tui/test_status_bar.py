"""A narrow terminal: the status bar drops its least useful fields first, and the hidden panel is announced.

The pure rules (chatcli/tui/widgets/status_fields.py) are tested on their own; the
screens at 80×24 and 160×48 are text snapshots (tests/tui/snapshots), with a
fine-tuning run's status item (a plugin's) in the bar.
"""

from __future__ import annotations

from chatcli.engine.params import SamplingParams
from chatcli.tui.widgets.status_fields import StatusInfo, fit, needed_width, status_fields, zone_content
from chatcli.tui.widgets.transcript import Note
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle, wait_for

MODEL = "Qwen2.5-0.5B-Instruct"
RUN = "finetune sft: step 12/300 loss 1.234 2345 tok/s ETA 3:20 (answers slower meanwhile)"
GREEDY = SamplingParams(temperature=0, max_tokens=64, seed=7)


def _info(**kw) -> StatusInfo:
    engine = FakeEngine(name=MODEL)
    base = dict(state="ready", identity=engine.identity, params=GREEDY, context=(300, 2048), tokens_per_s=42.0, conv_id=12)
    return StatusInfo(**{**base, **kw})


def _plain(fields, zone="left") -> str:
    return zone_content(fields, zone).plain


def test_fields_give_way_from_the_least_useful_and_state_and_model_stay():
    fields = status_fields(_info())
    assert fit(fields, 200) == fields  # room for everything
    assert fit(fields, 0) == fields  # width unknown yet: everything
    text = lambda width: " ".join(f.content.plain for f in fit(fields, width))  # noqa: E731
    assert "float32/cpu" in text(200) and "#12" in text(200)
    # dtype/device goes first, then the history id, the speed, the context use; the settings hold longer
    assert "float32/cpu" not in text(needed_width(fields) - 1) and "#12" in text(needed_width(fields) - 1)
    narrow = text(78)
    for gone in ("float32/cpu", "#12", "tok/s", "ctx"):
        assert gone not in narrow
    assert narrow.startswith(f"● ready  {MODEL}") and "T greedy" in narrow
    assert needed_width(fit(fields, 78)) <= 78
    tiny = fit(fields, 20)  # nothing droppable is left: the state and the model name
    assert [f.content.plain for f in tiny] == [f"● ready  {MODEL}"]


def test_a_plugin_item_is_shortened_before_it_goes_and_its_f8_offer_stays():
    fields = status_fields(_info(plugin=RUN, action="/finetune plot"))
    kept = fit(fields, 78)
    assert needed_width(kept) <= 78
    middle = _plain(kept, "middle")
    assert middle.startswith("finetune sft: step 12/300") and "…" in middle and middle.endswith("F8 /finetune plot")
    assert _plain(kept).startswith(f"● ready  {MODEL}")
    # a hint outranks the plugin's item
    kept = fit(status_fields(_info(plugin=RUN, hint="no more uncertain tokens after this one")), 78)
    assert "no more uncertain tokens after this one" in _plain(kept, "middle")


class RunningFinetune:
    """What the app uses of a PluginManager, with a fine-tuning run's status item."""

    def tui_extensions(self, kind=None):
        return []

    def install_commands(self, registry):
        return []

    def notify(self, hook, **fields):
        pass

    def status_items(self):
        return [(RUN, "/finetune plot")]


async def _screen(size) -> tuple[str, object]:
    app = build_app(FakeEngine(name=MODEL, length=48, report_speed=42.0), params=GREEDY, plugins=RunningFinetune(),
                    model_name=MODEL)  # fmt: skip
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await send(pilot, "What is the capital of France?")
        await until_idle(pilot)
        await wait_for(pilot, lambda: app.status.info.plugin == RUN, timeout=5, what="the run in the bar")
        app.clear_notifications()  # the F8 offer's toast would cover the transcript
        await pilot.pause(0.1)
        notes = [n.plain for n in app.query(Note)]
        shown = app.panel.display
        text = screen_text(app)
        await pilot.press("f3")
        return text, (notes, shown, app.panel.display)


def test_80x24_hides_the_panel_with_a_line_and_keeps_model_state_and_run_in_the_bar():
    text, (notes, shown, after_f3) = run(_screen((80, 24)))
    assert notes == ["the probability panel is hidden at this width — F3 shows it"]
    assert not shown and after_f3  # F3 shows it all the same
    bar = text.splitlines()[-2]
    assert f"● ready  {MODEL}" in bar and "F8 /finetune plot" in bar and "finetune sft" in bar and "flo…" not in bar
    check_snapshot("narrow_80x24", text)


def test_160x48_shows_the_panel_and_the_whole_run_before_the_minor_fields():
    text, (notes, shown, after_f3) = run(_screen((160, 48)))
    assert notes == [] and shown and not after_f3
    bar = text.splitlines()[-2]
    assert f"● ready  {MODEL}" in bar and "T greedy" in bar and f"{RUN}  F8 /finetune plot" in bar
    assert "float32/cpu" not in bar and "tok/s  " not in bar.replace(RUN, "")  # the minor fields made room
    check_snapshot("wide_160x48", text)
