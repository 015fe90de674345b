"""PDF input: pages rendered with pypdfium2 (PDFium, Apache-2.0/BSD) under a page and a pixel budget."""

from __future__ import annotations

import math

from PIL import Image

from flashvl.errors import FlashvlError

PDF_MAGIC = b"%PDF-"


def is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip()[:5] == PDF_MAGIC


def render_pdf(data: bytes, *, max_pages: int, max_pixels: int, dpi: int = 144) -> list[Image.Image]:
    """Each page as an RGB image at ``dpi`` (72 = 1 px per point), scaled down so no page is over
    ``max_pixels``; a PDF with more than ``max_pages`` pages is refused before any page is drawn."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # PdfiumError: not a PDF, encrypted, damaged
        raise FlashvlError("corrupt_pdf", f"The PDF cannot be opened: {exc}.", 400) from None
    try:
        count = len(pdf)
        if count == 0:
            raise FlashvlError("corrupt_pdf", "The PDF has no pages.", 400)
        if count > max_pages:
            raise FlashvlError(
                "pdf_too_many_pages",
                f"The PDF has {count} pages; the limit is {max_pages} (setting kb_pdf_max_pages).",
                413,
            )
        images = []
        for index in range(count):
            page = pdf[index]
            width, height = page.get_size()  # points
            scale = dpi / 72
            if width * height * scale * scale > max_pixels:
                scale = math.sqrt(max_pixels / max(width * height, 1.0))
            bitmap = page.render(scale=scale)
            images.append(bitmap.to_pil().convert("RGB"))
            page.close()
        return images
    finally:
        pdf.close()
