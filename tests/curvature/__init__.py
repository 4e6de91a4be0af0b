"""Curvature against the explicit GGN of tiny networks (tests.reference)."""
