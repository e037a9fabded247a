"""Small helpers with no tensor or training knowledge (files)."""
