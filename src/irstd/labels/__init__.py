"""Label learning: round-0 initialisers, update rules and start rules; pure tensor functions."""
