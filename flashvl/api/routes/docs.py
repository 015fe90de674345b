"""The API's own description: /openapi.json, /docs (Swagger UI), /redoc.

FastAPI's built-in copies are turned off (``create_app``) so that these carry a scope dependency
like every other route: public with ``docs_public``, else the ``infer`` scope.

Swagger UI and ReDoc come from the ``fastapi-offline`` package's files (Swagger UI: Apache-2.0,
ReDoc: MIT), mounted at ``/static/apidocs`` by ``create_app``: no CDN, nothing downloaded at run
time. The pages below start them from scripts of our own (``web/static/docs-*.js``), so they run
under the same Content-Security-Policy as the web page: no inline script. ReDoc alone also needs
inline styles (it styles itself at run time), so ``/redoc`` adds ``'unsafe-inline'`` to
``style-src`` and to nothing else (``api/middleware.py``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from flashvl.api.auth import require_scope

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/static/apidocs"  # under the public /static mount: the files are the libraries', no secret
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
router = APIRouter(include_in_schema=False, dependencies=[Depends(require_scope("infer", public_when="docs_public"))])


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f'<link rel="icon" href="{ASSETS_URL}/favicon.png">\n{head}</head>\n<body>\n{body}</body>\n</html>\n'
    )


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    html = _page(
        f"{request.app.title} - Swagger UI",
        f'<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{OPENAPI_URL}"></div>\n'
        f'<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/docs-swagger.js"></script>\n',
    )
    return HTMLResponse(html)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    html = _page(
        f"{request.app.title} - ReDoc",
        "",
        f'<div id="redoc" data-openapi-url="{OPENAPI_URL}"></div>\n'
        f'<script src="{ASSETS_URL}/redoc.standalone.js"></script>\n'
        '<script src="/static/docs-redoc.js"></script>\n',
    )
    return HTMLResponse(html)  # its CSP allows inline styles: flashvl/api/middleware.py, security_headers
