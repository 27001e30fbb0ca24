"""Text <-> ids: the model's tokenizer, chat templates, the streaming detokenizer, token pieces."""
