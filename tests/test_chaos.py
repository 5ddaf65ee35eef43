"""The smoke version of `make chaos` (tools/chaos.py): a few hundred runs while a runner and a billing process are
killed -9 and NATS and PostgreSQL restart, then ARCHITECTURE.md §5 checked in the database. Billing is in
`stripe` mode against the fake Stripe: every deposit is credited by Stripe's signed webhooks, replayed and
duplicated, in flight when billing is killed, with abandoned checkouts, a refund and a dispute.

It starts a stack of its own (its own NATS and PostgreSQL in a temporary folder): it kills and restarts servers,
which the session's shared stack must never see. A failure prints the seed; `python -m tools.chaos --seed N`
replays the same requests and schedule (the timing of a busy machine is never replayed exactly).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _chaos(**config: Any) -> dict[str, Any]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tools/ is a folder of scripts at the root, not an installed package
    from tools.chaos import Config, run_chaos, summarize

    result = run_chaos(Config(**config))
    print(summarize(result))
    return result


def test_no_accepted_run_is_lost_or_charged_twice_and_the_books_balance_through_kills_and_restarts(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("AGENTRY_CHAOS_SEED") or random.randrange(1_000_000))
    result = _chaos(
        runs=300, concurrency=16, rate=30, owners=4, runner_kills=1, billing_kills=1, deposits=10, reversals=2,
        restart_nats=True, restart_pg=True, seed=seed, data_dir=tmp_path / "chaos",
    )  # fmt: skip
    where = f"seed {seed}; data and logs in {tmp_path / 'chaos'}"
    assert result["accepted"] > 0, where
    assert (result["lost"], result["double_charges"], result["ledger_drift_cents"]) == (0, 0, 0), where
    assert result["violations"] == [], where
    # The paths under test were taken: failed and unpriced runs, test runs, money that ran out.
    assert result["runs_by_status"].get("failed", 0) > 0 and result["uncollected_charges"] > 0, where
    assert any("runner" in e for e in result["chaos"]) and any("postgres" in e for e in result["chaos"]), where
    # Money came in through Stripe: every event more than once, some of them across the billing kill.
    assert result["stripe_deposits_paid"] >= 5 and result["stripe_paid_not_credited"] == 0, where
    assert sum(result["webhook_answers"].values()) > 2 * result["webhook_events"], where
    assert result["webhooks_in_flight_at_billing_kills"] and all(result["webhooks_in_flight_at_billing_kills"]), where
