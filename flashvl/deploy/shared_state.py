"""What must be shared once there is more than one ingress replica (or ``flashvl serve`` process):
each process would otherwise keep its own vision cache, rate-limit counters, in-flight counts,
model queue, review queue and job queue, and a client would see a different server on each request.

``shared_state_problems`` names each setting that still points at a process-local store; a
multi-replica app is refused with those lines. A SQLite file (jobs, reviews) is shared by every
process that sees the same file: one machine, or a shared volume. So it is named only when the
cluster is known to span machines (``machines`` > 1: Ray nodes on distinct hosts; several nodes on
one host share its files); ``shared_state_notes`` says it otherwise.
"""

from __future__ import annotations

from flashvl.config import Settings


def _max(spec: str) -> int:
    low, _, high = spec.partition("-")
    return int(high or low)


def shared_state_problems(settings: Settings, machines: int | None = None) -> list[str]:
    """One line per setting that must point at shared state (Redis) for ``ingress_replicas``;
    ``machines``: the hosts of the Ray cluster when known (more than one: a SQLite file is not shared)."""
    if _max(settings.ingress_replicas) <= 1:
        return []
    n = settings.ingress_replicas
    problems = []
    if settings.vision_cache.startswith("memory"):
        problems.append(
            f"--vision-cache {settings.vision_cache} is per process; with --ingress-replicas {n} use "
            "--vision-cache redis --vision-cache-redis-url redis://HOST:6379/0 (or --vision-cache none)"
        )
    limits_on = bool(settings.rate_limit_per_key or settings.rate_limit_per_ip)
    caps_on = bool(settings.concurrency_per_key or settings.concurrency_per_ip)
    if (limits_on or caps_on) and not settings.rate_limit_storage.startswith("redis"):
        problems.append(
            f"--rate-limit-storage {settings.rate_limit_storage} is per process; with --ingress-replicas {n} use "
            "--rate-limit-storage redis://HOST:6379/1 (rate limits and in-flight caps are counted there), or turn "
            "them off (--rate-limit-per-key '' --rate-limit-per-ip '' --concurrency-per-key 0 --concurrency-per-ip 0)"
        )
    if not settings.model_queue_redis_url:
        problems.append(
            f"the model queue (--model-max-concurrent {settings.model_max_concurrent}, --model-max-queue "
            f"{settings.model_max_queue}) is per process; with --ingress-replicas {n} use "
            "--model-queue-redis-url redis://HOST:6379/3 (one queue and one limit for every replica)"
        )
    if settings.review_store == "memory":
        problems.append(
            f"--review-store memory is per process; with --ingress-replicas {n} use --review-store redis "
            "--review-redis-url redis://HOST:6379/4 (or --review-store sqlite with --review-sqlite-path on a "
            "volume every replica mounts, one machine)"
        )
    if machines is not None and machines > 1:
        problems += _sqlite_lines(settings, f"this Ray cluster spans {machines} machines")
    return problems


def shared_state_notes(settings: Settings) -> list[str]:
    """Lines to log (not refusals) when the cluster's size is not known: a SQLite file is shared
    only by replicas on one machine (or one shared volume)."""
    if _max(settings.ingress_replicas) <= 1:
        return []
    return _sqlite_lines(settings, "if the replicas run on more than one machine")


def _sqlite_lines(settings: Settings, where: str) -> list[str]:
    lines = []
    if settings.review_store == "sqlite":
        lines.append(
            f"--review-store sqlite shares {settings.review_sqlite_path} with the replicas on one machine only; "
            f"{where}, use --review-store redis --review-redis-url redis://HOST:6379/4 (or a volume every "
            "replica mounts)"
        )
    if settings.jobs_store == "sqlite":
        lines.append(
            f"--jobs-store sqlite shares {settings.jobs_sqlite_path} with the replicas on one machine only; "
            f"{where}, use --jobs-store redis --jobs-redis-url redis://HOST:6379/2 (or a volume every replica mounts)"
        )
    return lines
