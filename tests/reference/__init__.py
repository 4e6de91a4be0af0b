"""Reference computations used only by tests (explicit, slow, obviously-correct)."""
