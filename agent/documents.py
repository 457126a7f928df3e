"""Uploaded documents: media type from the content, PDF page count, and page previews as PNG.

pypdfium2 (PDFium) is not thread-safe, so every PDFium call runs in one dedicated worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
from dataclasses import dataclass

import pypdfium2

from agent.errors import DocumentTypeMismatch, PageNotFound, PdfMalformed

__all__ = ["DocumentInfo", "inspect_document", "render_page", "PREVIEW_DPI"]

_logger = logging.getLogger(__name__)

PREVIEW_DPI = 96
#: Largest preview edge in pixels, so a huge page size cannot exhaust memory.
MAX_PREVIEW_EDGE = 4000

_pdfium = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfium")

_MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x1f\x8b", "application/gzip"),
    (b"{\\rtf", "application/rtf"),
)


@dataclass(frozen=True)
class DocumentInfo:
    media_type: str
    size: int
    #: Page count of a PDF; ``None`` for other files.
    pages: int | None


def detect_media_type(data: bytes) -> str | None:
    """Return the media type that the first bytes show, or ``None`` when they show none we know."""
    head = data[:1024]
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    # A PDF may have bytes before its header; PDF readers accept it within the first 1024 bytes.
    if b"%PDF-" in head:
        return "application/pdf"
    return None


def _count_pages(data: bytes, name: str) -> int:
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        raise PdfMalformed(name=name, reason=str(error)) from error
    try:
        count = len(document)
        if count < 1:
            raise PdfMalformed(name=name, reason="the PDF has no pages")
        return count
    finally:
        document.close()


async def inspect_document(data: bytes, name: str, declared_type: str | None) -> DocumentInfo:
    """Decide the document's media type from its content and check that it matches what was declared.

    A file declared as PDF (by media type or ``.pdf`` name) must be a PDF that PDFium opens. Raises
    ``document_type_mismatch`` (e.g. a ZIP named ``.pdf``) and ``pdf_malformed``.
    """
    detected = detect_media_type(data)
    declared_pdf = (declared_type or "").lower() == "application/pdf" or name.lower().endswith(".pdf")
    if declared_pdf and detected != "application/pdf":
        raise DocumentTypeMismatch(name=name, declared="application/pdf", detected=detected or "unknown data")
    if detected == "application/pdf":
        pages = await asyncio.get_running_loop().run_in_executor(_pdfium, _count_pages, data, name)
        return DocumentInfo("application/pdf", len(data), pages)

    media_type = detected or (declared_type or "application/octet-stream").split(";")[0].strip().lower()
    return DocumentInfo(media_type, len(data), None)


def _render(data: bytes, page_number: int, dpi: int) -> bytes:
    document = pypdfium2.PdfDocument(data)
    try:
        count = len(document)
        if not 1 <= page_number <= count:
            raise PageNotFound(page=page_number, count=count)
        page = document[page_number - 1]
        width, height = page.get_size()
        scale = min(dpi / 72, MAX_PREVIEW_EDGE / max(width, height, 1))
        image = page.render(scale=scale).to_pil()
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        page.close()
        return buffer.getvalue()
    finally:
        document.close()


async def render_page(data: bytes, page_number: int, dpi: int = PREVIEW_DPI) -> bytes:
    """Render page ``page_number`` (1-based) of the PDF ``data`` as PNG; raises ``page_not_found``."""
    return await asyncio.get_running_loop().run_in_executor(_pdfium, _render, data, page_number, dpi)
