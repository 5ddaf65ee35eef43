"""Agentry's development tooling, never in a service image: the local stack (`make run`), the pytest plugin, and
the NATS permission table the launcher and the deploy files are generated from."""
