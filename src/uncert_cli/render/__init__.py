"""Presentation only: rich tables, JSON documents, matplotlib PNGs. Computes nothing."""
