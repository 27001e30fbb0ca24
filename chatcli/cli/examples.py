"""One or two examples per command, shown at the end of its ``--help`` (:mod:`chatcli.cli.help_format`).

Keyed by command path (``"models pull"``; ``""`` is ``chatcli`` itself). Each example is a
real command line: tests parse every one against the command it names, so an example
cannot keep a flag that was renamed.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        'chatcli generate "Why is the sky blue?" --show-probs',
        "chatcli chat --preset terse",
    ),
    "generate": (
        'chatcli generate "Name three primes." --temperature 0 --show-probs',
        'cat notes.txt | chatcli generate - --preset terse --json',
        'chatcli generate -c "And the next three?"',
    ),
    "chat": (
        "chatcli chat --temperature 0.3 --lora pirate:0.5",
        "chatcli chat --resume",
    ),
    "serve": (
        "chatcli serve --port 8000",
        "chatcli serve --lora pirate --adapter-dir ./adapters",
    ),
    "tokenize": (
        'chatcli tokenize "Hello 123 今天"',
        'chatcli tokenize "Hi" --chat --json',
    ),
    "score": (
        'chatcli score "The capital of France is Paris."',
        'chatcli score "Paris." --prompt "Capital of France?" --json',
    ),
    "lens": ('chatcli lens "The capital of France is" --raw', 'chatcli lens "Name a colour." --json'),
    "attention": ('chatcli attention "The cat sat on the mat because it" --raw', 'chatcli attention "Hi" --layer 3 --head 0'),
    "tour": ("chatcli tour", "chatcli tour --list"),
    "bench": (
        "chatcli bench --quick",
        "chatcli bench --baseline transformers --only decode",
    ),
    "models": ("chatcli models list", "chatcli models pull"),
    "models pull": ("chatcli models pull", "chatcli models pull Qwen/Qwen2.5-0.5B-Instruct"),
    "models import": ("chatcli models import ./my-model", "chatcli models import model.Q8_0.gguf --dtype bfloat16"),
    "models list": ("chatcli models list", "chatcli models list --available"),
    "models info": ("chatcli models info smollm2-135m-instruct", "chatcli models info qwen3-0.6b --json"),
    "models verify": ("chatcli models verify smollm2-135m-instruct",),
    "models rm": ("chatcli models rm gguf-1a2b3c4d5e6f7a8b Qwen/Qwen3-0.6B --yes",),
    "models export": ("chatcli models export --out smollm2.gguf",
                      "chatcli models export --lora pirate --quantize q4_0 --out pirate.gguf"),
    "lora": ("chatcli lora info pirate", 'chatcli lora diff --lora pirate "Tell me about the sea."'),
    "lora info": ("chatcli lora info pirate", "chatcli lora info ./adapters/pirate --model smollm2-135m-instruct"),
    "lora merge": ("chatcli lora merge --lora pirate:0.5 --out merged/",),
    "lora export": ("chatcli lora export pirate --out pirate-lora.gguf",),
    "lora layers": ('chatcli lora layers pirate "Tell me about the sea."',),
    "lora diff": ('chatcli lora diff --lora pirate "Tell me about the sea."', 'chatcli lora diff -l pirate "Hi" --json'),
    "plugins": ("chatcli plugins list",),
    "plugins list": ("chatcli plugins list", "CHATCLI_PLUGINS=none chatcli plugins list --json"),
    "history": ("chatcli history list", "chatcli history show 3 --tokens"),
    "history list": ("chatcli history list -n 5", "chatcli history list --json"),
    "history show": ("chatcli history show 3", "chatcli history show 3 --json"),
    "history search": ("chatcli history search lighthouse", 'chatcli history search "capital france" --json'),
    "history path": ("chatcli history path",),
    "history export": ("chatcli history export 3", "chatcli history export 3 notes/chat --all-branches"),
    "history rm": ("chatcli history rm 3 4",),
    "presets": ("chatcli presets list", "chatcli presets save terse --system \"Answer in one sentence.\" -t 0.2"),
    "presets list": ("chatcli presets list", "chatcli presets list --json"),
    "presets show": ("chatcli presets show terse",),
    "presets save": (
        'chatcli presets save terse --system "Answer in one sentence." --temperature 0.2',
        "chatcli presets save mine --from-config --lora pirate:0.5",
    ),
}
