"""The conversation core every front end shares: sessions, the store, slash commands, the REPL."""
