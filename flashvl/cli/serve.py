"""``flashvl serve``: the HTTP server in this process (all routes, or one stage with ``--only``), or a Ray
Serve application with ``--engine ray``."""

from __future__ import annotations

import sys

from flashvl.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from flashvl.config import Settings


def serve(settings: Settings, *, verbose: bool = False) -> int:
    import logging

    import uvicorn

    from flashvl.api.app import create_app
    from flashvl.api.http_protocol import uvicorn_options
    from flashvl.api.stage_app import create_stage_app
    from flashvl.observability import configure_logging, get_logger
    from flashvl.security.startup import serve_refusal

    refusal = serve_refusal(settings)
    if refusal:
        return fail(refusal, EXIT_USAGE)
    if settings.insecure_no_auth_on_public_interface:
        print(
            "flashvl: WARNING: --insecure-no-auth-on-public-interface: serving with NO authentication.", file=sys.stderr
        )
    if settings.engine == "ray" and settings.only != "all":
        return fail("--only serves one stage in this process; it does not combine with --engine ray", EXIT_USAGE)
    if settings.engine == "ray":  # a Ray Serve application: ingress + one deployment per stage role
        try:
            from flashvl.deploy.ray import launch
        except ImportError as exc:
            return fail(f"--engine ray needs the 'ray' extra (pip install 'flashvl[ray]'): {exc}", EXIT_USAGE)
        return launch(settings)
    configure_logging(settings.log_level)
    # The lifespan logs a failed build as one ``startup_failed`` line; Starlette also hands uvicorn the
    # traceback text of that exception, which would print as one more (multi-line) error.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: verbose or "StartupFailed" not in str(record.getMessage())
    )
    get_logger("flashvl").info(
        "starting", host=settings.host, port=settings.port, vision=settings.vision, language=settings.language
    )
    causes: list[str] = []

    def fatal(cause: str) -> None:  # a stage could not be built or loaded: stop, exit non-zero
        causes.append(cause)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_fatal=fatal)
        if settings.only == "all"
        else create_stage_app(settings, settings.only, on_fatal=fatal),  # one stage, OpenAI-compatible
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),  # head size and deadline, keep-alive, connection cap
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 when the lifespan failed to start
        if not causes:
            return int(exc.code) if isinstance(exc.code, int) else EXIT_FAILED
    # the cause is already logged, as one ``startup_failed`` JSON line (every line of ``serve`` is JSON)
    return EXIT_FAILED if causes else EXIT_OK
