"""Agentry keys service."""
