"""One typed settings object; every field is a CLI flag and a ``FLASHVL_*`` variable.

Precedence, highest first: command-line flag, environment variable, config file
(``--config`` / ``FLASHVL_CONFIG``, TOML or JSON), default. ``flashvl serve --help``
is generated from the field descriptions below, so the code is the documentation.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

CommaList = Annotated[list[str], NoDecode]


def _group(name: str) -> dict[str, Any]:
    return {"json_schema_extra": {"group": name}}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLASHVL_", extra="forbid", validate_default=True)

    # --- server
    host: str = Field("127.0.0.1", description="Address to bind.", **_group("server"))
    port: int = Field(8080, ge=0, le=65535, description="Port to bind (0 picks a free one).", **_group("server"))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level: debug, info, warning, error.", **_group("server")
    )
    log_payloads: bool = Field(
        False,
        description="DEBUG ONLY: log prompt and answer text. Image bytes are never logged.",
        **_group("server"),
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Upper bound on one request's total time.", **_group("server")
    )

    body_read_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest time a request body may take to arrive in full (408 request_body_timeout).",
        **_group("server"),
    )
    body_min_bytes_per_s: int = Field(
        1024,
        ge=0,
        description="Slowest body upload accepted after a 5 s grace, in bytes per second (0: no floor).",
        **_group("server"),
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a connection has to send a complete request head (idle and half-open sockets close).",
        **_group("server"),
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request head (request line and headers), bytes.", **_group("server")
    )
    max_header_count: int = Field(100, ge=8, description="Most request headers on one request.", **_group("server"))
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="Idle keep-alive connections close after this many seconds.", **_group("server")
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Open connections the server holds at once; beyond it new requests get 503.",
        **_group("server"),
    )

    # --- media intake
    max_image_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest encoded image accepted (bytes).", **_group("media")
    )
    max_image_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Largest image accepted, width*height, read from the header before decoding.",
        **_group("media"),
    )
    max_image_metadata_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest amount of metadata (EXIF, comments, PNG text, ICC) an image may carry.",
        **_group("media"),
    )
    max_images_per_request: int = Field(4, ge=1, description="Images per request.", **_group("media"))
    max_decoded_image_bytes: int = Field(
        192 * 1024 * 1024,
        gt=0,
        description="Largest decoded image in memory: width*height*bytes per pixel of its mode (16-bit, alpha "
        "count), read from the header before decoding.",
        **_group("media"),
    )
    max_image_aspect_ratio: float = Field(
        50.0,
        ge=1,
        description="Longest side / shortest side accepted (strips more extreme than this are refused).",
        **_group("media"),
    )
    allowed_formats: CommaList = Field(
        ["JPEG", "PNG", "WEBP", "BMP", "GIF"],
        description="Accepted image formats (GIF: first frame).",
        **_group("media"),
    )
    fetch_timeout_s: float = Field(
        15.0, gt=0, description="Total time allowed to download one image URL.", **_group("media")
    )
    fetch_connect_timeout_s: float = Field(
        5.0, gt=0, description="Time allowed to connect to an image URL's host.", **_group("media")
    )
    fetch_max_redirects: int = Field(
        3, ge=0, le=10, description="Redirects followed per image URL (each one re-validated).", **_group("media")
    )
    fetch_allow_cidrs: CommaList = Field(
        [],
        description=(
            "Networks that image URLs may reach although they are loopback/private "
            "(e.g. 127.0.0.1/32,10.1.0.0/16). Empty: only public addresses."
        ),
        **_group("media"),
    )
    fetch_allow_hosts: CommaList = Field(
        [],
        description="If set, image URLs may only name these hosts (exact, or '.example.com' for subdomains).",
        **_group("media"),
    )
    file_root: Path | None = Field(
        None, description="Folder that file:// image URLs may read from. Unset: file:// refused.", **_group("media")
    )

    # --- stages
    vision: str = Field(
        "offline",
        description=(
            "Vision stage: 'offline' (the offline pipeline, not a VLM); 'glm4v:<folder or hub id>' "
            "(GLM-4.6V-Flash in-process, extra 'glm'); 'openai:<base_url>#<model>' (any OpenAI-compatible "
            "server: vLLM, SGLang, llama.cpp, Ollama, another flashvl). The same glm4v spec given for "
            "--vision and --language shares one model."
        ),
        **_group("stages"),
    )
    language: str = Field(
        "llamacpp",
        description=(
            "Language stage: 'llamacpp' (offline brain), 'none', 'glm4v:<folder or hub id>' or "
            "'openai:<base_url>#<model>' (e.g. openai:http://127.0.0.1:8000/v1#glm-4.6v-flash)."
        ),
        **_group("stages"),
    )
    model_dir: Path = Field(
        Path(os.path.expanduser("~/.cache/flashvl/models")),
        description="Where assembled model files are cached.",
        **_group("stages"),
    )
    language_model_path: Path | None = Field(
        None, description="A GGUF file to use instead of the bundled Qwen2.5-Coder-1.5B.", **_group("stages")
    )
    language_slots: int = Field(
        2, ge=1, le=16, description="llama.cpp parallel slots (continuous batching).", **_group("stages")
    )
    language_ctx: int = Field(
        8192, ge=512, description="llama.cpp context size, shared by all slots.", **_group("stages")
    )
    language_threads: int = Field(
        0, ge=0, description="CPU threads for the language stage (0: all cores).", **_group("stages")
    )
    language_prompt_cache_mib: int = Field(
        256,
        ge=0,
        description=(
            "llama.cpp's prompt cache in RAM (MiB): a follow-up question about an image reuses its "
            "instructions + observations prefix even after other users' requests took the slots (0: off)."
        ),
        **_group("stages"),
    )
    language_slot_affinity: bool = Field(
        True,
        description=(
            "Keep questions about one image on one llama.cpp slot (the least recently used idle slot for a new "
            "image), so its prompt survives --language-slots minus 1 other images' requests in between."
        ),
        **_group("stages"),
    )
    language_draft: bool = Field(
        False,
        description=(
            "Speculative decoding with the bundled Qwen2.5-Coder-0.5B as draft model (greedy text unchanged; "
            "off by default: measured slower than plain decoding on 2 CPU cores, bench/speculative.py)."
        ),
        **_group("stages"),
    )
    language_draft_max: int = Field(
        8, ge=1, le=64, description="Draft tokens proposed per step when --language-draft is on.", **_group("stages")
    )
    max_tokens: int = Field(256, ge=1, le=4096, description="Default answer length cap (tokens).", **_group("stages"))
    max_tokens_limit: int = Field(
        1024, ge=1, description="Largest max_tokens a request may ask for.", **_group("stages")
    )
    temperature: float = Field(0.2, ge=0, le=2, description="Default sampling temperature.", **_group("stages"))
    ocr_min_text_score: float = Field(
        0.5, ge=0, le=1, description="OCR lines below this confidence are dropped.", **_group("stages")
    )
    vision_max_pixels: int = Field(
        4_194_304,
        ge=65_536,
        description="Images are downscaled to at most this many pixels before analysis (boxes map back).",
        **_group("stages"),
    )
    vision_threads: int = Field(
        0, ge=0, description="ONNX Runtime threads per vision model (0: all cores).", **_group("stages")
    )
    safety_unsafe_threshold: float = Field(
        0.8, ge=0, le=1, description="Open-NSFW score above which an image is called unsafe.", **_group("stages")
    )
    safety_safe_threshold: float = Field(
        0.2, ge=0, le=1, description="Open-NSFW score below which an image is called safe.", **_group("stages")
    )

    # --- engines (GLM in-process, OpenAI-compatible upstreams; flashvl/stages/glm4v, openai_compat/)
    batch_max_size: int = Field(
        8,
        ge=1,
        le=64,
        description="In-process VLM: most requests generated together in one batch.",
        **_group("engines"),
    )
    batch_continuous: bool = Field(
        True,
        description="In-process VLM: continuous batching (a request joins the running batch between decode steps "
        "and leaves it when done) instead of static batches (a request that arrives waits for the whole batch).",
        **_group("engines"),
    )
    batch_prepare_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="In-process VLM: threads preprocessing images (chat template, resize, patches) side by side, "
        "one torch thread each (0: every usable core, at least 2, at most 8).",
        **_group("engines"),
    )
    batch_wait_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description="In-process VLM: how long the first request of a batch waits for others already on their "
        "way (being preprocessed, or the last batch's clients); a lone request never waits.",
        **_group("engines"),
    )
    glm_device: str = Field(
        "auto", description="GLM device: auto (cuda if available, else cpu), cpu, cuda, cuda:N.", **_group("engines")
    )
    glm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="GLM dtype: auto (CUDA bf16, fp16 where bf16 is missing; CPU fp32), bfloat16, float16, float32.",
        **_group("engines"),
    )
    glm_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="GLM: torch intra-op threads of the generating thread (0: OMP_NUM_THREADS if set, else every "
        "usable core); preprocessing threads use one each.",
        **_group("engines"),
    )
    glm_max_pixels: int = Field(
        1_003_520,
        ge=12_544,
        description="GLM: images are downscaled to at most this many pixels (1 token per 28x28); "
        "a request's max_pixels may lower it.",
        **_group("engines"),
    )
    glm_top_p: float = Field(
        0.6, gt=0, le=1, description="GLM: top-p when sampling (temperature > 0).", **_group("engines")
    )
    glm_allow_download: bool = Field(
        False,
        description="GLM: allow fetching a hub id's weights (off: a local folder or the local hub cache).",
        **_group("engines"),
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="Bearer key for openai: stages (prefer the env var; never logged).", **_group("engines")
    )
    upstream_timeout_s: float = Field(
        60.0,
        gt=0,
        description="openai: stages: time allowed between bytes of an upstream answer.",
        **_group("engines"),
    )
    upstream_connect_timeout_s: float = Field(
        5.0, gt=0, description="openai: stages: time allowed to connect to the upstream.", **_group("engines")
    )
    upstream_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="openai: stages: retries (exponential backoff) before the first byte of an answer.",
        **_group("engines"),
    )
    upstream_image_mode: Literal["base64", "url"] = Field(
        "base64",
        description="openai: stages: send images as base64 data URLs, or as their original http(s) URL "
        "when they came from one.",
        **_group("engines"),
    )
    upstream_thinking_kwarg: bool = Field(
        True,
        description="openai: stages: send chat_template_kwargs.enable_thinking (GLM on vLLM/SGLang).",
        **_group("engines"),
    )

    # --- moderation, documents, batch jobs
    moderation_review_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Category score from which /moderate reports it and suggests review.",
        **_group("moderation"),
    )
    moderation_block_threshold: float = Field(
        0.85,
        ge=0,
        le=1,
        description="Category score from which /moderate suggests block.",
        **_group("moderation"),
    )
    moderation_language: Literal["always", "text", "never"] = Field(
        "text",
        description="When /moderate asks the language stage for a verdict: 'always', 'text' (only when OCR "
        "found text) or 'never'.",
        **_group("moderation"),
    )
    moderation_language_weight: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Score a category gets from the language stage's verdict alone.",
        **_group("moderation"),
    )
    document_schema_max_bytes: int = Field(
        8192,
        ge=64,
        description="Largest caller JSON schema accepted for key-field extraction (bytes).",
        **_group("moderation"),
    )
    document_schema_max_depth: int = Field(
        5,
        ge=1,
        le=16,
        description="Deepest nesting of a caller JSON schema for key-field extraction.",
        **_group("moderation"),
    )
    jobs_store: Literal["sqlite", "redis"] = Field(
        "sqlite",
        description="Batch job queue: 'sqlite' (a local file) or 'redis' (needs --jobs-redis-url).",
        **_group("jobs"),
    )
    jobs_sqlite_path: Path = Field(
        Path(os.path.expanduser("~/.cache/flashvl/jobs.sqlite3")),
        description="SQLite file of the job queue.",
        **_group("jobs"),
    )
    jobs_redis_url: str = Field("", description="Redis URL of the job queue (redis://host:port/db).", **_group("jobs"))
    jobs_batch_size: int = Field(8, ge=1, le=256, description="Items a worker takes per micro-batch.", **_group("jobs"))
    jobs_max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per item before it is parked with its error.", **_group("jobs")
    )
    jobs_backoff_s: float = Field(
        2.0, ge=0, description="First retry delay; doubles per attempt (capped at 5 min).", **_group("jobs")
    )
    jobs_lease_s: float = Field(
        300.0,
        gt=0,
        description="A taken item returns to the queue if not finished within this.",
        **_group("jobs"),
    )
    jobs_worker: bool = Field(
        True, description="Run a job worker in the server (resumes open jobs at start).", **_group("jobs")
    )

    # --- knowledge base (flashvl/kb/)
    kb_store: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Knowledge-base store: sqlite (embedded, one file) or postgres (a server several instances share).",
        **_group("kb"),
    )
    kb_sqlite_path: Path = Field(
        Path(os.path.expanduser("~/.cache/flashvl/kb.sqlite3")),
        description="SQLite file of the knowledge base.",
        **_group("kb"),
    )
    kb_postgres_dsn: str = Field(
        "",
        description="PostgreSQL connection string of the knowledge base (postgresql://user@host:port/db).",
        **_group("kb"),
    )
    kb_max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest image or PDF the knowledge base indexes (bytes).", **_group("kb")
    )
    kb_pdf_max_pages: int = Field(200, ge=1, description="A PDF with more pages is refused.", **_group("kb"))
    kb_pdf_max_pixels: int = Field(
        4_000_000,
        ge=65_536,
        description="Pixel budget of one rendered PDF page (rendered at 144 dpi or less).",
        **_group("kb"),
    )
    kb_describe: bool = Field(
        True, description="Store the vision stage's description of each page beside its OCR text.", **_group("kb")
    )
    kb_min_similarity: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Grounded answers: a retrieved page counts as relevant only with a query-page cosine at least this "
        "(and a shared word); none relevant: the answer is declined.",
        **_group("kb"),
    )
    kb_context_chars: int = Field(
        1500,
        ge=100,
        description="Grounded answers: characters of each retrieved page given to the language stage.",
        **_group("kb"),
    )

    # --- routing, cache, arbitration, degradation (flashvl/pipeline/)
    route_default: Literal["auto", "direct", "cascade"] = Field(
        "auto",
        description="Route when a request names none: auto (ask the router), direct (vision stage alone) or cascade.",
        **_group("pipeline"),
    )
    router: Literal["classifier", "rules"] = Field(
        "classifier",
        description="Router strategy for 'auto': classifier (e5 embeddings + logistic regression) or rules (keywords).",
        **_group("pipeline"),
    )
    router_keywords_zh: CommaList = Field(
        [], description="Rules router: Chinese reasoning keywords (empty: the built-in list).", **_group("pipeline")
    )
    router_keywords_en: CommaList = Field(
        [], description="Rules router: English reasoning keywords (empty: the built-in list).", **_group("pipeline")
    )
    router_direct_without_vlm: bool = Field(
        False,
        description="Let 'auto' answer simple questions with a non-VLM vision stage's description alone "
        "(fast, but only what the detectors measured). Off: with a non-VLM, auto always cascades.",
        **_group("pipeline"),
    )
    vision_cache: Literal["memory-lru", "memory-lfu", "redis", "none"] = Field(
        "memory-lru",
        description="Cache of vision outputs keyed by image content hash + stage + model + task + parameters.",
        **_group("pipeline"),
    )
    vision_cache_size: int = Field(1024, ge=1, description="Memory cache: entries kept.", **_group("pipeline"))
    vision_cache_ttl_s: float = Field(
        3600.0, gt=0, description="Cache entries expire after this.", **_group("pipeline")
    )
    vision_cache_redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL for --vision-cache redis.", **_group("pipeline")
    )
    vision_timeout_s: float = Field(30.0, gt=0, description="Vision stage timeout per call.", **_group("pipeline"))
    language_timeout_s: float = Field(
        100.0, gt=0, description="Language stage timeout per answer (then: degraded answer).", **_group("pipeline")
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a stage's circuit breaker.", **_group("pipeline")
    )
    breaker_reset_s: float = Field(
        5.0, gt=0, description="Seconds an open breaker waits before letting one probe through.", **_group("pipeline")
    )
    arbitration: bool = Field(
        True, description="Check cascade answers against the vision stage's observations.", **_group("pipeline")
    )
    arbitration_reask: bool = Field(
        True, description="On a disagreement, ask the vision stage a targeted question first.", **_group("pipeline")
    )
    arbitration_voter: str = Field(
        "",
        description=(
            "A third stage that votes when the vision and language stages still disagree after the re-ask: "
            "a language stage spec such as 'openai:http://host:8000/v1#model' or 'llamacpp'. Empty: no vote."
        ),
        **_group("pipeline"),
    )
    arbitration_similarity_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Embedding cosine under which answer and description disagree (unset: the calibrated value).",
        **_group("pipeline"),
    )
    review_max_items: int = Field(1000, ge=1, description="Flagged answers kept for /review.", **_group("pipeline"))
    review_store: Literal["sqlite", "memory", "redis"] = Field(
        "sqlite",
        description="Where /review items live: 'sqlite' (kept across restarts, shared by workers on one file), "
        "'memory', or 'redis' (shared by every process and machine on it; needs --review-redis-url).",
        **_group("pipeline"),
    )
    review_redis_url: str = Field(
        "",
        description="Redis URL of the review queue for --review-store redis (redis://host:port/db).",
        **_group("pipeline"),
    )
    review_redis_prefix: str = Field(
        "flashvl:reviews",
        min_length=1,
        description="Key prefix of the review queue in Redis; each app sharing one Redis needs its own.",
        **_group("pipeline"),
    )
    review_sqlite_path: Path = Field(
        Path(os.path.expanduser("~/.cache/flashvl/reviews.sqlite3")),
        description="SQLite file of the review queue.",
        **_group("pipeline"),
    )
    review_thumbnails: bool = Field(
        True,
        description="Keep a small thumbnail (160 px WebP, a few KB) of a flagged answer's image with its review "
        "item, for the reviewers' page; kept as long as the item. Off: the queue keeps only the image's sha256.",
        **_group("pipeline"),
    )
    disclaimers: bool = Field(
        True, description="Append a disclaimer to medical, financial and legal answers.", **_group("pipeline")
    )
    tools: bool = Field(
        True,
        description=(
            "Let the cascade's language stage use exact tools (calculator, equation solver, table queries, "
            "Python check) when the question asks for them (flashvl/tools/)."
        ),
        **_group("pipeline"),
    )
    tool_timeout_s: float = Field(3.0, gt=0, description="Seconds one tool call may take.", **_group("pipeline"))
    disclaimer_zh: str = Field("AI辅助建议，仅供参考", description="The Chinese disclaimer.", **_group("pipeline"))
    disclaimer_en: str = Field(
        "AI-assisted suggestion, for reference only", description="The English disclaimer.", **_group("pipeline")
    )

    # --- observability
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.", **_group("server"))

    # --- security (see SECURITY.md; flashvl/security/)
    api_keys: CommaList = Field(
        [],
        description=(
            "API keys as 'name:scope+scope:sha256hex' (the sha256 of the key, never the key; "
            "scopes: infer, batch, review, admin). Make one with: flashvl keys new NAME --scopes infer."
        ),
        **_group("security"),
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of API key entries, one 'name:scopes:sha256hex' a line ('#' comments).",
        **_group("security"),
    )
    jwt_secret_file: Path | None = Field(
        None, description="File holding the HS256 secret (>= 32 bytes) for JWT bearer tokens.", **_group("security")
    )
    jwt_public_key_file: Path | None = Field(
        None, description="PEM RSA public key for RS256 JWT bearer tokens.", **_group("security")
    )
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS JSON file of RS256 public keys (chosen by the token's kid).", **_group("security")
    )
    jwt_audience: str | None = Field(
        None, description="Required 'aud' of JWTs (required when any JWT key is set).", **_group("security")
    )
    jwt_issuer: str | None = Field(
        None, description="Required 'iss' of JWTs (required when any JWT key is set).", **_group("security")
    )
    jwt_leeway_s: float = Field(
        30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat (seconds).", **_group("security")
    )
    jwt_scope_claim: str = Field(
        "scope", description="JWT claim with the scopes (space-separated string or list).", **_group("security")
    )
    metrics_public: bool = Field(
        True, description="Serve /metrics without auth; off: /metrics needs the admin scope.", **_group("security")
    )
    docs_public: bool = Field(False, description="Serve /docs and /openapi.json without auth.", **_group("security"))
    insecure_no_auth_on_public_interface: bool = Field(
        False,
        description="DANGER: allow 'serve' to bind a non-loopback address with no API keys or JWT configured.",
        **_group("security"),
    )
    ip_allowlist: CommaList = Field(
        [],
        description="If set, only clients in these CIDRs are served (e.g. 10.0.0.0/8,::1/128).",
        **_group("security"),
    )
    trusted_proxies: CommaList = Field(
        [],
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed. Empty: the header is ignored.",
        **_group("security"),
    )
    rate_limit_per_key: str = Field(
        "600/minute",
        description="Requests per API key / JWT subject ('limits' syntax, e.g. '60/minute;1000/hour'; '' off).",
        **_group("security"),
    )
    rate_limit_per_ip: str = Field(
        "1200/minute", description="Requests per client IP ('limits' syntax; '' off).", **_group("security")
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counters live: memory:// (per process) or redis://host:port/db.",
        **_group("security"),
    )
    concurrency_per_key: int = Field(
        8,
        ge=0,
        description="Requests one API key / JWT subject may have in flight (0: no limit).",
        **_group("security"),
    )
    concurrency_per_ip: int = Field(
        16, ge=0, description="Requests one client IP may have in flight (0: no limit).", **_group("security")
    )
    model_max_concurrent: int = Field(
        4,
        ge=1,
        description="Model requests (infer, caption, chat) worked on at once; the rest queue.",
        **_group("security"),
    )
    model_max_queue: int = Field(
        64,
        ge=0,
        description="Model requests waiting for a turn; beyond it: 503 + Retry-After.",
        **_group("security"),
    )
    model_queue_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait in the model queue before 503 + Retry-After.", **_group("security")
    )
    model_queue_redis_url: str = Field(
        "",
        description="Share the model queue in Redis (redis://host:port/db): one queue and one --model-max-concurrent "
        "for every process and ingress replica on it. Empty: each process has its own.",
        **_group("security"),
    )
    model_queue_redis_prefix: str = Field(
        "flashvl:model-queue",
        min_length=1,
        description="Key prefix of the shared model queue; each app sharing one Redis needs its own.",
        **_group("security"),
    )
    model_queue_lease_s: float = Field(
        15.0,
        ge=1,
        description="Shared model queue: a slot held by a process that stopped (renewed every third of this) "
        "is taken back after this long.",
        **_group("security"),
    )
    cors_allow_origins: CommaList = Field(
        [],
        description="Origins allowed by CORS (exact, e.g. https://app.example.com). Empty: CORS off.",
        **_group("security"),
    )

    # --- stage-split services (flashvl/api/stage_app.py; deploy/kubernetes/)
    only: Literal["all", "vision", "language"] = Field(
        "all",
        description="'all': the whole service. 'vision' / 'language': serve that one stage alone as an "
        "OpenAI-compatible API (/v1/chat/completions, model flashvl-vision / flashvl-language); a gateway "
        "reaches it with --vision / --language openai:http://HOST:PORT/v1#flashvl-vision (or #flashvl-language).",
        **_group("deploy"),
    )

    # --- scale-out on Ray Serve (flashvl/deploy/; needs the 'ray' extra)
    engine: Literal["local", "ray"] = Field(
        "local",
        description="'local': one process. 'ray': a Ray Serve application, one deployment per stage role "
        "plus the HTTP ingress, each with its own replicas.",
        **_group("deploy"),
    )
    ray_address: str = Field(
        "",
        description="Ray cluster to deploy to (e.g. ray://head:10001 or 127.0.0.1:6379). Empty: RAY_ADDRESS, "
        "else a new local cluster.",
        **_group("deploy"),
    )
    ray_app_name: str = Field("flashvl", description="Name of the Ray Serve application.", **_group("deploy"))
    ray_proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly",
        description="Where Serve's HTTP proxies run: HeadOnly, or EveryNode (one per machine behind your balancer).",
        **_group("deploy"),
    )
    ingress_replicas: str = Field(
        "1",
        pattern=r"^\d+(-\d+)?$",
        description="HTTP ingress replicas: N, or MIN-MAX to autoscale. More than one needs shared state (Redis).",
        **_group("deploy"),
    )
    vision_replicas: str = Field(
        "1",
        pattern=r"^\d+(-\d+)?$",
        description="Vision stage replicas: N, or MIN-MAX to autoscale.",
        **_group("deploy"),
    )
    language_replicas: str = Field(
        "1",
        pattern=r"^\d+(-\d+)?$",
        description="Language stage (and voter) replicas: N, or MIN-MAX to autoscale.",
        **_group("deploy"),
    )
    ingress_num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per ingress replica.", **_group("deploy"))
    vision_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per vision replica.", **_group("deploy"))
    vision_num_gpus: float = Field(
        0.0, ge=0, description="GPUs per vision replica (fractions share one).", **_group("deploy")
    )
    language_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per language replica.", **_group("deploy"))
    language_num_gpus: float = Field(0.0, ge=0, description="GPUs per language replica.", **_group("deploy"))
    stage_max_ongoing_requests: int = Field(
        8,
        ge=1,
        description="Requests one stage replica works on at once (its batcher coalesces them); the rest queue.",
        **_group("deploy"),
    )
    autoscale_target_ongoing_requests: float = Field(
        2.0, gt=0, description="Autoscaling: requests per replica (in flight + queued) to aim for.", **_group("deploy")
    )
    autoscale_upscale_delay_s: float = Field(
        30.0, ge=0, description="Autoscaling: load must last this long before a replica is added.", **_group("deploy")
    )
    autoscale_downscale_delay_s: float = Field(
        600.0, ge=0, description="Autoscaling: idle this long before a replica is removed.", **_group("deploy")
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans for the ingress, each stage call and each replica's work (one trace per "
        "request id, propagated through Ray Serve handles).",
        **_group("deploy"),
    )
    tracing_otlp_endpoint: str = Field(
        "",
        description="Export spans over OTLP/HTTP to this URL (e.g. http://collector:4318/v1/traces). Empty: "
        "none exported.",
        **_group("deploy"),
    )

    @field_validator("api_keys", "ip_allowlist", "trusted_proxies", "cors_allow_origins", mode="before")
    @classmethod
    def _split_security_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_formats", "fetch_allow_cidrs", "fetch_allow_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("router_keywords_zh", "router_keywords_en", mode="before")
    @classmethod
    def _split_router_keywords(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_formats")
    @classmethod
    def _upper_formats(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


# ------------------------------------------------------------------ which commands take which settings

COMMANDS = ("serve", "ask", "caption", "eval", "batch", "kb")
_ANSWERING = ("serve", "ask", "eval")  # the commands that route questions (router, arbitration, disclaimers)
GROUP_COMMANDS: dict[str, tuple[str, ...]] = {
    "server": ("serve",),
    "media": COMMANDS,
    "stages": COMMANDS,
    "engines": COMMANDS,
    "moderation": ("serve", "batch"),
    "jobs": ("serve", "batch"),
    "kb": ("serve", "kb"),
    "pipeline": COMMANDS,
    "security": ("serve",),
    "deploy": ("serve",),
}
FIELD_COMMANDS: dict[str, tuple[str, ...]] = {
    "log_level": COMMANDS,
    "max_tokens_limit": ("serve",),
    "document_schema_max_bytes": ("serve",),
    "document_schema_max_depth": ("serve",),
    "jobs_worker": ("serve",),
    **dict.fromkeys(
        (
            "route_default",
            "router",
            "router_keywords_zh",
            "router_keywords_en",
            "router_direct_without_vlm",
            "arbitration",
            "arbitration_reask",
            "arbitration_voter",
            "arbitration_similarity_threshold",
            "review_max_items",
            "review_store",
            "review_sqlite_path",
            "review_redis_url",
            "review_redis_prefix",
            "review_thumbnails",
            "disclaimers",
            "disclaimer_zh",
            "disclaimer_en",
        ),
        _ANSWERING,
    ),
}
NOT_SETTINGS_ENV = frozenset({"FLASHVL_CONFIG"})  # FLASHVL_* variables that are not fields


def commands_of(name: str) -> tuple[str, ...]:
    """The commands that take setting ``name`` as a flag (llama.cpp's way: each option names its commands)."""
    if name in FIELD_COMMANDS:
        return FIELD_COMMANDS[name]
    extra = Settings.model_fields[name].json_schema_extra
    group = str(extra.get("group", "")) if isinstance(extra, dict) else ""
    return GROUP_COMMANDS.get(group, COMMANDS)


# ------------------------------------------------------------------ loading


class SettingsError(ValueError):
    """A settings mistake; every line names where the value came from (flag, variable, file:line)."""


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _line_of(path: Path, text: str, key: str) -> str:
    """``path:line`` of the line that sets ``key`` (TOML ``key =`` or JSON ``"key":``), else ``path``."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*[=:]""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.search(line):
            return f"{path}:{number}"
    return str(path)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file whose keys are field names (flat). Unknown keys are refused,
    each named with its line and the closest valid name."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such config file") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: the config file is not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected flat settings (key = value), got a {type(data).__name__}")
    unknown = [key for key in data if key not in Settings.model_fields]
    if unknown:
        raise SettingsError(
            "\n".join(
                f"{_line_of(path, text, key)}: unknown settings key {key!r}{_did_you_mean(key, Settings.model_fields)}"
                for key in unknown
            )
        )
    return data


def unknown_env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``FLASHVL_*`` variable that is no setting (a typo is otherwise silently ignored)."""
    environ = os.environ if environ is None else environ
    valid = {f"FLASHVL_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for key in sorted(environ):
        upper = key.upper()
        if upper.startswith("FLASHVL_") and upper not in valid and upper not in NOT_SETTINGS_ENV:
            warnings.append(f"{key} is not a flashvl setting and is ignored{_did_you_mean(upper, valid)}")
    return warnings


def _warn(message: str) -> None:
    print(f"flashvl: warning: {message}", file=sys.stderr)


def load_settings(
    overrides: dict[str, Any] | None = None,
    config_file: Path | None = None,
    *,
    warn: Callable[[str], None] | None = _warn,
) -> Settings:
    """Build settings: overrides (CLI) > env > config file > defaults. Unknown ``FLASHVL_*`` variables
    go to ``warn``; a bad value raises ``SettingsError`` naming its source."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config_file = config_file or (Path(os.environ["FLASHVL_CONFIG"]) if os.environ.get("FLASHVL_CONFIG") else None)
    file_values = read_config_file(config_file) if config_file else {}
    env_names = {key.upper() for key in os.environ}
    env_keys = {name for name in Settings.model_fields if f"FLASHVL_{name.upper()}" in env_names}
    if warn is not None:
        for message in unknown_env_warnings():
            warn(message)
    # Values from the file apply only where neither the CLI nor the environment set one.
    merged = {k: v for k, v in file_values.items() if k not in env_keys} | overrides

    def source(name: str) -> str:
        if name in overrides:
            return "--" + name.replace("_", "-")
        if name in env_keys:
            return f"FLASHVL_{name.upper()}"
        if name in file_values and config_file is not None:
            return _line_of(config_file, config_file.read_text(encoding="utf-8"), name)
        return f"default of {name}"

    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error.get("loc") else ""
            where = source(name) if name in Settings.model_fields else "settings"
            secret = "key" in name or "secret" in name
            got = "" if secret or "input" not in error else f" (got {error['input']!r})"
            problems.append(f"{where}: {error['msg']}{got}")
        raise SettingsError("\n".join(problems)) from None
    except PydanticSettingsError as exc:  # an environment value pydantic-settings could not even parse
        raise SettingsError(str(exc)) from None


def add_settings_arguments(parser: argparse.ArgumentParser, command: str = "serve") -> None:
    """Add one flag per settings field that ``command`` takes, grouped, with env var names in the help."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, info in Settings.model_fields.items():
        takers = commands_of(name)
        if command not in takers:
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group_name = str(extra.get("group", "other"))
        group = groups.get(group_name) or parser.add_argument_group(f"{group_name} options")
        groups[group_name] = group
        flag = "--" + name.replace("_", "-")
        env = f"FLASHVL_{name.upper()}"
        default = info.default
        shown = ",".join(default) if isinstance(default, list) else default
        only = "" if takers == COMMANDS else f"; {', '.join(takers)}" + (" only" if len(takers) == 1 else "")
        help_text = f"{info.description} [env {env}; default {shown}{only}]".replace("%", "%%")
        annotation = info.annotation
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        if get_origin(annotation) is Literal:
            group.add_argument(flag, dest=name, choices=get_args(annotation), default=None, help=help_text)
            continue
        kind = _scalar_type(annotation)
        group.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(), help=help_text)


def _scalar_type(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation in (int, float):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if float in args:
        return float
    if Path in args or annotation is Path:
        return Path
    return str


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in Settings.model_fields}
    return load_settings(overrides, getattr(args, "config", None))
