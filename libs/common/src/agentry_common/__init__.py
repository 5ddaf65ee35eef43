"""Contracts and plumbing shared by every Agentry service. No business logic lives here."""
