"""Command-line entry points: each composes its config (Hydra) or parses its arguments, then calls the library."""
