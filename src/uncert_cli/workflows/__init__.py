"""The library half of each command: open the files, call the analyses, return results (no printing)."""
