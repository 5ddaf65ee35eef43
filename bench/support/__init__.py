"""Helpers of the benches (not benches themselves: `make bench` runs only bench/*.py)."""
