"""The visible signature: a seal image with the signer's name and the signing time in a CJK font.

The text is set with pyHanko's ``GlyphAccumulatorFactory`` (HarfBuzz shaping through uharfbuzz), which
embeds only the glyphs used, so a signed page carries a font subset and not the whole font file.

NOTE: the font is loaded from the system at run time rather than copied into the repository.
DroidSansFallbackFull.ttf is about 4 MB and Debian ships it in fonts-droid-fallback (Apache-2.0),
which the install steps already require. A copy in signing/assets would add those 4 MB to every
checkout and wheel and would need its licence tracked here. The path can be overridden per call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pyhanko.pdf_utils import images
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.layout import AxisAlignment, InnerScaling, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle

from qsign.i18n import N_, translate
from signing.errors import FontNotFound, PageOutOfRange, RectInvalid, SealImageInvalid

__all__ = [
    "DEFAULT_FONT_PATH",
    "DEFAULT_SEAL_IMAGE",
    "VisibleSignature",
    "parse_rect",
    "resolve_page_index",
    "build_stamp_style",
]

_logger = logging.getLogger(__name__)

DEFAULT_FONT_PATH = Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")
DEFAULT_SEAL_IMAGE = Path(__file__).parent / "assets" / "seal-red.png"

#: Largest seal image accepted, in pixels, so that a decompression bomb is rejected before decoding.
MAX_SEAL_PIXELS = 4096 * 4096

SIGNER_LINE = N_("Signer: {signer}")
TIME_LINE = N_("Time: {time}")


@dataclass(frozen=True)
class VisibleSignature:
    """Where the visible signature goes and what it shows."""

    #: Page number, 1-based; -1 is the last page.
    page: int
    #: Widget rectangle (x1, y1, x2, y2) in PDF points, lower-left and upper-right corners.
    rect: tuple[float, float, float, float]
    #: PNG drawn behind the text, scaled to fit the rectangle; ``None`` for text only.
    seal_image: Path | None = DEFAULT_SEAL_IMAGE
    font_path: Path = DEFAULT_FONT_PATH
    font_size: int = 9
    #: Language of the labels in the text lines.
    language: str = "zh_CN"
    text_color: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))


def parse_rect(text: str) -> tuple[float, float, float, float]:
    """Parse ``"x1,y1,x2,y2"`` (PDF points) into a rectangle; raises ``RectInvalid``."""
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise RectInvalid(rect=text)
    check_rect(values)  # type: ignore[arg-type]
    return values  # type: ignore[return-value]


def check_rect(rect: tuple[float, float, float, float]) -> None:
    """Raise ``RectInvalid`` unless x1 < x2, y1 < y2 and no coordinate is negative."""
    x1, y1, x2, y2 = rect
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise RectInvalid(rect=",".join(f"{value:g}" for value in rect))


def resolve_page_index(page: int, page_count: int) -> int:
    """Return the 0-based index of 1-based ``page`` (negative counts from the end); raises ``PageOutOfRange``."""
    if 1 <= page <= page_count:
        return page - 1
    if -page_count <= page <= -1:
        return page_count + page
    raise PageOutOfRange(page=page, count=page_count)


def _load_seal_image(path: Path) -> Image.Image:
    ids = {"path": str(path)}
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise SealImageInvalid(path=str(path), reason=f"it is {image.format}, not PNG", ids=ids)
            if image.width * image.height > MAX_SEAL_PIXELS:
                raise SealImageInvalid(path=str(path), reason=f"{image.width}x{image.height} pixels is too large",
                                       ids=ids)
            image.load()
            return image.convert("RGBA")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise SealImageInvalid(path=str(path), reason=str(error) or type(error).__name__, ids=ids) from error


def build_stamp_style(visible: VisibleSignature) -> TextStampStyle:
    """Build the pyHanko stamp style for ``visible``.

    The text uses the placeholders ``%(signer_cn)s`` (pass it in ``appearance_text_params``) and
    ``%(ts)s`` (the signing time, filled by pyHanko). Raises ``FontNotFound`` and ``SealImageInvalid``.
    """
    if not visible.font_path.is_file():
        raise FontNotFound(path=str(visible.font_path), ids={"path": str(visible.font_path)})

    background = None
    if visible.seal_image is not None:
        background = images.PdfImage(_load_seal_image(visible.seal_image))

    stamp_text = "\n".join([
        translate(SIGNER_LINE, visible.language, signer="%(signer_cn)s"),
        translate(TIME_LINE, visible.language, time="%(ts)s"),
    ])
    text_box_style = TextBoxStyle(
        font=GlyphAccumulatorFactory(str(visible.font_path), font_size=visible.font_size),
        font_size=visible.font_size,
        text_color=visible.text_color,
        box_layout_rule=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MID,
            y_align=AxisAlignment.ALIGN_MID,
            inner_content_scaling=InnerScaling.SHRINK_TO_FIT,
        ),
    )
    return TextStampStyle(
        stamp_text=stamp_text,
        text_box_style=text_box_style,
        timestamp_format="%Y-%m-%d %H:%M:%S %z",
        background=background,
        background_opacity=1.0,
        background_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MID,
            y_align=AxisAlignment.ALIGN_MID,
            margins=Margins.uniform(2),
            inner_content_scaling=InnerScaling.SHRINK_TO_FIT,
        ),
        border_width=0,
    )
