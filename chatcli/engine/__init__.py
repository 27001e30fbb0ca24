"""The engine: model, tokenizer, sampler and step loop. It never imports UI code.

Data flow: text -> tokenizer -> ids -> model (+LoRA) -> logits -> sampler -> Step events.
"""
