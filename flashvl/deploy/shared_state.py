"""What must be shared once there is more than one ingress replica (or ``flashvl serve`` process):
each process would otherwise keep its own vision cache, rate-limit counters, in-flight counts,
review queue and job queue, and a client would see a different server on each request.

``shared_state_problems`` names each setting that still points at a process-local store; a
multi-replica app is refused with those lines. A SQLite file (jobs, reviews) is shared by every
process that sees the same file: one machine, or a shared volume.
"""

from __future__ import annotations

from flashvl.config import Settings


def _max(spec: str) -> int:
    low, _, high = spec.partition("-")
    return int(high or low)


def shared_state_problems(settings: Settings) -> list[str]:
    """One line per setting that must point at shared state (Redis) for ``ingress_replicas``."""
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
    if settings.review_store == "memory":
        problems.append(
            f"--review-store memory is per process; with --ingress-replicas {n} use --review-store sqlite "
            "--review-sqlite-path on a volume every replica mounts"
        )
    return problems
