"""The nine chapters of the guided tour, as data.

They follow the order of the article the product grew from (``seeds/``): a next-token
prediction is a probability distribution, sampling reshapes it, the model reads
tokens, a chat is one long text, pretraining then instruction tuning, what happens
inside, ranking and reinforcement learning, LoRA, and the memory rule of thumb. The
texts are written for this project: each chapter explains its idea in a few lines,
then asks for an experiment on the model in the chat and names the exact commands.
Its :class:`~chatcli.tour.checks.Goal` values say when the experiment was done.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.tour import checks as c
from chatcli.tour.checks import Goal


@dataclass(frozen=True)
class Chapter:
    number: int
    title: str
    explain: tuple[str, ...]  # 2-4 short lines: the idea
    steps: tuple[str, ...]  # what to do; text between backticks is typed as it stands
    goals: tuple[Goal, ...]  # the check: every goal met = the chapter is done

    def goal(self, key: str) -> Goal:
        return next(g for g in self.goals if g.key == key)


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        1, "A prediction is a distribution",
        (
            "The model writes one token at a time. At each step it gives every token of its vocabulary "
            "a probability, and one token is drawn.",
            "After some text almost all of the probability sits on one token; after other text it is "
            "spread over hundreds. Entropy measures the spread in bits: 0 is certain, 1 a coin toss, "
            "5 about 32 equal choices.",
        ),
        (
            "Ask `What is the capital of France?` and then `Tell me a story.`",
            "Press Ctrl+↑ and walk the tokens with ←/→ (or click one): the panel shows the step's "
            "alternatives and its entropy (F3 shows the panel on a narrow screen). Find a near-certain token "
            "(like ' Paris') and a wide-open one. `/tint entropy` colours every token by it.",
        ),
        (
            Goal("near", f"a near-certain step (≤ {c.NEAR_CERTAIN_BITS:g} bits)", c.near_certain_step),
            Goal("wide", f"a wide-open step (≥ {c.WIDE_OPEN_BITS:g} bits)", c.wide_open_step),
        ),
    ),
    Chapter(
        2, "Temperature and top-p reshape it",
        (
            "What gets sampled is not the model's distribution itself: the settings reshape it first.",
            "Temperature divides the scores before they become probabilities: below 1 the favourite "
            "grows, above 1 the tail rises, 0 always takes the top token. Top-p keeps the fewest tokens "
            "whose probabilities add up to p; top-k keeps the k best.",
        ),
        (
            "Select a wide-open token and press w for the what-if view, then t/T and p/P; "
            "or type `/whatif temperature 1.5 top_p 0.9`.",
            "Then sample for real: `/set temperature 1.5` and `/retry` (Esc stops the babble), "
            "and back: `/set temperature 0.2`.",
        ),
        (
            Goal("whatif", "reshape a step: /whatif or w", c.either(c.command("whatif"), c.view("what-if"))),
            Goal("set", "/set a sampling setting", c.sampling_set),
            Goal("sampled", "an answer with it", c.answer(), after="set"),
        ),
    ),
    Chapter(
        3, "Tokens: what the model reads",
        (
            "The model never sees letters. Text is cut into tokens from a fixed vocabulary "
            "(49,152 of them here) and each token is a number.",
            "A common English word is one token. This tokenizer writes numbers digit by digit, and a "
            "Chinese character or an emoji is often two or three byte pieces (shown as �): they cost more.",
        ),
        (
            "`/tokenize 今天天气很好 2024 🤖 Hello world`",
            "The same in a shell: `chatcli tokenize \"今天天气很好 2024 🤖\"`.",
        ),
        (
            Goal("wide_chars", "Chinese or an emoji", c.tokenized_wide_chars),
            Goal("number", "a number (3+ digits)", c.tokenized_number),
        ),
    ),
    Chapter(
        4, "A conversation is one long text",
        (
            "The model keeps nothing between turns. For every answer the system prompt, every message "
            "so far and the answer's own tokens are joined into one string, with special tokens "
            "marking who speaks, and the model continues it.",
            "A long chat is simply a long text, until it no longer fits the context window.",
        ),
        (
            "`/new` for a clean start (`/tour` shows this chapter again), then send two messages, "
            "e.g. `My name is Ada.` and `What is my name?`",
            "Then `/raw`: the exact text the last answer was predicted from.",
        ),
        (
            Goal("turns", "a second turn answered", c.answer(min_user_turns=2)),
            Goal("raw", "/raw", c.command("raw")),
        ),
    ),
    Chapter(
        5, "Pretraining, then instruction tuning",
        (
            "Pretraining taught the model one skill: continue any text the way text goes on. "
            "That makes a continuer, not an assistant.",
            "Instruction tuning then trained it on conversations in the chat template, so after the "
            "assistant's marker it replies. The same words framed two ways show both skills.",
        ),
        (
            "`/complete The capital of France is`: a plain continuation, no chat template.",
            "Then send `The capital of France is` as a message and compare "
            "(in a shell: `chatcli generate \"The capital of France is\" --raw`).",
        ),
        (
            Goal("complete", "a raw continuation: /complete TEXT", c.command("complete")),
            Goal("chat", "the same words in the chat", c.answer()),
        ),
    ),
    Chapter(
        6, "Inside: how the prediction forms",
        (
            "Between the tokens going in and the distribution coming out are 30 layers. Each one reads a "
            "running vector for every position (the residual stream) and adds its correction to it.",
            "The logit lens reads that vector after every layer through the model's last norm and output "
            "head: you see where the answer surfaces (in this small model, often only in the last layers).",
        ),
        (
            "`/lens The capital of France is`, or select a token of an answer and press l.",
            "What did a token look at? Press a, or `/attention`.",
        ),
        (
            Goal("lens", "a logit lens: /lens or l", c.either(c.command("lens"), c.view("lens"))),
        ),
    ),
    Chapter(
        7, "Ranking, a reward model, DPO and RL",
        (
            "Writing ideal answers is costly; ranking the model's own answers is cheap. A ranking "
            "becomes pairs: this answer over that one.",
            "A reward model learns to score answers the way the ranker did, a new teacher; RL samples "
            "answers and pushes up the ones it scores well. DPO learns from the pairs directly.",
            "A ranker who puts A over B today and B over A tomorrow pulls both ways: "
            "`chatcli rank stats` lists such contradictions.",
        ),
        (
            "Ask something, then `/rank 3`: order the answers (number keys, Enter).",
            "`/finetune dpo --max-steps 4 --load`: a tiny run on your rankings (one or two minutes); "
            "its \"what changed\" report follows. Then `/compare`.",
        ),
        (
            Goal("rank", "rank: /rank", c.command("rank")),
            Goal("train", "train: /finetune dpo|reward|rl", c.command("finetune", first_word=("dpo", "reward", "rl"))),
            Goal("loaded", "its adapter loaded (--load)", c.adapter_loaded, after="train"),
        ),
    ),
    Chapter(
        8, "LoRA: W = W0 + BA",
        (
            "Training every weight is expensive. LoRA freezes each weight matrix W0 and learns a small "
            "update B·A of rank r: for a 576×576 matrix at r = 8 that is 9,216 numbers instead of 331,776.",
            "The update sits beside the model, so it can be switched on, scaled or removed in "
            "milliseconds. BA is multiplied by α/r.",
        ),
        (
            "`/load-lora pirate`, then `/lora`: its parameters, share of the model and α/r.",
            "Ask something, then `/compare` (where the adapter changed the answer) "
            "and `/lora-layers` (which layers matter most).",
        ),
        (
            Goal("load", "load an adapter", c.either(c.adapter_loaded, c.command("load-lora"))),
            Goal("lora", "/lora", c.command("lora")),
            Goal("compare", "/compare", c.command("compare")),
            Goal("layers", "/lora-layers", c.command("lora-layers")),
        ),
    ),
    Chapter(
        9, "Memory: the rule of thumb",
        (
            "Training keeps the frozen weights once, and for every trainable parameter its gradient, "
            "the optimizer's two running averages and working copies: about 1× the weights plus "
            "10× the trainable parameters.",
            "With LoRA the trainable part is about 2% of this model, so the rule predicts little more "
            "than the weights. Activations, kept per token for the backward pass, come on top.",
        ),
        (
            "`/finetune sft --max-steps 2 --load`: trains on this conversation (chat first).",
            "It says the predicted memory when it starts and the measured peak when it ends.",
        ),
        (
            Goal("train", "a run: /finetune", c.command("finetune", first_word=("sft", "dpo", "reward", "rl"))),
            Goal("loaded", "it finished, adapter loaded", c.adapter_loaded, after="train"),
        ),
    ),
)  # fmt: skip


def chapter(number: int) -> Chapter:
    """Chapter ``number`` (1-based); IndexError outside 1..len(CHAPTERS)."""
    if not 1 <= number <= len(CHAPTERS):
        raise IndexError(number)
    return CHAPTERS[number - 1]
