"""The one local Ray cluster (two node processes) the Ray tests of this folder share, started on first use
and stopped at the end; and the stand-ins they talk to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from ray_support import Collector, Upstream

from flashvl.deploy.cluster import LocalRayCluster as Cluster


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    # spans leave every process within 0.2 s (the OTLP batch processor's delay; default 5 s)
    with Cluster(nodes=2, cpus_per_node=2, env={"OTEL_BSP_SCHEDULE_DELAY": "200"}) as cluster:
        yield cluster  # stopped whatever happens (its own processes only)


@pytest.fixture(scope="package")
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


@pytest.fixture(scope="package")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
