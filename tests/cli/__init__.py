"""End-to-end tests of the command line (the real entry point, real files)."""
