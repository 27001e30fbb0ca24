"""Probes: views inside the network for one position, computed on demand.

Each probe runs the model again over a frozen prefix (the generation path stays
untouched: SDPA, the KV cache and the packed weights are never slowed down for
them). ``lens`` reads the residual stream after every layer through the final norm
and LM head; ``attention`` recomputes the attention weights of one query position
exactly as eager attention does; ``whatif`` re-forms one step's distribution under
other sampling settings or adapter scales.
"""
