"""One image request, two encodings: JSON (``image_url`` or ``image_base64`` plus options) or
multipart/form-data (the image as a ``file`` part, the same options as form fields; object-valued
options such as ``category_thresholds`` as JSON text). ``/moderate``, ``/caption`` and ``/ocr`` take
both; the OpenAPI description lists both."""

from __future__ import annotations

import copy
import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile  # what request.form() gives (FastAPI's is a subclass)

from flashvl.errors import FlashvlError

M = TypeVar("M", bound=BaseModel)
FILE_FIELD = "file"


def _invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": None}])


def _form_value(value: str) -> Any:
    """Form fields are text; an object or list option arrives as JSON text."""
    if value.lstrip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # validation names the field
    return value


async def parse_image_request(request: Request, model: type[M]) -> tuple[M, UploadFile | None]:
    """The request's options as ``model`` and the uploaded file (multipart) or None (JSON).
    Mistakes are 422 ``invalid_request`` naming the field, as for any JSON body."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        upload: UploadFile | None = None
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key == FILE_FIELD:
                if not isinstance(value, UploadFile) or upload is not None:
                    raise _invalid((FILE_FIELD,), "send one image file in the 'file' part")
                upload = value
            elif isinstance(value, str):
                fields[key] = _form_value(value)
            else:
                raise _invalid((key,), f"'{key}' is a file; only the '{FILE_FIELD}' part may be one")
        try:
            return model.model_validate(fields, context={"upload": upload is not None}), upload
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        try:
            return model.model_validate_json(await request.body() or b"{}", context={"upload": False}), None
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
    raise FlashvlError(
        "unsupported_media_type",
        f"Send application/json, or multipart/form-data with the image in a '{FILE_FIELD}' part "
        f"(got {content_type!r}).",
        415,
    )


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (the OpenAPI request body stands alone)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def openapi_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` with ``parse_image_request``."""
    as_json = _inline_refs(model.model_json_schema())
    form = copy.deepcopy(as_json)
    properties = {
        name: prop
        for name, prop in form.get("properties", {}).items()
        if name not in ("image_url", "image_base64")  # the file part is the image
    }
    for prop in properties.values():
        if "object" in json.dumps(prop.get("type", "")) or "properties" in prop or "additionalProperties" in prop:
            prop.clear()
            prop.update({"type": "string", "description": "JSON text (an object)."})
    form["properties"] = {FILE_FIELD: {"type": "string", "format": "binary", "description": "The image."}} | properties
    form["required"] = [FILE_FIELD]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": as_json}, "multipart/form-data": {"schema": form}},
        }
    }
