"""The modest version of `make fuzz` (tools/fuzz.py): schemathesis over the gateway's `/openapi.json` on the
session's stack — every route, with a valid JWT, an admin JWT and an endpoint API key supplied, real ids mixed
with generated ones, valid and invalid data. No 5xx, no body that breaks its declared schema, no content type
other than the declared one, no invalid data accepted. The fuzzing user is fresh, so other tests are untouched
(its endpoints' slugs are global, but no later test asks for a fixed slug).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agentry_dev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("AGENTRY_FUZZ_EXAMPLES", "40"))  # per operation; `make fuzz` uses 300


def _fuzz_tool() -> ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tools/ is a folder of scripts at the root, not an installed package
    from tools import fuzz

    return fuzz


@pytest.mark.timeout(600)
def test_fuzzing_every_route_with_valid_credentials_finds_no_server_error_and_no_schema_violation(
    stack: Stack, gateway_url: str
) -> None:
    fuzz = _fuzz_tool()
    report = fuzz.fuzz(gateway_url, fuzz.provision(gateway_url), EXAMPLES)
    print(fuzz.summarize(report))
    assert len(report.by_operation) >= 20, report.by_operation  # every route was reached
    assert report.by_status[200] > 0 and report.by_status[201] > 0 and report.by_status[422] > 0, report.by_status
    assert report.server_errors == 0 and report.transport_errors == 0, fuzz.summarize(report)
    assert report.failures == {}, fuzz.summarize(report)
