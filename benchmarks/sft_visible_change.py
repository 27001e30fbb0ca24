"""SFT at the defaults visibly moves the default model (issue 15): measured and printed, not a timed test.

    .venv/bin/python benchmarks/sft_visible_change.py [--dir /tmp/sft_visible_change]

Writes 30 conversations (English, varied topics) answered in one recognisable style:
every answer opens with "Short answer:", gives one plain sentence and closes with
"That's the gist." Runs ``chatcli finetune sft DATA --out DIR`` with no tuning flags
(the settings come from the data) and times the whole command. Then, on 8 questions
that are not in the data, the adapter loaded by PEFT on the float32 checkpoint against
the same model with the adapter off (:mod:`visible_change`). Targets (as for DPO): mean
first-token KL(adapter ‖ base) >= 0.05 bits; the probability of "Short" as the first
answer token more than doubles; the time is reported. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visible_change import HELD_OUT, fresh, measure_peft, report, run_cli, write_jsonl

PHRASE = "Short answer:"
CLOSE = "That's the gist."
QA = [
    ("What is gravity?", "gravity is the pull that masses have on each other, which keeps us on the ground."),
    ("How do bees make honey?", "bees turn flower nectar into honey by adding enzymes and fanning it until most of the water evaporates."),
    ("Why do we need sleep?", "sleep lets the body repair itself and helps the brain store memories and clear out waste."),
    ("What is a black hole?", "a black hole is a region where gravity is so strong that not even light can escape."),
    ("How do I boil an egg?", "put the egg in boiling water for about eight minutes, then cool it in cold water."),
    ("What is democracy?", "democracy is a way of governing where citizens choose their leaders and laws by voting."),
    ("Why do birds migrate?", "birds migrate to follow food and warmer weather when the seasons change."),
    ("What does DNA do?", "DNA carries the instructions a living thing uses to grow, work and reproduce."),
    ("How does a battery work?", "a battery stores chemical energy and releases it as an electric current when a circuit is closed."),
    ("What is the tallest mountain?", "Mount Everest, at about 8,849 metres above sea level, is the tallest mountain on Earth."),
    ("How can I save money?", "spend less than you earn, track where your money goes, and put a little aside every month."),
    ("What is a verb?", "a verb is a word that describes an action or a state, like run, think or be."),
    ("Why does ice float?", "ice floats because water expands when it freezes, so ice is less dense than liquid water."),
    ("How do earthquakes happen?", "earthquakes happen when rocks along a fault suddenly slip and release stored energy."),
    ("What is the internet?", "the internet is a worldwide network of computers that exchange data using shared rules."),
    ("How do I write a good essay?", "make one clear point, support it with evidence, and revise it until every paragraph earns its place."),
    ("Why is exercise healthy?", "exercise strengthens the heart, muscles and bones and lifts your mood."),
    ("What is an atom?", "an atom is the smallest unit of a chemical element, made of a nucleus and electrons around it."),
    ("How do plants drink water?", "plants pull water up from their roots through thin tubes as it evaporates from their leaves."),
    ("What causes rain?", "rain falls when water vapour in clouds cools, condenses into drops and grows too heavy to float."),
    ("Who invented the telephone?", "Alexander Graham Bell received the first patent for the telephone in 1876."),
    ("What is a recipe for pancakes?", "mix flour, milk, eggs and a pinch of salt, then fry thin rounds of batter in a hot buttered pan."),
    ("How does the heart work?", "the heart is a muscle that pumps blood around the body, squeezing about once a second."),
    ("What is machine learning?", "machine learning is getting computers to find patterns in data instead of following hand-written rules."),
    ("Why do stars twinkle?", "stars twinkle because moving layers of air bend their light a little differently from moment to moment."),
    ("How do I care for a cactus?", "give it lots of light and water it only when the soil is completely dry."),
    ("What is a volcano?", "a volcano is an opening in the Earth's crust where melted rock, ash and gas escape."),
    ("Why do we have time zones?", "time zones keep noon close to when the sun is highest, as the Earth turns through 24 hours."),
    ("What is a haiku?", "a haiku is a short Japanese poem of three lines with five, seven and five syllables."),
    ("How does soap clean?", "soap molecules grab grease with one end and water with the other, so rinsing carries the dirt away."),
]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/sft_visible_change"), help="Work folder (replaced).")
    a = ap.parse_args()
    work = fresh(a.dir)
    work.mkdir()
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"{PHRASE} {ans[0].upper()}{ans[1:]} {CLOSE}"}]}
            for q, ans in QA]  # fmt: skip
    data = write_jsonl(work / "sft.jsonl", rows)
    out = work / "run"
    seconds = run_cli("sft", data, out)
    m = measure_peft(out, HELD_OUT, PHRASE)
    return 0 if report("sft", seconds, m, out, time_target=None, kl_target=0.05) else 1


if __name__ == "__main__":
    sys.exit(main())
