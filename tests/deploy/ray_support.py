"""What the tests on a real local Ray cluster share: a stand-in OpenAI-compatible upstream, an OTLP
collector, deploying from this driver, and the checks on the cluster's listening ports."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from flashvl.config import Settings
from flashvl.deploy.cluster import LocalRayCluster as Cluster

ANSWER = "The person in the photo is an astronaut."
UPSTREAM_EVENTS: list[tuple[str, float]] = []
LIGHT = [
    "--router", "rules", "--no-arbitration", "--no-disclaimers", "--vision-num-cpus", "0.5",
    "--ingress-num-cpus", "0.25", "--language-num-cpus", "0.25", "--vision-threads", "1",
]  # fmt: skip


class Upstream(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat server (streamed answers), standing in for vLLM/llama.cpp."""

    def do_POST(self) -> None:
        prompt = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        slow = b"SLOWLY" in prompt  # 100 pieces, 0.1 s apart: the client-goes-away check
        words = ANSWER.split(" ") * (13 if slow else 1)
        try:
            for i, word in enumerate(words):
                chunk = {"choices": [{"index": 0, "delta": {"content": word + (" " if i < len(words) - 1 else "")}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.1 if slow else 0.01)
        except (BrokenPipeError, ConnectionResetError):
            UPSTREAM_EVENTS.append(("closed", time.monotonic()))  # the generation was stopped
            return
        if slow:
            UPSTREAM_EVENTS.append(("finished", time.monotonic()))
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector: keeps every span it is sent (protobuf), flattened."""

    spans: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        export = ExportTraceServiceRequest()
        export.ParseFromString(self.rfile.read(int(self.headers.get("content-length", 0))))
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def images_b64(image_dir: Path) -> dict[str, str]:
    return {p.stem: base64.b64encode(p.read_bytes()).decode() for p in sorted(image_dir.glob("*.jpg"))}


def wait_ready(base: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"flashvl serve --engine ray exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready in {timeout_s:g}s:\n{log.read_text()[-4000:] if log.exists() else ''}")


def deploy_app(cluster: Cluster, **settings: Any) -> None:
    """Deploy from this driver (what ``serve run flashvl.deploy.ray:build`` does) and wait until ready."""
    from ray import serve

    from flashvl.deploy.ray import build_app

    app = build_app(Settings(**settings))
    serve.run(app, name="flashvl", route_prefix="/")
    wait_ready(cluster.base, None, Path("/nonexistent"))


def replicas_running(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications["flashvl"].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def stage_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in body["stages"] if s["name"] == name)


def check_ports_with_replicas(cluster: Cluster, replicas: int) -> None:
    """With replicas running: each Serve replica's inter-deployment gRPC server is the one port Ray
    binds on every interface (``[::]:0`` in Ray Serve 2.60, not configurable); it refuses a call
    without the cluster's token. Everything else stays on 127.0.0.1."""
    import grpc

    listeners = cluster.listeners()
    open_ = [(address, name) for address, name in listeners if not is_loopback(address)]
    assert all(name.startswith("ray::ServeRepli") for _, name in open_), open_
    assert len(open_) == replicas, open_
    for address, _ in open_:
        channel = grpc.insecure_channel(f"127.0.0.1:{address.rsplit(':', 1)[1]}")
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    print(f"\n{len(listeners)} listening sockets; on every interface only the {replicas} replicas' gRPC (token)")


def is_loopback(address: str) -> bool:
    return address.rsplit(":", 1)[0] in {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}
