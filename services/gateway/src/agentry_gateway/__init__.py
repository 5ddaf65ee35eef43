"""Agentry gateway service."""
