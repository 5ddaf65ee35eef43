"""Agentry owner webhooks."""
