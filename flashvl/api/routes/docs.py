"""The API's own description: /openapi.json, /docs (Swagger UI), /redoc.

FastAPI's built-in copies are turned off (``create_app``) so that these carry a scope dependency
like every other route: public with ``docs_public``, else the ``infer`` scope.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from flashvl.api.auth import require_scope

OPENAPI_URL = "/openapi.json"
router = APIRouter(include_in_schema=False, dependencies=[Depends(require_scope("infer", public_when="docs_public"))])


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
