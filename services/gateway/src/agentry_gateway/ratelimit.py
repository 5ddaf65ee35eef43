"""Rate limits for runs (issue #6 makes them exact across replicas). Call sites pass the scope and key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class Limits:
    """Placeholder until the shared limiter lands: admits every run and reports the configured limit."""

    def __init__(self, per_endpoint: int = 60, per_ip: int = 20, test_runs: int = 10):
        self.per_endpoint = per_endpoint
        self.per_ip = per_ip
        self.test_runs = test_runs

    async def admit_run(self, endpoint_id: str, public: bool, client_ip: str) -> Decision:
        return Decision(self.per_endpoint, self.per_endpoint, 60)

    async def admit_test(self, endpoint_id: str) -> Decision:
        return Decision(self.test_runs, self.test_runs, 60)
