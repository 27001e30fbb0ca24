"""``--compile``: the decode step compiled ahead of time (plan: the checks and the pure step; package:
the file on disk; step: what a generator holds)."""
