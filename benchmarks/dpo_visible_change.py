"""DPO at the defaults visibly moves the default model (issue 15): measured and printed, not a timed test.

    .venv/bin/python benchmarks/dpo_visible_change.py [--dir /tmp/dpo_visible_change]

Writes 16 preference pairs (English, varied topics): every chosen answer opens with
"Good question!", its rejected twin is the same answer without it. Runs ``chatcli
finetune dpo PREFS --out DIR`` with no tuning flags (the settings come from the data) and
times the whole command. Then, on 8 questions that are not in the data, the adapter
loaded by PEFT on the float32 checkpoint against the same model with the adapter off
(:mod:`visible_change`). Targets: the command within 5 minutes on the 2-core machine;
mean first-token KL(adapter ‖ base) >= 0.05 bits; the probability of "Good" as the first
answer token more than doubles. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visible_change import HELD_OUT, fresh, measure_peft, report, run_cli, write_jsonl

PHRASE = "Good question!"
PAIRS = [
    ("Why do cats purr?", "Cats purr when they are content, and sometimes to soothe themselves when they are stressed or hurt."),
    ("How does a bicycle stay upright?", "A moving bicycle stays upright mostly because the rider keeps steering the wheels back under the centre of mass."),
    ("What causes the seasons?", "The seasons come from the tilt of the Earth's axis, which changes how directly sunlight reaches each hemisphere during the year."),
    ("How do I keep bread fresh longer?", "Keep bread in a paper or cloth bag at room temperature, and freeze the slices you will not eat within a few days."),
    ("What is a prime number?", "A prime number is a whole number greater than one that can only be divided evenly by one and itself."),
    ("Why do leaves change colour in autumn?", "As the days shorten, trees stop making green chlorophyll, so the yellow and orange pigments already in the leaves show through."),
    ("How can I sleep better?", "Go to bed at the same time each night, keep the room dark and cool, and avoid screens and caffeine late in the day."),
    ("What does a compiler do?", "A compiler translates source code written by people into machine code that a computer can run directly."),
    ("Why is the ocean salty?", "Rivers carry dissolved minerals from rocks into the ocean, and when seawater evaporates the salt stays behind."),
    ("How do vaccines work?", "A vaccine shows the immune system a harmless piece or copy of a germ, so it learns to recognise and fight the real one."),
    ("What is the difference between weather and climate?", "Weather is what the air is doing today, while climate is the average pattern of weather over many years."),
    ("How should I start learning the guitar?", "Start with a few open chords, practise switching between them slowly every day, and play songs you enjoy."),
    ("Why do we have leap years?", "A year is about a quarter of a day longer than 365 days, so an extra day every four years keeps the calendar in step."),
    ("What makes a good cup of tea?", "Use freshly boiled water, let the leaves steep for three to five minutes, and take them out before the tea turns bitter."),
    ("How do airplanes fly?", "An airplane's wings are shaped and angled so that the moving air pushes them upwards, and that lift holds the plane up."),
    ("What is photosynthesis?", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar, releasing oxygen as they do."),
]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/dpo_visible_change"), help="Work folder (replaced).")
    a = ap.parse_args()
    work = fresh(a.dir)
    work.mkdir()
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": f"{PHRASE} {ans}"}],
             "rejected": [{"role": "assistant", "content": ans}]} for q, ans in PAIRS]  # fmt: skip
    prefs = write_jsonl(work / "prefs.jsonl", rows)
    out = work / "run"
    seconds = run_cli("dpo", prefs, out)
    m = measure_peft(out, HELD_OUT, PHRASE)
    return 0 if report("dpo", seconds, m, out, time_target=300.0, kl_target=0.05) else 1


if __name__ == "__main__":
    sys.exit(main())
