"""Datasets: loading, adapting, batching."""
