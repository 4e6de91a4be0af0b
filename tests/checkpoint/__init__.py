"""Checkpoint loading and the allow-list of classes a file may name."""
