"""The first page of a sample PDF, on which the template editor places the seal.

An administrator may upload a document like the ones the template will sign. Its first page is rendered
once with PDFium and kept in the agent's memory (``SamplePages``), and the editor shows it in place of
the blank A4 page. Only the last ``MAX_SAMPLES`` samples are kept, and none survives a restart.
"""

from __future__ import annotations

import asyncio
import collections
import io
import secrets
import threading
from dataclasses import dataclass, field

import pypdfium2
from PIL import Image, ImageDraw

from agent import documents
from agent.web.errors import FormInvalid

__all__ = ["SamplePage", "SamplePages", "render_sample", "draw_rect", "MAX_SAMPLE_BYTES"]

MAX_SAMPLE_BYTES = 20 * 1024 * 1024
MAX_SAMPLES = 20
#: Preview pixels per PDF point (96 dpi), as the request previews use.
SAMPLE_SCALE = documents.PREVIEW_DPI / 72


@dataclass(frozen=True)
class SamplePage:
    """The rendered first page of a sample document and its size in PDF points."""

    id: str
    png: bytes
    width: float
    height: float


@dataclass
class SamplePages:
    """The most recent sample pages by id."""

    _pages: collections.OrderedDict[str, SamplePage] = field(default_factory=collections.OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, png: bytes, width: float, height: float) -> SamplePage:
        page = SamplePage(secrets.token_hex(8), png, width, height)
        with self._lock:
            self._pages[page.id] = page
            while len(self._pages) > MAX_SAMPLES:
                self._pages.popitem(last=False)
        return page

    def get(self, sample_id: str) -> SamplePage | None:
        with self._lock:
            return self._pages.get(sample_id)


def _render_first_page(data: bytes) -> tuple[bytes, float, float]:
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        raise FormInvalid(detail="the sample document is not a PDF that can be read") from None
    try:
        if len(document) < 1:
            raise FormInvalid(detail="the sample document has no pages")
        page = document[0]
        width, height = page.get_size()
        scale = min(SAMPLE_SCALE, documents.MAX_PREVIEW_EDGE / max(width, height, 1))
        image = page.render(scale=scale).to_pil()
        page.close()
    finally:
        document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), float(width), float(height)


async def render_sample(data: bytes) -> tuple[bytes, float, float]:
    """Render the first page of the PDF ``data``; return the PNG and the page's width and height in points.

    Raises ``form_invalid`` when ``data`` is too large, not a PDF, or has no page.
    """
    if len(data) > MAX_SAMPLE_BYTES:
        raise FormInvalid(detail="the sample document is larger than 20 MiB")
    if documents.detect_media_type(data) != "application/pdf":
        raise FormInvalid(detail="the sample document must be a PDF")
    # PDFium is not thread-safe, so this runs in the worker thread that agent.documents uses for every PDFium call.
    return await asyncio.get_running_loop().run_in_executor(documents._pdfium, _render_first_page, data)


def draw_rect(png: bytes, page_width: float, page_height: float, rect: str) -> bytes:
    """Draw the seal rectangle ``rect`` ("x1,y1,x2,y2" in PDF points) on the page picture ``png``."""
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    scale = image.width / page_width
    try:
        x1, y1, x2, y2 = (float(part) for part in rect.split(","))
        # Pillow raises ValueError for a rectangle whose x2 < x1 or y2 < y1, too.
        ImageDraw.Draw(image).rectangle([x1 * scale, (page_height - y2) * scale, x2 * scale,
                                         (page_height - y1) * scale], outline=(192, 0, 0), width=3)
    except ValueError:
        return png
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
