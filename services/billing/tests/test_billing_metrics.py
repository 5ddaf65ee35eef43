"""Billing's Prometheus metrics: charges, duplicates, skipped events, batch latency and consumer lag."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def test_metrics_count_charges_duplicates_skipped_events_and_consumer_lag(
    start_billing, private_consumer, events, ledger, uow, new_owner, fund
) -> None:
    replica = start_billing(CHARGE_CONSUMER=private_consumer, CONSUMER_LAG_SAMPLE_S="0.2")
    o = new_owner()
    await fund(o, 10)
    runs = [events.completed(o, price=4) for _ in range(3)]
    await events.publish([*runs, events.completed(o, price=0)])
    await events.publish([events.replay(runs[0])], fresh_msg_id=True)
    await ledger.wait_for_charges([r.run_id for r in runs])
    await events.quiescent(private_consumer)

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{replica.url}/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    charged = sum(v for (name, _), v in samples.items() if name == "agentry_billing_charges_total")
    duplicates = samples[("agentry_billing_charge_duplicates_total", ())]
    assert charged + duplicates == 4  # each delivery of a priced run was either charged or recognised
    assert samples[("agentry_billing_events_skipped_total", (("reason", "free"),))] == 1
    assert samples[("agentry_billing_charge_batch_seconds_count", ())] >= 1
    assert ("agentry_billing_consumer_pending", ()) in samples
