"""One small module per kind of child spawner: what a template's choice means for it."""
