"""flashvl as one Ray Serve application: an HTTP ingress (the whole FastAPI app: routes, security,
routing, cascade, arbitration) plus one deployment per stage role (vision, language, voter when
configured), each with its own replicas or autoscaling range, CPUs and GPUs.

Three ways in:

- ``flashvl serve --engine ray [--ray-address ...]`` (``launch``): deploys and serves until stopped;
- ``serve run flashvl.deploy.ray:app`` (settings from ``FLASHVL_*`` variables / ``FLASHVL_CONFIG``),
  or ``serve run flashvl.deploy.ray:build vision_replicas=2 ...`` (Serve's application builder:
  arguments are settings);
- a Serve config file / KubeRay ``RayService`` with ``import_path: flashvl.deploy.ray:app``
  (``deploy/kuberay/rayservice.yaml``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any, cast

from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from flashvl.config import Settings, load_settings
from flashvl.deploy.proxies import remote_stages
from flashvl.deploy.server import StageServer, replica_name
from flashvl.deploy.shared_state import shared_state_notes, shared_state_problems
from flashvl.deploy.tracing import ReplicaHeader, TraceRequests, configure_tracing


def replicas(spec: str, settings: Settings) -> dict[str, Any]:
    """``"2"`` -> two replicas; ``"1-4"`` -> autoscale between 1 and 4 on requests per replica."""
    low, _, high = spec.partition("-")
    if not high:
        return {"num_replicas": int(low)}
    lo, hi = int(low), int(high)
    if hi < lo or hi < 1:
        raise ValueError(f"replica range {spec!r}: write MIN-MAX with MIN <= MAX and MAX >= 1")
    upscale = settings.autoscale_upscale_delay_s
    return {
        "autoscaling_config": {
            "min_replicas": lo,
            "initial_replicas": max(lo, 1),
            "max_replicas": hi,
            "target_ongoing_requests": settings.autoscale_target_ongoing_requests,
            "upscale_delay_s": upscale,
            "downscale_delay_s": settings.autoscale_downscale_delay_s,
            # Serve averages load over this window; never longer than the delay it decides after.
            "look_back_period_s": max(1.0, min(30.0, upscale or 1.0)),
        }
    }


def max_replicas(spec: str) -> int:
    low, _, high = spec.partition("-")
    return int(high or low)


class StageReplica(StageServer):
    """A ``StageServer`` as a Serve deployment; the stage loads before the replica takes requests."""

    async def __init__(self, settings: Settings, role: str) -> None:  # type: ignore[misc]
        StageServer.__init__(self, settings, role)
        await self.start()


class Ingress:
    """The FastAPI app of ``flashvl serve``, its runtime given stand-ins that reach the stage
    deployments (``handles``), so every call is guarded here as in one process."""

    def __init__(self, settings: Settings, handles: Mapping[str, DeploymentHandle]) -> None:
        self.settings = settings
        self.handles = dict(handles)

    def __serve_build_asgi_app__(self) -> Any:
        from flashvl.api.app import create_app
        from flashvl.observability import configure_logging

        configure_logging(self.settings.log_level)
        configure_tracing(self.settings)
        app = create_app(self.settings, stages=remote_stages(self.settings, self.handles))
        app.add_middleware(TraceRequests)
        app.add_middleware(ReplicaHeader, name=replica_name())  # which ingress replica answered
        return app


# ``serve.deployment(cls)`` returns a Deployment (its annotation says a decorator).
StageDeployment = cast(Deployment, serve.deployment(StageReplica)).options(
    name="stage", max_ongoing_requests=8, health_check_period_s=2, health_check_timeout_s=30
)
IngressDeployment = cast(Deployment, serve.deployment(serve.ingress()(Ingress))).options(name="ingress")


def cluster_machines() -> int | None:
    """The distinct hosts of the connected Ray cluster's live nodes; None when not connected."""
    import ray

    if not ray.is_initialized():
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len({n.get("NodeManagerHostname") or n.get("NodeManagerAddress") for n in nodes}) or None


def build_app(settings: Settings) -> Application:
    """The Serve application for ``settings``. Refuses (ValueError naming the settings) more than
    one ingress replica on process-local state; a SQLite job or review store too when the connected
    cluster spans machines (when its size is not known, that is logged as a warning)."""
    machines = cluster_machines()
    problems = shared_state_problems(settings, machines)
    if problems:
        raise ValueError("\n".join(problems))
    if machines is None or machines == 1:  # one machine now; an autoscaling cluster may grow
        from flashvl.observability import get_logger

        for note in shared_state_notes(settings):
            get_logger("flashvl.deploy").warning("shared_state", note=note)
    handles: dict[str, Any] = {}
    vision = StageDeployment.options(
        name="vision",
        ray_actor_options={"num_cpus": settings.vision_num_cpus, "num_gpus": settings.vision_num_gpus},
        max_ongoing_requests=settings.stage_max_ongoing_requests,
        **replicas(settings.vision_replicas, settings),
    )
    handles["vision"] = vision.bind(settings, "vision")
    language_actor = {"num_cpus": settings.language_num_cpus, "num_gpus": settings.language_num_gpus}
    if settings.language != "none":
        if settings.language == settings.vision:  # one model (glm4v) serves both roles: one deployment
            handles["language"] = handles["vision"]
        else:
            language = StageDeployment.options(
                name="language",
                ray_actor_options=language_actor,
                max_ongoing_requests=settings.stage_max_ongoing_requests,
                **replicas(settings.language_replicas, settings),
            )
            handles["language"] = language.bind(settings, "language")
        voter = settings.arbitration_voter
        if settings.arbitration and voter:
            same = {settings.vision: "vision", settings.language: "language"}
            if voter in same:
                handles["voter"] = handles[same[voter]]
            else:
                handles["voter"] = StageDeployment.options(
                    name="voter",
                    ray_actor_options=language_actor,
                    max_ongoing_requests=settings.stage_max_ongoing_requests,
                    **replicas(settings.language_replicas, settings),
                ).bind(settings, "voter")
    ingress = IngressDeployment.options(
        name="ingress",
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        max_ongoing_requests=max(settings.max_connections, 64),
        **replicas(settings.ingress_replicas, settings),
    )
    return ingress.bind(settings, handles)


def build(args: dict[str, str]) -> Application:
    """Serve's application builder: ``serve run flashvl.deploy.ray:build vision_replicas=2 ...``; the
    arguments are settings (over ``FLASHVL_*`` variables and ``FLASHVL_CONFIG``)."""
    return build_app(load_settings(dict(args)))


def __getattr__(name: str) -> Any:
    """``flashvl.deploy.ray:app``: the application for the ``FLASHVL_*`` settings, built when read."""
    if name == "app":
        return build_app(load_settings())
    raise AttributeError(name)


def _local_cluster_on_loopback() -> None:
    """The local cluster ``launch`` starts is this machine's alone, on 127.0.0.1, with Ray's token
    authentication (a fresh token, known to its processes only).

    On Linux Ray gives a new node the machine's outward address and then binds its GCS, raylet and
    workers' ports on every interface; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's switch to
    take 127.0.0.1 instead (it also keeps other machines out of that cluster). One port Ray binds
    on every interface whatever the address: each Serve replica's inter-deployment gRPC server
    (``[::]:0`` in Ray Serve 2.60); the token is what guards it."""
    import secrets

    from ray._private import ray_constants
    from ray._raylet import Config  # type: ignore[attr-defined]

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the cluster's processes inherit these
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray was imported
    if not os.environ.get("RAY_AUTH_MODE"):
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
        Config.initialize("")  # Ray reads the auth mode once per process: read it again


def launch(settings: Settings) -> int:
    """``flashvl serve --engine ray``: connect to ``--ray-address`` / ``RAY_ADDRESS`` (or start a local
    cluster), deploy, print one ``ready`` line, serve until SIGINT/SIGTERM, then delete the app."""
    import ray

    from flashvl.observability import configure_logging, get_logger

    configure_logging(settings.log_level)
    log = get_logger("flashvl.deploy")
    try:
        application = build_app(settings)
    except ValueError as exc:
        print(f"flashvl: cannot deploy on Ray:\n  {str(exc).replace(chr(10), chr(10) + '  ')}", file=sys.stderr)
        return 2
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        _local_cluster_on_loopback()
    ray.init(address=address, namespace="flashvl", log_to_driver=settings.log_level == "debug")
    problems = shared_state_problems(settings, cluster_machines())  # now the cluster's hosts are known
    if problems:
        ray.shutdown()
        print(
            f"flashvl: cannot deploy on Ray:\n  {chr(10).join(problems).replace(chr(10), chr(10) + '  ')}",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(
            proxy_location=settings.ray_proxy_location,
            http_options={"host": settings.host, "port": settings.port},
        )
        serve.run(application, name=settings.ray_app_name, route_prefix="/")
        log.info(
            "ready",
            engine="ray",
            host=settings.host,
            port=settings.port,
            cluster=ray.get_runtime_context().gcs_address,
            vision_replicas=settings.vision_replicas,
            language_replicas=settings.language_replicas,
            ingress_replicas=settings.ingress_replicas,
        )
        stop.wait()
    except Exception as exc:
        log.error("startup_failed", cause=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    finally:
        try:
            serve.delete(settings.ray_app_name)
        finally:
            ray.shutdown()
    return 0


__all__ = [
    "Ingress",
    "IngressDeployment",
    "StageDeployment",
    "StageReplica",
    "build",
    "build_app",
    "cluster_machines",
    "launch",
    "max_replicas",
    "replicas",
]
