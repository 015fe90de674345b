"""Documents: OCR lines in reading order, tables rebuilt from boxes, key fields under a caller's schema.

Tables: rows come from ``group_rows`` (vertical overlap); columns from the x-extents of the cells
of every multi-cell row in the table block, merged where a cell and a band overlap by half the
narrower (so left-, right- and centre-aligned columns all land in one band, while neighbouring
columns whose padded boxes touch stay apart). Space-aligned rows the detector read as one line arrive already
split into cells at their wide gaps (``stages/offline/ocr.py``). A cell joins the band it overlaps most; an empty
position stays ``""``. The table block is the longest run of consecutive rows with >= 2 cells.
"""

from __future__ import annotations

import json
from typing import Any

from flashvl.errors import FlashvlError
from flashvl.media.types import LoadedImage
from flashvl.pipeline.guarded import GuardedLanguage, GuardedVision, Seen
from flashvl.stages.base import ChatMessage, ChatRequest, VisionRequest
from flashvl.text.layout import TextLine, group_rows, lines_to_text
from flashvl.text.table import rebuild_table

ALLOWED_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "const",
        "description",
        "title",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "additionalProperties",
        "format",
        "$schema",
    }
)
ALLOWED_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
MAX_PROPERTIES = 64


def lines_from_observations(observations: dict[str, Any]) -> list[TextLine]:
    """The offline stage's ``text.lines`` dicts back into ``TextLine`` objects."""
    return [
        TextLine(line["text"], float(line["score"]), tuple(float(v) for v in line["box"]))  # type: ignore[arg-type]
        for line in ((observations.get("text") or {}).get("lines") or [])
    ]


def reading_order(lines: list[TextLine]) -> list[dict[str, Any]]:
    """Lines top to bottom, left to right within a row; each with its row index, box and confidence."""
    out = []
    for row_index, row in enumerate(group_rows(lines)):
        for line in row:
            out.append(
                {
                    "text": line.text,
                    "confidence": round(line.score, 4),
                    "row": row_index,
                    "box": [round(v, 1) for v in line.box],
                }
            )
    return out


# ------------------------------------------------------------------ tables


def read_document(lines: list[TextLine], *, tables: bool = True) -> dict[str, Any]:
    """Everything /ocr returns about the text: ordered lines, plain text, and the table if there is one."""
    out: dict[str, Any] = {"lines": reading_order(lines), "text": lines_to_text(lines)}
    if tables:
        table = rebuild_table(lines)
        out["tables"] = [table.to_dict()] if table else []
    return out


# ------------------------------------------------------------------ key fields under a caller's schema


def validate_schema(schema: Any, *, max_bytes: int = 8192, max_depth: int = 5) -> dict[str, Any]:
    """Refuse a caller's JSON schema that is too big, too deep or uses keywords we do not allow."""

    def refuse(message: str) -> FlashvlError:
        return FlashvlError("invalid_json_schema", message, 400)

    if not isinstance(schema, dict):
        raise refuse("schema must be a JSON object")
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > max_bytes:
        raise refuse(f"schema is {size} bytes; the limit is {max_bytes}")
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise refuse("the schema's root must be {'type': 'object', 'properties': {...}} with at least one property")
    count = 0

    def walk(node: Any, depth: int, where: str) -> None:
        nonlocal count
        if depth > max_depth:
            raise refuse(f"schema nests deeper than {max_depth} levels at {where}")
        if not isinstance(node, dict):
            raise refuse(f"{where} must be an object")
        unknown = set(node) - ALLOWED_SCHEMA_KEYWORDS
        if unknown:
            raise refuse(
                f"{where} uses keywords not allowed here: {sorted(unknown)} "
                f"(allowed: {sorted(ALLOWED_SCHEMA_KEYWORDS)})"
            )
        kinds = node.get("type")
        for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
            if kind not in ALLOWED_TYPES:
                raise refuse(f"{where}.type {kind!r} is not a JSON schema type")
        if "additionalProperties" in node and not isinstance(node["additionalProperties"], bool):
            raise refuse(f"{where}.additionalProperties must be true or false")
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            raise refuse(f"{where}.properties must be an object")
        for name, child in properties.items():
            count += 1
            if count > MAX_PROPERTIES:
                raise refuse(f"schema has more than {MAX_PROPERTIES} properties")
            walk(child, depth + 1, f"{where}.{name}")
        required = node.get("required", [])
        if not isinstance(required, list) or any(r not in properties for r in required):
            raise refuse(f"{where}.required must list names from its properties")
        if "items" in node:
            walk(node["items"], depth + 1, f"{where}[]")

    walk(schema, 1, "$")
    return schema


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """A small check of the keywords we allow (type, required, properties, items, enum)."""
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if kinds and not any(checks[k](value) for k in kinds):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        if any(name not in value for name in schema.get("required", [])):
            return False
        return all(conforms(value[k], sub) for k, sub in schema.get("properties", {}).items() if k in value)
    if isinstance(value, list) and "items" in schema:
        return all(conforms(item, schema["items"]) for item in value)
    return True


EXTRACT_SYSTEM = (
    "You extract fields from a document's text, read by OCR. Copy values exactly as they appear in the "
    "text (numbers without currency words unless the field asks for them). Answer only with JSON that "
    "matches the schema; use an empty string when a field is not in the text."
)


def _normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def grounding(fields: Any, text: str, prefix: str = "") -> dict[str, bool]:
    """For each scalar value: does it occur in the OCR text (ignoring case, spaces and punctuation)?"""
    out: dict[str, bool] = {}
    haystack = _normalise(text)
    if isinstance(fields, dict):
        for key, value in fields.items():
            out |= grounding(value, text, f"{prefix}{key}.")
    elif isinstance(fields, list):
        for index, value in enumerate(fields):
            out |= grounding(value, text, f"{prefix}{index}.")
    elif fields not in (None, "") and not isinstance(fields, bool):
        needle = _normalise(str(fields))
        out[prefix.rstrip(".")] = bool(needle) and needle in haystack
    return out


async def read_image(vision: GuardedVision, image: LoadedImage, *, tables: bool = True) -> tuple[dict[str, Any], Seen]:
    """OCR one image through the guarded vision stage: lines in reading order, text, tables."""
    looked = await vision.see(VisionRequest([image], task="ocr"))
    document = read_document(lines_from_observations(looked.result.observations), tables=tables)
    info = {"sha256": image.sha256, "width": image.width, "height": image.height}
    return document | {"image": info, "stages": [looked.record.to_dict()], "cache": looked.cache}, looked


async def extract_fields(
    language: GuardedLanguage, text: str, schema: dict[str, Any], *, max_tokens: int = 256
) -> dict[str, Any]:
    """Key fields by the language stage under ``schema`` (validated by the caller)."""
    request = ChatRequest(
        [
            ChatMessage("system", EXTRACT_SYSTEM),
            ChatMessage("user", f"Schema: {json.dumps(schema, ensure_ascii=False)}\n\nDocument text:\n{text[:6000]}"),
        ],
        max_tokens=max_tokens,
        temperature=0.0,
        json_schema=schema,
        seed=0,
    )
    generation = await language.generate(request)
    try:
        fields = json.loads(generation.text)
    except json.JSONDecodeError as exc:
        raise FlashvlError(
            "extraction_failed",
            f"the language stage returned no JSON ({exc}); raise max_tokens or simplify the schema",
            502,
        ) from None
    return {
        "fields": fields,
        "valid": conforms(fields, schema),
        "grounded": grounding(fields, text),
        "confidence": generation.confidence,
        "finish_reason": generation.finish_reason,
        "seconds": round(generation.timings.total, 3),
    }
