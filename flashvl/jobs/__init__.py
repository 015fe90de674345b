"""Durable batch jobs: a queue behind one interface (SQLite default, Redis when configured), workers
that take items in micro-batches, retries with backoff then parking, and JSONL/CSV export."""
