"""Agentry runner service."""
