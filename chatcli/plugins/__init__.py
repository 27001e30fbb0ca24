"""The plugin host: hook specs, discovery, settings and the manager (first-party plugins live in chatcli_rank, chatcli_finetune)."""
