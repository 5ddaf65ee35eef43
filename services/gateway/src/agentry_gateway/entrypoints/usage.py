"""Usage analytics and low-balance alerts for owners — answered by the billing service, which keeps the usage
projection in the same transactions as the charges it reports."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import ErrorBody, ValidationFailed
from agentry_common.usage_requests import (
    MAX_BUCKETS,
    BalanceAlerts,
    GetBalanceAlerts,
    GetUsage,
    Granularity,
    GroupBy,
    SetBalanceAlerts,
    UsageReport,
)

from ..schemas import BalanceAlertsBody
from .deps import CurrentUser, GatewayDep

router = APIRouter(prefix="/api", tags=["usage"], responses=ERROR_RESPONSES)

DEFAULT_DAYS = 30
CSV_COLUMNS = [
    "start", "endpoint_id", "key_id", "runs", "succeeded", "failed", "tokens_input", "tokens_output", "cost_cents",
    "charged_cents", "uncollected_cents", "latency_ms_p50", "latency_ms_p95",
]  # fmt: skip
FROM_DOC = "ISO 8601 date or date-time (inclusive; UTC unless it has an offset); default 30 days before `to`."
TO_DOC = "ISO 8601 date-time (exclusive) or date (that whole day included); default now."
FROM_DOC = "ISO 8601 date or date-time (inclusive; UTC unless it has an offset); default 30 days before `to`."
TO_DOC = "ISO 8601 date-time (exclusive) or date (that whole day included); default now."
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def _parse(name: str, value: str | None, end_of_day: bool) -> datetime | None:
    """An ISO 8601 date or date-time; a date alone is midnight UTC (`to`: the end of that day, so the day is
    included); a date-time without an offset is UTC."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return at + timedelta(days=1) if end_of_day else at
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{name}: not an ISO 8601 date or date-time", code="invalid_date") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _truncate(at: datetime, granularity: Granularity) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    if granularity in ("day", "month"):
        at = at.replace(hour=0)
    if granularity == "month":
        at = at.replace(day=1)
    return at


def _periods(start: datetime, end: datetime, granularity: Granularity) -> int:
    """How many buckets of the granularity the period [start, end) touches (start is truncated)."""
    if end <= start:
        return 0
    if granularity == "month":
        months = (end.year - start.year) * 12 + end.month - start.month
        return months + (1 if end > _truncate(end, "month") else 0)
    step = _STEP[granularity]
    return int(-(-(end - start) // step))


def _csv(report: UsageReport) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for bucket in report.buckets:
        row = bucket.model_dump(mode="json")
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return out.getvalue()


_USAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Buckets (non-empty ones only, oldest first) and totals; with `format=csv` or "
        "`Accept: text/csv`, the buckets as CSV (header row, one line per bucket, empty cells for null).",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
    422: {
        "model": ErrorBody,
        "description": "`invalid_date` (not ISO 8601), `invalid_range` (`from` after `to`), `too_many_buckets` "
        f"(more than {MAX_BUCKETS:,} buckets), or `validation_error` (an unknown `granularity`/`group_by`)",
    },
}


@router.get("/usage", responses=_USAGE_RESPONSES, response_model=UsageReport)
async def usage(
    user: CurrentUser,
    gw: GatewayDep,
    from_: Annotated[str | None, Query(alias="from", max_length=40, description=FROM_DOC)] = None,
    to: Annotated[str | None, Query(max_length=40, description=TO_DOC)] = None,
    granularity: Annotated[Granularity, Query(description="Bucket size (UTC hours, days, months).")] = "day",
    group_by: Annotated[
        GroupBy, Query(description="`endpoint` or `key`: one bucket per period and endpoint (or caller key).")
    ] = "none",
    endpoint_id: Annotated[
        str | None, Query(max_length=64, description="Only this endpoint; another owner's endpoint answers no buckets.")
    ] = None,
    key_id: Annotated[str | None, Query(max_length=64, description="Only runs called with this API key.")] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$", description="`csv` for CSV.")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """Runs, tokens, cost and money per hour, day or month, from a projection kept with the ledger: the counters
    agree with run history and with the charges of `GET /api/balance/transactions` to the cent. Latency
    percentiles come from a fixed-bucket histogram (within 12.5% of the exact value)."""
    end = _parse("to", to, end_of_day=True) or datetime.now(UTC)
    begin = _parse("from", from_, end_of_day=False) or end - timedelta(days=DEFAULT_DAYS)
    if begin > end:
        raise ValidationFailed("from: must not be after `to`", code="invalid_range")
    start = _truncate(begin, granularity)
    if _periods(start, end, granularity) > MAX_BUCKETS:
        raise ValidationFailed(
            f"more than {MAX_BUCKETS:,} {granularity} buckets: narrow the period or coarsen the granularity",
            code="too_many_buckets",
        )
    cmd = GetUsage(owner_id=user.id, start=start, end=end, granularity=granularity, group_by=group_by,
                   endpoint_id=endpoint_id, key_id=key_id)  # fmt: skip
    report: UsageReport = await rpc.call(
        gw.nc, subjects.WALLET_USAGE, cmd, UsageReport, timeout=gw.settings.rpc_timeout_s,
        unavailable="billing is unavailable",
    )  # fmt: skip
    if format == "csv" or (format is None and accept is not None and "text/csv" in accept):
        headers = {"Content-Disposition": 'attachment; filename="usage.csv"'}
        return Response(_csv(report), media_type="text/csv", headers=headers)
    return report


@router.get("/balance/alerts")
async def get_alerts(user: CurrentUser, gw: GatewayDep) -> BalanceAlerts:
    """The owner's low-balance threshold (null: none)."""
    result: BalanceAlerts = await rpc.call(
        gw.nc, subjects.WALLET_ALERTS_GET, GetBalanceAlerts(owner_id=user.id), BalanceAlerts,
        timeout=gw.settings.rpc_timeout_s, unavailable="billing is unavailable",
    )  # fmt: skip
    return result


@router.put("/balance/alerts")
async def set_alerts(body: BalanceAlertsBody, user: CurrentUser, gw: GatewayDep) -> BalanceAlerts:
    """Set (or clear, with null) the low-balance threshold: a `balance.low` webhook is sent once each time a
    charge takes the balance below it; a credit that lifts the balance back to it or above re-arms it. Set while
    the balance is already below, it first fires after the balance has been back up."""
    cmd = SetBalanceAlerts(owner_id=user.id, low_balance_cents=body.low_balance_cents)
    result: BalanceAlerts = await rpc.call(
        gw.nc, subjects.WALLET_ALERTS_SET, cmd, BalanceAlerts, timeout=gw.settings.rpc_timeout_s,
        unavailable="billing is unavailable",
    )  # fmt: skip
    return result
