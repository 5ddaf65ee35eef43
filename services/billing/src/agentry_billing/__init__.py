"""Agentry billing service."""
