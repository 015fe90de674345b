"""A small knowledge base of our own: rendered screenshots and PDFs (zh and en), and queries with the page
each should find. Rendered with tests/unit/render.py (the pinned CJK font); PDFs written by Pillow."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from render import render_text

SCREENSHOTS: dict[str, list[str]] = {
    "vpn_setup.png": [
        "How to connect to the office VPN",
        "1. Open Settings > Network > VPN",
        "2. Server: vpn.northwind.example",
        "3. Sign in with your employee ID and one-time code",
    ],
    "访客网络.png": ["访客无线网络设置", "网络名称: NW-Guest", "密码每周一更换", "请到前台领取访客密码"],
    "meeting_notes.png": [
        "Meeting notes 2024-05-14",
        "Q3 launch moved to September 12",
        "Owner: Li Wei",
        "Budget approved: 48,000 USD",
    ],
    "差旅报销.png": [
        "差旅报销流程",
        "出差结束后十个工作日内提交报销单",
        "发票抬头: 北风贸易有限公司",
        "经理审批后财务打款",
    ],
    "printer_help.png": [
        "Printer troubleshooting",
        "Paper jam: open tray 2 and pull the sheet out",
        "Toner low: order part TN-760",
        "Still broken? Call helpdesk extension 4417",
    ],
    "年假申请.png": ["年假申请规定", "请提前三天在系统中提交申请", "超过五天需要部门总监批准", "病假需附医院证明"],
    "release_checklist.png": [
        "Release checklist",
        "Run database migrations before deploying",
        "Tag the release as vX.Y.Z",
        "Announce it in the #releases channel",
    ],
    "邮箱配置.png": [
        "邮箱客户端配置",
        "收件服务器 imap.northwind.cn 端口 993",
        "发件服务器 smtp.northwind.cn 端口 465",
        "全部使用SSL加密",
    ],
}
PDFS: dict[str, list[list[str]]] = {
    "handbook.pdf": [
        ["Employee handbook: security", "Lock your screen when you leave your desk", "Wear your badge at all times"],
        ["Passwords", "Change your password every 90 days", "The minimum length is 14 characters"],
        ["Data retention", "Customer records are kept for 7 years", "Delete test data after 30 days"],
    ],
    "办公手册.pdf": [
        ["办公室规定", "午休时间为十二点到一点半", "会议室需提前在日历中预订"],
        ["消防安全规定", "消防通道禁止堆放物品", "灭火器位于每层电梯旁边"],
    ],
}
# (query, document, page)
TEXT_QUERIES: list[tuple[str, str, int]] = [
    ("how do I connect to the VPN", "vpn_setup.png", 1),
    ("VPN server address", "vpn_setup.png", 1),
    ("访客WiFi密码在哪里领取", "访客网络.png", 1),
    ("When is the Q3 launch?", "meeting_notes.png", 1),
    ("how much budget was approved", "meeting_notes.png", 1),
    ("报销单要在几天内提交", "差旅报销.png", 1),
    ("发票抬头写什么", "差旅报销.png", 1),
    ("printer paper jam", "printer_help.png", 1),
    ("which toner part to order", "printer_help.png", 1),
    ("年假超过五天谁审批", "年假申请.png", 1),
    ("what to do before deploying a release", "release_checklist.png", 1),
    ("邮箱发件服务器端口是多少", "邮箱配置.png", 1),
    ("how often do I change my password", "handbook.pdf", 2),
    ("how long are customer records kept", "handbook.pdf", 3),
    ("lock screen when leaving the desk", "handbook.pdf", 1),
    ("午休时间是几点", "办公手册.pdf", 1),
    ("灭火器在哪里", "办公手册.pdf", 2),
    ("会议室怎么预订", "办公手册.pdf", 1),
]


def screenshot(lines: list[str], *, font_size: int = 28) -> Image.Image:
    return render_text(lines, font_size=font_size)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes(pages: list[list[str]]) -> bytes:
    images = [render_text(lines, font_size=28, width=900) for lines in pages]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:], resolution=144.0)
    return buffer.getvalue()


def write_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, lines in SCREENSHOTS.items():
        path = folder / name
        path.write_bytes(png_bytes(screenshot(lines)))
        paths.append(path)
    for name, pages in PDFS.items():
        path = folder / name
        path.write_bytes(pdf_bytes(pages))
        paths.append(path)
    return paths


def image_queries() -> list[tuple[Image.Image, str, int]]:
    """Screenshots of indexed pages taken again: a downscaled JPEG-ish copy (a near-duplicate) and the
    same text rendered at another size (found by its OCR text, not its pixels)."""
    out: list[tuple[Image.Image, str, int]] = []
    for name in ("vpn_setup.png", "差旅报销.png", "printer_help.png", "邮箱配置.png"):
        original = screenshot(SCREENSHOTS[name])
        out.append((original.resize((original.width * 3 // 4, original.height * 3 // 4)), name, 1))
    for name in ("meeting_notes.png", "年假申请.png"):
        out.append((screenshot(SCREENSHOTS[name][:3], font_size=36), name, 1))
    out.append((render_text(PDFS["handbook.pdf"][1], font_size=34), "handbook.pdf", 2))
    return out
