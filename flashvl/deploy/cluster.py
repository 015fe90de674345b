"""A real local Ray cluster for tests and benchmarks: ``ray start --head`` plus more node processes
(``ray start --address``) on this machine, then ``ray stop --force``. Not ``local_mode``: every
replica is its own worker process, scheduled across the nodes as on a real cluster.

Each node declares ``cpus_per_node`` logical CPUs (fractions of which each replica reserves); the
machine's real cores are shared by all of them. The cluster uses Ray's token authentication with a
fresh token of its own (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), set for its node processes,
for this process while it runs, and in ``env`` for any other process that should connect.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from flashvl.testing import free_port

RAY = str(Path(sys.executable).parent / "ray")
FAST_METRICS = {  # Serve's autoscaling metrics every 0.5 s instead of 10 s
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_USAGE_STATS_ENABLED": "0",
    # One HTTP proxy (HeadOnly) spreads requests over ingress replicas on every node, as a balancer in
    # front of per-node proxies would (by default a proxy prefers the replicas on its own node).
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
}


class LocalRayCluster:
    def __init__(self, nodes: int = 2, cpus_per_node: int = 2, env: dict[str, str] | None = None) -> None:
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.http_port = free_port()  # Serve's HTTP proxy: fixed for the cluster's life
        self.temp = tempfile.mkdtemp(prefix="fvr", dir="/tmp")  # short: Ray's socket paths have a limit
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, **FAST_METRICS, **self.auth, **(env or {})}
        self._saved_env: dict[str, str | None] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 120) -> None:
        """Start the nodes, connect this process, start Serve's HTTP proxy on ``http_port``."""
        import ray
        from ray import serve

        common = ["--num-cpus", str(self.cpus_per_node), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        head = [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", self.temp]
        self._saved_env = {key: os.environ.get(key) for key in self.auth}
        os.environ.update(self.auth)  # this process connects with the same token
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")  # Ray reads the auth mode once per process: read it again
        self._ray_start([*head, *common], timeout_s)
        for _ in range(self.nodes - 1):
            self._ray_start([RAY, "start", "--address", self.address, *common], timeout_s)
        ray.init(address=self.address, namespace="flashvl-local", log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) != self.nodes:
            raise RuntimeError(f"{len(alive)} of {self.nodes} Ray nodes came up")
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": self.http_port})

    def _ray_start(self, command: list[str], timeout_s: float) -> None:
        done = subprocess.run(command, env=self.env, timeout=timeout_s, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[1:3])} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )

    def stop(self) -> None:
        """Disconnect and stop every Ray process of this machine (``ray stop --force``)."""
        import ray

        try:
            ray.shutdown()
        finally:
            subprocess.run([RAY, "stop", "--force"], env=self.env, timeout=120, capture_output=True)
            shutil.rmtree(self.temp, ignore_errors=True)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
