"""The rows of scripts/bench.py, one module each (run(args) -> rows), and their shared helpers (common)."""
