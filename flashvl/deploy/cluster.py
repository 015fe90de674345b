"""A real local Ray cluster for tests and benchmarks: ``ray start --head`` plus more node processes
(``ray start --address``) on this machine; ``stop`` ends this cluster's processes and no other. Not
``local_mode``: every replica is its own worker process, scheduled across the nodes as on a real cluster.

Each node declares ``cpus_per_node`` logical CPUs (fractions of which each replica reserves); the
machine's real cores are shared by all of them. The cluster uses Ray's token authentication with a
fresh token of its own (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), set for its node processes,
for this process while it runs, and in ``env`` for any other process that should connect.

Loopback only: every node is ``127.0.0.1``. Ray binds its servers (GCS, raylets, workers' gRPC, the
dashboard agent, the autoscaler's and dashboard's metrics, the Ray client server) to loopback when
the node's address is a loopback one, but on Linux ``ray start`` and ``ray.init`` rewrite
``127.0.0.1`` to the machine's outward address (``resolve_ip_for_localhost``) and so bind every
interface. So the nodes are started by ``ray start`` with that rewrite turned off (``RAY_START``),
and drivers (this process, and whoever uses ``env``) run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
Ray's switch that makes a driver take ``127.0.0.1`` as its own address. ``listeners()`` lists what
the cluster's processes listen on (``tests/deploy/test_ray_scaling.py`` checks: loopback only).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

from flashvl.testing import free_port

# ``ray start`` that keeps ``--node-ip-address 127.0.0.1`` (Ray 2.60 rewrites a loopback address to
# the machine's outward one, and would then bind every interface).
RAY_START = [
    sys.executable,
    "-c",
    "import sys; from ray._private import services; services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())",
    "start",
]
DRIVER_ON_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a driver's own address: 127.0.0.1
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
        # Ray's fixed metrics ports (44217, 44227) would collide with another cluster on this machine
        ports = {"AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port())}
        self.node_env = {**os.environ, **FAST_METRICS, **ports, **self.auth, **(env or {})}  # for ray start
        self.env = {**self.node_env, **DRIVER_ON_LOOPBACK}  # for drivers: flashvl serve --engine ray ...
        self._saved_env: dict[str, str | None] = {}
        self._saved_cluster_flag: bool | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 120) -> None:
        """Start the nodes, connect this process, start Serve's HTTP proxy on ``http_port``."""
        import ray
        from ray import serve
        from ray._private import ray_constants

        common = ["--num-cpus", str(self.cpus_per_node), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        head = [*RAY_START, "--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", self.temp]
        head += ["--ray-client-server-port", str(free_port()), "--dashboard-host", "127.0.0.1"]
        self._saved_env = {key: os.environ.get(key) for key in {**self.auth, **DRIVER_ON_LOOPBACK}}
        os.environ.update(self.auth)  # this process connects with the same token
        os.environ.update(DRIVER_ON_LOOPBACK)
        self._saved_cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: this process's address is 127.0.0.1 too
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")  # Ray reads the auth mode once per process: read it again
        self._ray_start([*head, *common, "--dashboard-agent-listen-port", str(free_port())], timeout_s)
        for _ in range(self.nodes - 1):
            agent = ["--dashboard-agent-listen-port", str(free_port())]  # else 52365 on every node
            self._ray_start([*RAY_START, "--address", self.address, *common, *agent], timeout_s)
        ray.init(address=self.address, namespace="flashvl-local", log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        if len(alive) != self.nodes:
            raise RuntimeError(f"{len(alive)} of {self.nodes} Ray nodes came up")
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": self.http_port})

    def _ray_start(self, command: list[str], timeout_s: float) -> None:
        done = subprocess.run(command, env=self.node_env, timeout=timeout_s, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"ray {' '.join(command[4:6])} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )

    def _pids(self) -> set[int]:
        """This cluster's processes: its nodes (found by the cluster's own temp dir or GCS port), the Ray
        client server, and all their descendants (raylets' workers, agents, Serve's actors)."""
        import psutil

        found: set[int] = set()
        marks = (self.temp, f"127.0.0.1:{self.port}")
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if proc.pid != os.getpid() and any(mark in cmdline for mark in marks):
                found.add(proc.pid)
                with contextlib.suppress(psutil.Error):
                    found.update(child.pid for child in proc.children(recursive=True))
        return found

    def listeners(self) -> list[tuple[str, str]]:
        """(address, process) of every TCP socket this cluster's processes listen on (``ss -ltnp``)."""
        pids = {str(pid) for pid in self._pids() | {os.getpid()}}  # and this driver
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            owners = set(re.findall(r"pid=(\d+)", line))
            if len(fields) >= 4 and owners & pids:
                name = re.search(r'\(\("([^"]+)"', line)
                found.append((fields[3], name.group(1) if name else "?"))
        return found

    def stop(self, grace_s: float = 10) -> None:
        """Disconnect and stop this cluster's processes, and only them (not ``ray stop``, which stops every
        Ray cluster of the machine: another user's, another test's)."""
        import psutil
        import ray

        try:
            ray.shutdown()
        finally:
            procs = []
            for pid in self._pids():
                with contextlib.suppress(psutil.Error):
                    procs.append(psutil.Process(pid))
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            _, alive = psutil.wait_procs(procs, timeout=grace_s)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=grace_s)
            shutil.rmtree(self.temp, ignore_errors=True)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if self._saved_cluster_flag is not None:
                from ray._private import ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = self._saved_cluster_flag

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
