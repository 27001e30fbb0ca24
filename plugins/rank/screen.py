"""The ranking screen: candidates as cards (answers as Markdown), ordered best-first with the keyboard.

``RankScreen(messages, candidates=..., generate=...)`` either shows given
candidates, or first runs ``generate(progress, cancel)`` in a thread worker
(progress bar and live token counts; Esc stops it) and then shows what came
back. It ends with a :class:`RankOutcome` (``ranking`` None when the person
left with Esc), handed to ``on_done`` and returned by ``dismiss``; storing it is
the caller's job, so the screen serves ``/rank`` in the chat and ``chatcli rank
annotate`` alike.

Keys: 1-9 and 0 (=10) place that answer as the next best (again: take it back),
up/down select, shift+up/down (or K/J) move the selected answer, t ties it with
the one above, b marks all bad, n edits a note, s skips, Enter submits, Esc leaves.
A card's title marks the conversation's own reply ("existing reply") and an answer
that did not end by itself ("TRUNCATED": cut at max_tokens, or stopped).

Consistency: given the person's ``earlier`` judgements (:mod:`chatcli_rank.consistency`),
the screen warns while a ranking is made when it puts two answers the other way
round from an earlier ranking of the same prompt (or ranks two equal texts apart),
and again when such a ranking is submitted. Rewards: when a reward model scored the
candidates, their rewards stay hidden while the person ranks (so the ranking is the
person's own) and appear on the cards after the submit, with how many of the
ranking's pairs the reward model orders the same way; Enter or Esc then closes.
Styles are in ``DEFAULT_CSS`` because the screen is pushed onto apps that do
not know this plugin's stylesheet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual import on, work
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, ProgressBar, Static

from chatcli.errors import ChatcliError
from chatcli.tui.widgets.markdown_body import AnswerMarkdown
from chatcli_rank.candidates import Candidate, CandidateProgressFn
from chatcli_rank.consistency import Conflict, Judgement, conflicts
from chatcli_rank.ranking import Ranking, RankingDraft

GenerateFn = Callable[[CandidateProgressFn, threading.Event], list[Candidate]]
ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


@dataclass(frozen=True)
class RankOutcome:
    ranking: Ranking | None  # None: left without a judgement
    candidates: list[Candidate]


class CandidateCard(Static):
    """One answer: its number, place in the ranking, mean token probability (and reward score), and text.

    The text is Markdown, rendered as the chat renders answers (code blocks, lists,
    single newlines kept); it is built once, and re-ranking only restyles the border.
    """

    def __init__(self, candidate: Candidate) -> None:
        text = candidate.text.strip()
        super().__init__(AnswerMarkdown(text) if text else Content("(empty answer)"), classes="rank-card")
        self.candidate = candidate

    def render_card(self, place: str, selected: bool, tied: bool, show_reward: bool = False) -> None:
        c = self.candidate
        mean = f"mean p {c.mean_model_prob:.2f}" if c.mean_model_prob is not None else "mean p -"
        # Scored by a loaded reward model: shown once the person's ranking is in, never before.
        reward = [f"reward {c.reward:+.2f}"] if c.reward is not None and show_reward else []
        bits = [mean, *reward, f"{c.tokens} tokens", f"T {c.params.get('temperature', '?')}", f"seed {c.seed}"]
        if c.adapters:
            bits.append("+".join(f"{a['name']}×{a['scale']:g}" for a in c.adapters))
        if c.finish_reason not in ("stop", "") and not c.truncated:
            bits.append(c.finish_reason)
        # Marks in the title, where the eye is: the chat's own reply, and an answer that did not end
        # (cut at max_tokens, or stopped): truncated answers are never exported as a training target.
        marks = (["existing reply"] if c.existing else []) + (
            [f"TRUNCATED ({'cut at max_tokens' if c.finish_reason == 'length' else 'stopped'})"] if c.truncated else [])
        self.border_title = Content.from_markup(
            f"[b]{c.index + 1}[/b]  $place$marks", place=place + ("  (tie)" if tied else ""),
            marks="".join(f"  · {m}" for m in marks),
        )  # fmt: skip
        self.set_class(c.truncated, "-truncated")
        self.border_subtitle = "  ·  ".join(bits)
        self.set_class(selected, "-selected")
        self.set_class(place != "unranked", "-placed")


class RankScreen(Screen[RankOutcome]):
    AUTO_FOCUS = ""  # keys go to the screen (None would mean the app default, "*"); the note input takes focus when opened
    DEFAULT_CSS = """
    RankScreen { layout: vertical; }
    RankScreen #rank-head { height: auto; max-height: 7; padding: 0 1; background: $boost; }
    RankScreen #rank-gen { height: auto; padding: 1 2; }
    RankScreen #rank-cards { height: 1fr; padding: 0 1; }
    RankScreen .rank-card { height: auto; margin: 1 0 0 0; padding: 0 1; border: round $foreground 30%; }
    RankScreen .rank-card.-placed { border: round $success 60%; }
    RankScreen .rank-card.-selected { border: heavy $accent; background: $accent 6%; }
    RankScreen .rank-card.-truncated { border-title-color: $warning; }
    RankScreen #rank-status { height: auto; padding: 0 1; background: $boost; }
    RankScreen #rank-conflict { height: auto; padding: 0 1; color: $warning; background: $warning 10%; display: none; }
    RankScreen #rank-conflict.-shown { display: block; }
    RankScreen #rank-note { display: none; }
    RankScreen #rank-note.-open { display: block; }
    """
    BINDINGS = [
        *[Binding(str(k % 10), f"pick({(k - 1) if k else 9})", show=False) for k in range(10)],
        Binding("up,k", "select(-1)", "Select", show=False),
        Binding("down,j", "select(1)", "Select", show=False),
        Binding("shift+up,K", "move(-1)", "Move up"),
        Binding("shift+down,J", "move(1)", "Move down"),
        Binding("t,equals_sign", "tie", "Tie"),
        Binding("b", "all_bad", "All bad"),
        Binding("n", "note", "Note"),
        Binding("s", "skip", "Skip"),
        Binding("enter,ctrl+s", "submit", "Submit"),
        Binding("escape", "leave", "Leave"),
    ]

    def __init__(
        self,
        messages: list[dict],
        *,
        candidates: list[Candidate] | None = None,
        generate: GenerateFn | None = None,
        title: str = "",
        n: int | None = None,
        on_done: Callable[[RankOutcome], None] | None = None,
        earlier: Sequence[Judgement] = (),
    ) -> None:
        super().__init__()
        if candidates is None and generate is None:
            raise ValueError("RankScreen needs candidates or a generate function")
        self.messages = messages
        self.candidates: list[Candidate] = list(candidates or [])
        self._generate_fn = generate
        self.title_text = title
        self.n = n or len(self.candidates)
        self.draft: RankingDraft | None = None
        self.cursor = 0
        self.error: str | None = None
        self._cancel = threading.Event()
        self._shown_at = 0.0
        self._on_done = on_done
        self.earlier = earlier  # the person's earlier judgements (the caller may keep adding to it)
        self.revealed: RankOutcome | None = None  # stored; the rewards are on show until Enter/Esc

    def finish(self, outcome: RankOutcome) -> None:
        """Hand the outcome to ``on_done`` (it stores it), then close the screen with it."""
        if self._on_done is not None:
            try:
                self._on_done(outcome)
            except ChatcliError as e:  # e.g. the store went away: say so, keep the screen
                self.notify(e.message, severity="error", timeout=5)
                return
        r = outcome.ranking
        found = self.conflicts(r.tiers) if r is not None and r.status == "ranked" else []
        if found:
            more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            self.app.notify(f"stored, but it contradicts what you said before: {found[0].describe()}{more}",
                            severity="warning", timeout=8)  # fmt: skip
        if r is not None and r.status != "skipped" and any(c.reward is not None for c in outcome.candidates):
            self.reveal(outcome)
            return
        self.dismiss(outcome)

    # --- layout ----------------------------------------------------------------------------

    def compose(self):
        question = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
        head = Content.from_markup("[b]$title[/b]\n", title=self.title_text or f"Rank {self.n} answers") + Content(question.strip())
        yield Static(head, id="rank-head")
        with Vertical(id="rank-gen"):
            yield Static("", id="rank-gen-text")
            yield ProgressBar(total=self.n, show_eta=False, id="rank-gen-bar")
        yield VerticalScroll(id="rank-cards", can_focus=False)
        yield Input(placeholder="a note for this ranking (Enter keeps it, Esc closes)", id="rank-note")
        yield Static("", id="rank-conflict")
        yield Static("", id="rank-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.candidates:
            self.call_later(self._show_candidates, self.candidates)
        else:
            self.query_one("#rank-gen-text", Static).update(f"generating {self.n} answers…")
            self._run_generate()

    # --- generation ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _run_generate(self) -> None:
        def progress(tokens: list[int], finished: list[bool]) -> None:
            self._post(self._progress, tokens, finished)

        try:
            cands = self._generate_fn(progress, self._cancel)
        except ChatcliError as e:
            self._post(self._failed, e.message)
            return
        except Exception as e:  # an engine bug: report it, keep the app alive
            self._post(self._failed, f"{type(e).__name__}: {e}")
            return
        if self._cancel.is_set():
            self._post(self.finish, RankOutcome(None, cands))
            return
        self._post(self._show_candidates, cands)

    def _post(self, fn, *args) -> None:
        """Run ``fn`` on the UI thread, unless the app is already gone (quit while generating)."""
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError:
            pass

    def _progress(self, tokens: list[int], finished: list[bool]) -> None:
        if not self.is_attached:
            return
        done = sum(finished)
        counts = "  ".join(f"{i + 1}:{t}{'✓' if f else ''}" for i, (t, f) in enumerate(zip(tokens, finished)))
        self.query_one("#rank-gen-text", Static).update(f"generating {len(tokens)} answers — {done} done — tokens {counts}  (Esc stops)")
        self.query_one("#rank-gen-bar", ProgressBar).update(total=len(tokens), progress=done)

    def _failed(self, message: str) -> None:
        self.error = message
        self.query_one("#rank-gen-text", Static).update(Content.from_markup("[b red]$m[/]\nEsc goes back", m=message))

    async def _show_candidates(self, candidates: list[Candidate]) -> None:
        self.candidates = list(candidates)
        self.n = len(self.candidates)
        self.draft = RankingDraft(self.n)
        self.query_one("#rank-gen").display = False
        await self.query_one("#rank-cards").mount_all(CandidateCard(c) for c in self.candidates)
        self._shown_at = time.monotonic()
        self.refresh_cards()

    # --- state -> view ---------------------------------------------------------------------

    def cards(self) -> dict[int, CandidateCard]:
        return {card.candidate.index: card for card in self.query(CandidateCard)}

    def refresh_cards(self) -> None:
        d = self.draft
        if d is None:
            return
        cards = self.cards()
        container = self.query_one("#rank-cards")
        for pos, i in enumerate(d.order):
            card = cards[i]
            place = "unranked"
            if d.is_placed(i):
                tier = next(k for k, t in enumerate(d.tiers()) if i in t)
                place = ORDINAL.get(tier + 1, f"{tier + 1}th")
            card.render_card(place, selected=(i == self.cursor), tied=i in d.tied, show_reward=self.revealed is not None)
            if container.children.index(card) != pos:
                container.move_child(card, before=pos)
        cards[self.cursor].scroll_visible(animate=False)
        self.query_one("#rank-status", Static).update(self.summary())
        found = [] if d.all_bad or self.revealed is not None else self.conflicts(d.tiers())
        notice = self.query_one("#rank-conflict", Static)
        notice.set_class(bool(found), "-shown")
        notice.update(Content("⚠ " + "; ".join(c.describe() for c in found[:2])
                              + (f" (+{len(found) - 2} more)" if len(found) > 2 else "")) if found else "")  # fmt: skip

    def conflicts(self, tiers: Sequence[Sequence[int]]) -> list[Conflict]:
        """Where ranking the candidates as ``tiers`` contradicts the earlier judgements (or itself)."""
        return conflicts(self.earlier, self.messages, [c.text for c in self.candidates], tiers)

    def reveal(self, outcome: RankOutcome) -> None:
        """After a submit: the rewards on the cards and the reward model's agreement with this ranking."""
        from chatcli_rank.reward_agreement import ranking_agreement

        self.revealed = outcome
        self.refresh_cards()
        agree, total, against = ranking_agreement(outcome.ranking, [c.reward for c in outcome.candidates])
        if total:
            line = f"stored · the reward model orders {agree} of your {total} pairs the same way"
            if against:
                line += " (not " + ", ".join(f"{w + 1} > {l + 1}" for w, l in against[:4]) + ("…" if len(against) > 4 else "") + ")"
        else:
            line = "stored · no pairs to compare with the reward model (all bad, or one tie)"
        self.query_one("#rank-status", Static).update(Content(line + " · Enter or Esc closes"))

    def summary(self) -> Content:
        d = self.draft
        if d is None:
            return Content("")
        parts = []
        for k, tier in enumerate(d.tiers()):
            if k == len(d.tiers()) - 1 and d.placed < d.n:
                parts.append("unranked: " + ", ".join(str(i + 1) for i in tier))
            else:
                parts.append(" = ".join(str(i + 1) for i in tier))
        line = "ranking: " + (" > ".join(parts) if d.placed else "press the number of the best answer")
        if d.all_bad:
            line += "   [ALL BAD]"
        if d.note.strip():
            line += f"   note: {d.note.strip()}"
        return Content(line)

    # --- actions ---------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self.draft is not None and self.revealed is None and not self.query_one("#rank-note").has_class("-open")

    def action_pick(self, i: int) -> None:
        if not self._ready():
            return
        if i >= self.n:
            self.app.bell()
            return
        self.draft.pick(i)
        self.cursor = i
        self.refresh_cards()

    def action_select(self, delta: int) -> None:
        if not self._ready():
            return
        order = self.draft.order
        self.cursor = order[max(0, min(len(order) - 1, order.index(self.cursor) + delta))]
        self.refresh_cards()

    def action_move(self, delta: int) -> None:
        if self._ready():
            if not self.draft.move(self.cursor, delta):
                self.app.bell()
            self.refresh_cards()

    def action_tie(self) -> None:
        if self._ready():
            if not self.draft.toggle_tie(self.cursor):
                self.notify("tie a ranked answer with the one above it (select it first)", severity="warning", timeout=2)
            self.refresh_cards()

    def action_all_bad(self) -> None:
        if self._ready():
            self.draft.toggle_all_bad()
            self.refresh_cards()

    def action_note(self) -> None:
        if self.draft is None or self.revealed is not None:
            return
        note = self.query_one("#rank-note", Input)
        note.value = self.draft.note
        note.add_class("-open")
        note.focus()

    @on(Input.Submitted, "#rank-note")
    def _note_done(self, event: Input.Submitted) -> None:
        self.draft.note = event.value
        self._close_note()

    def _close_note(self) -> None:
        note = self.query_one("#rank-note", Input)
        note.remove_class("-open")
        self.set_focus(None)
        self.refresh_cards()

    def action_skip(self) -> None:
        if self._ready():
            tiers = tuple(tuple(t) for t in self.draft.tiers())
            self.finish(RankOutcome(Ranking(tiers, "skipped", self.draft.note.strip(), self._elapsed()), self.candidates))

    def action_submit(self) -> None:
        if self.revealed is not None:
            self.dismiss(self.revealed)
            return
        if not self._ready():
            return
        try:
            ranking = self.draft.result(self._elapsed())
        except ChatcliError as e:
            self.notify(e.message, severity="warning", timeout=3)
            return
        self.finish(RankOutcome(ranking, self.candidates))

    def action_leave(self) -> None:
        if self.revealed is not None:
            self.dismiss(self.revealed)
            return
        if self.query_one("#rank-note").has_class("-open"):
            self._close_note()
            return
        if self.draft is None and self.error is None and self._generate_fn is not None:
            self._cancel.set()  # the worker dismisses once the engine stopped
            self.query_one("#rank-gen-text", Static).update("stopping…")
            return
        self.finish(RankOutcome(None, self.candidates))

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._shown_at, 3)

    def on_unmount(self) -> None:
        self._cancel.set()
