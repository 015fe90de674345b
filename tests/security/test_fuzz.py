"""Schemathesis against the served OpenAPI spec of a real server process: >= 5,000 cases, zero 5xx.

The server runs the vision stage only (``--language none``), with an API key (the fuzzer
sends it, so requests reach the handlers) and ``fetch_allow_hosts`` set to a name nobody
generates, so generated image URLs are refused before any DNS lookup: no traffic leaves loopback.
Positive and negative data are both generated for every operation.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from flashvl.security.auth import hash_key, new_key
from tests.servers import start_server, stop_server

KEY = new_key()
TOTAL_CASES = int(os.environ.get("FLASHVL_FUZZ_CASES", "5000"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    proc, base = start_server(
        [
            "--language",
            "none",
            "--api-keys",
            f"fuzz:infer+batch+review:{hash_key(KEY)}",  # every route's scope, so requests reach the handlers
            "--fetch-allow-hosts",
            "images.fuzz.invalid",
            "--rate-limit-per-key",
            "",
            "--rate-limit-per-ip",
            "",
            "--model-max-queue",
            "256",
            "--max-image-bytes",
            str(2 * 1024 * 1024),
        ],
        log,
    )
    yield base, log
    stop_server(proc)


def test_fuzz_openapi_no_server_errors(fuzz_server: tuple[str, Path]) -> None:
    base, log = fuzz_server
    headers = {"Authorization": f"Bearer {KEY}"}
    spec = httpx.get(f"{base}/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    # Operations without parameters or body have one possible request: a few each; the rest share the budget.
    heavy = [op for op in operations if op.definition.raw.get("requestBody") or op.definition.raw.get("parameters")]
    per_heavy = int((TOTAL_CASES - 5 * len(operations)) / (2 * len(heavy)) * 1.35) + 1
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    session = requests.Session()

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(
                max_examples=per_heavy if operation in heavy else 5,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=base, session=session, headers=headers, timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")

            try:
                run()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs
                continue
    total = sum(statuses.values())
    print(f"fuzz: {total} cases over {len(operations)} operations; statuses {dict(sorted(statuses.items()))}")
    assert not server_errors, server_errors[:10]
    assert total >= TOTAL_CASES  # the budget has headroom: hypothesis stops early on small input spaces
    assert '"unhandled_error"' not in log.read_text()
