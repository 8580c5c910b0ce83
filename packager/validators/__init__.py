"""Parity: run the torch reference and the artifact's own loader on the same texts, compare."""
