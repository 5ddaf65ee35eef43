"""Executing one run: secrets, tools and the agent loop within the run's deadline, to a `RunOutcome`.

Whatever happens to the run itself (a timeout, a provider error, a broken tool server) becomes its outcome;
only an outage of a backing service (`ServiceUnavailable`) is raised, so the run is delivered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from nats.aio.client import Client as Nats

from agentry_common import subjects
from agentry_common.errors import AgentryError, ServiceUnavailable
from agentry_common.events import EndpointSnapshot, ProgressData, RunRequested, progress_of
from agentry_common.secrets import SecretCache

from . import credentials, metrics, outcome
from .agent import Agent, Emit, RunState
from .clients import HttpClients, connection
from .outcome import RunOutcome, RunStart, now
from .pricing import cost_cents
from .providers import PROVIDERS, ProviderFailed
from .settings import Settings
from .tool_cache import ToolCache
from .tools import Toolbox


def provider_label(endpoint: EndpointSnapshot) -> str:
    return endpoint.llm_provider if endpoint.llm_provider in PROVIDERS else "unknown"


class Executor:
    def __init__(self, settings: Settings, nc: Nats, clients: HttpClients, secrets: SecretCache, tool_cache: ToolCache):
        self.settings = settings
        self.nc = nc
        self.clients = clients
        self.secrets = secrets
        self.tool_cache = tool_cache

    async def execute(
        self, event: RunRequested, delivery: int, mark_running: Callable[[RunStart], Awaitable[None]]
    ) -> RunOutcome:
        """Run the agent within the deadline; its outcome, whatever it is. An async run is first marked
        `running` (with `mark_running`), so polling can show it."""
        endpoint = event.endpoint
        started = now()
        if endpoint.async_mode:
            await mark_running(outcome.start(event, delivery, started))
        # The deadline counts from the request, so a run the gateway already answered 504 ends `timeout`.
        requested = min(event.requested_at, started)
        remaining = endpoint.timeout_ms / 1000 - (started - requested).total_seconds()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + remaining
        state = RunState()
        toolbox = Toolbox(self.clients.mcp, tool_timeout_s=self.settings.tool_timeout_s, cache=self.tool_cache)
        markup = self.settings.platform_markup
        metrics.IN_FLIGHT.inc()
        try:
            async with asyncio.timeout_at(deadline) as budget:
                api_key, headers = await credentials.resolve(self.secrets, endpoint)
                await toolbox.open(
                    endpoint.servers, headers, owner_id=endpoint.owner_id, workspace_id=endpoint.workspace_id
                )
                conn = connection(self.settings, self.clients, endpoint, api_key)
                agent = Agent(PROVIDERS[endpoint.llm_provider], conn, toolbox, deadline, state, self._emitter(event))
                output = await agent.run(endpoint, event.input, event.history)
        except TimeoutError:
            if not budget.expired():
                raise
            message = f"the run did not finish within timeout_ms ({endpoint.timeout_ms} ms)"
            return outcome.finished(
                event, delivery, started, state, "timeout", markup=markup, error=("timeout", message)
            )
        except ServiceUnavailable:
            raise  # a backing service (keys) is down: infrastructure, not the run's fault → redelivery
        except AgentryError as err:
            # The record (the owner's) keeps the provider's own words, redacted; its caller gets `message` only.
            message = err.for_owner() if isinstance(err, ProviderFailed) else err.message
            return outcome.finished(event, delivery, started, state, "failed", markup=markup, error=(err.code, message))
        finally:
            toolbox.close()
            metrics.IN_FLIGHT.dec()
            self._observe(endpoint, started, state)
        return outcome.finished(event, delivery, started, state, "succeeded", markup=markup, output=output)

    def _observe(self, endpoint: EndpointSnapshot, started: datetime, state: RunState) -> None:
        provider = provider_label(endpoint)
        model = metrics.model_label(provider, endpoint.llm_model)
        metrics.RUN_SECONDS.labels(provider).observe((now() - started).total_seconds())
        metrics.TOKENS.labels(provider, model, "input").inc(state.tokens_input)
        metrics.TOKENS.labels(provider, model, "output").inc(state.tokens_output)
        cost = cost_cents(
            endpoint.llm_provider, endpoint.llm_model, state.tokens_input, state.tokens_output,
            self.settings.platform_markup,
        )  # fmt: skip
        metrics.COST_CENTS.labels(provider, model).inc(cost)
        for call in state.tool_calls:
            metrics.TOOL_CALLS.labels("error" if call.error else "ok").inc()

    def _emitter(self, event: RunRequested) -> Emit:
        """Non-terminal progress is for streaming runs only; nobody listens to it otherwise."""
        subject = subjects.run_progress(event.run_id)

        async def emit(data: ProgressData) -> None:
            if event.endpoint.enable_streaming:
                progress = progress_of(event.run_id, data)
                await self.nc.publish(subject, progress.model_dump_json().encode())

        return emit
