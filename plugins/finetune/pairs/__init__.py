"""Preference pairs (DPO): what can be computed once for a pair's two rows (:mod:`.shared_prompt`)."""
