"""Posterior operations and structures against the dense posterior (tests.reference)."""
