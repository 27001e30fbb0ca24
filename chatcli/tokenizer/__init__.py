"""Text <-> ids: the model's tokenizer, chat templates (rendered in a bounded sandbox: template_sandbox,
template_limits), the streaming detokenizer, token pieces."""
