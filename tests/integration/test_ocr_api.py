"""POST /ocr and POST /document/extract on the real server (real OCR, real language stage)."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from render import render_table, render_text

pytestmark = pytest.mark.slow

INVOICE = [
    "INVOICE",
    "Invoice No: INV-2024-0387",
    "Date: 2024-03-15",
    "Bill to: Northwind Traders",
    "Total: USD 71.50",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "the invoice number"},
        "date": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["invoice_number", "date", "total"],
}


TABLE = [
    ["Item", "Qty", "Unit price", "Amount"],
    ["Widget A", "2", "12.50", "25.00"],
    ["苹果", "10", "3.20", "32.00"],
]


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_ocr_returns_ordered_lines_and_a_table(live_server: str) -> None:
    body = httpx.post(f"{live_server}/ocr", json={"image_base64": b64(render_table(TABLE))}, timeout=120).json()
    assert body["tables"] and body["tables"][0]["rows"] == TABLE
    assert body["tables"][0]["markdown"].startswith("| Item | Qty | Unit price | Amount |")
    assert [line["row"] for line in body["lines"]] == sorted(line["row"] for line in body["lines"])
    mixed = httpx.post(
        f"{live_server}/ocr",
        json={"image_base64": b64(render_text(["购买方 Northwind Traders 有限公司"]))},
        timeout=120,
    ).json()
    assert mixed["text"] == "购买方 Northwind Traders 有限公司"


def test_extract_honours_the_callers_schema(live_server: str) -> None:
    reply = httpx.post(
        f"{live_server}/document/extract",
        json={"image_base64": b64(render_text(INVOICE)), "schema": SCHEMA},
        timeout=180,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    fields = body["fields"]
    assert set(fields) == {"invoice_number", "date", "total"} and body["valid"] is True
    assert isinstance(fields["total"], int | float) and isinstance(fields["invoice_number"], str)
    assert fields["invoice_number"] == "INV-2024-0387", fields
    assert abs(fields["total"] - 71.5) < 1e-6, fields
    assert body["grounded"]["invoice_number"] is True


def test_extract_refuses_a_bad_schema_before_any_work(live_server: str) -> None:
    bad = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}
    reply = httpx.post(
        f"{live_server}/document/extract", json={"image_base64": "not even base64", "schema": bad}, timeout=30
    )
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json_schema"
