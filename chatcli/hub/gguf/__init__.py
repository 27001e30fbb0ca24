"""GGUF files -> Hugging Face-style model directories: the reader, the llama layout, the tokenizer."""
