"""Agentry Python SDK."""
