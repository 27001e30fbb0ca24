"""The chat app's widgets, one per area of the screen; each owns its state and posts messages."""
