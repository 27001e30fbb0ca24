"""The texts the bench feeds every system (written for this project, not copied).

All systems get the same token ids: the workers tokenize with chatcli's tokenizer and
hand the ids to the engine under test, so a difference in speed is never a
difference in input.
"""

from __future__ import annotations

# Decode: a short chat message that invites a long answer.
DECODE_MESSAGE = "Write a long story about a lighthouse keeper who collects sea glass."

# Prefill: plain text, repeated and cut to exactly the prompt length in tokens.
PREFILL_TEXT = (
    "A language model reads a text as a row of tokens and, for each position, computes how likely "
    "every token of its vocabulary is to come next. Reading the prompt is one large matrix product per "
    "layer over all positions at once; writing the answer is one small product per layer for each new "
    "token, which is why the first is limited by arithmetic and the second by how fast the weights "
    "stream from memory. "
)

# Ten user turns of a conversation about one subject, each a few dozen tokens, so that
# turn ten carries a history of several hundred tokens.
CONVERSATION = (
    "I am planning a small vegetable garden behind my house. Which vegetables are easiest for a beginner?",
    "The soil there is heavy clay that stays wet after rain. What can I do to improve it this autumn?",
    "How far apart should I plant tomatoes, and do they need support as they grow taller?",
    "Slugs ate most of my lettuce last year. Which methods keep them away without harsh chemicals?",
    "How often should I water the beds in summer, and is morning or evening the better time?",
    "Can I grow herbs such as basil and parsley in the same bed as the tomatoes, or do they compete?",
    "What is a simple crop rotation plan for four beds over four years?",
    "Is it worth building a compost heap, and what should and should not go into it?",
    "My courgette plants have white powder on their leaves. What is it and how do I treat it?",
    "Finally, which vegetables can I still sow late in summer for a harvest in autumn?",
)

# The quick mode's conversation: short turns, so ten of them fit a tiny test model's context.
SHORT_CONVERSATION = tuple(f"Turn {i}: say one word." for i in range(1, 11))

# Process start: what a person types.
HI = "hi"
