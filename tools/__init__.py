"""Proof tools that are not tests themselves: `chaos` (the money path under crashes) and `fuzz` (the HTTP API).

Run from the repository root: `python -m tools.chaos`, `python -m tools.fuzz` (or `make chaos`, `make fuzz`).
"""
