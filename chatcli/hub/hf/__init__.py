"""The Hugging Face side of chatcli's hub: the standard Hugging Face cache (read without
``huggingface_hub``, so a cached model loads with no network and no import cost) and the
downloads into it (through ``huggingface_hub``, failing fast when the Hub cannot be reached)."""
