"""Numbers-in, numbers-out analyses (metrics, OOD, pruning, tracking, layer statistics)."""
