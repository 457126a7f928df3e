"""The visible signature: a seal image with the signer's name and the signing time in a CJK font.

The text is set with pyHanko's ``GlyphAccumulator`` (HarfBuzz shaping through uharfbuzz), which embeds
only the glyphs used, so a signed page carries a font subset and not the whole font file.

The default font is Noto Sans CJK SC, one face of Debian's fonts-noto-cjk collection (SIL OFL 1.1),
read from the system at run time. DroidSansFallbackFull.ttf (fonts-droid-fallback) cannot be used:
it has no Latin letters or digits, so the signing time would print as empty boxes, and its 256 units
per em meet a pyHanko 0.38 limitation (below). Neither font is copied into the repository: they are
4 MB and 20 MB, Debian ships both, and the install steps already require them.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fontTools.ttLib import TTCollection, TTFont, TTLibError

from PIL import Image, UnidentifiedImageError
from pyhanko.pdf_utils import images
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.layout import AxisAlignment, InnerScaling, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle

from qsign.i18n import N_, translate
from signing.errors import FontNotFound, FontUnsupported, PageOutOfRange, RectInvalid, SealImageInvalid

__all__ = [
    "DEFAULT_FONT_PATH",
    "DEFAULT_FONT_FACE",
    "DEFAULT_SEAL_IMAGE",
    "VisibleSignature",
    "parse_rect",
    "resolve_page_index",
    "build_stamp_style",
]

_logger = logging.getLogger(__name__)

DEFAULT_FONT_PATH = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
#: Face to take from a font collection (.ttc/.otc), by its full name.
DEFAULT_FONT_FACE = "Noto Sans CJK SC"
DEFAULT_SEAL_IMAGE = Path(__file__).parent / "assets" / "seal-red.png"

#: Largest seal image accepted, in pixels, so that a decompression bomb is rejected before decoding.
MAX_SEAL_PIXELS = 4096 * 4096

SIGNER_LINE = N_("Signer: {signer}")
TIME_LINE = N_("Time: {time}")


@dataclass(frozen=True)
class VisibleSignature:
    """Placement and content of a visible signature."""

    #: Page number, 1-based; -1 is the last page.
    page: int
    #: Widget rectangle (x1, y1, x2, y2) in PDF points, lower-left and upper-right corners.
    rect: tuple[float, float, float, float]
    #: PNG drawn behind the text, scaled to fit the rectangle; ``None`` for text only.
    seal_image: Path | None = DEFAULT_SEAL_IMAGE
    font_path: Path = DEFAULT_FONT_PATH
    #: Full name of the face to use when ``font_path`` is a collection; ignored for a single font.
    font_face: str = DEFAULT_FONT_FACE
    font_size: int = 9
    #: Language of the labels in the text lines.
    language: str = "zh_CN"
    #: Lines set by the template (an organisation's name, a purpose such as "审核专用"), drawn above the
    #: signer and time lines. pyHanko reads ``%(name)s`` as a placeholder, so a literal ``%`` is doubled.
    extra_lines: tuple[str, ...] = ()
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


@functools.lru_cache(maxsize=4)
def load_font(path: Path, face: str) -> bytes:
    """Return the OpenType font at ``path`` (or ``face`` of a collection) as bytes, checked for use in stamps.

    Cached per process: taking one face out of the Noto CJK collection costs about 0.3 s. Raises
    ``FontNotFound`` and ``FontUnsupported``.
    """
    ids = {"path": str(path)}
    if not path.is_file():
        raise FontNotFound(path=str(path), ids=ids)

    try:
        if path.suffix.lower() in (".ttc", ".otc"):
            collection = TTCollection(str(path), lazy=True)
            matches = [font for font in collection.fonts if font["name"].getDebugName(4) == face]
            if not matches:
                raise FontUnsupported(path=str(path), reason=f"the collection has no face named {face!r}", ids=ids)
            # Saving a face whose tables were never decoded copies them as they are. A table read
            # before saving (as _check_font reads cmap) is recompiled, which takes seconds for a CJK cmap.
            buffer = io.BytesIO()
            matches[0].save(buffer)
            font_bytes = buffer.getvalue()
        else:
            font_bytes = path.read_bytes()
        _check_font(TTFont(io.BytesIO(font_bytes), lazy=True), path)
    except (TTLibError, OSError, KeyError, AssertionError) as error:
        raise FontUnsupported(path=str(path), reason=str(error) or type(error).__name__, ids=ids) from error
    return font_bytes


def _check_font(font: TTFont, path: Path) -> None:
    ids = {"path": str(path)}
    # pyHanko 0.38 writes glyph widths (/W) and TJ adjustments in font units, but PDF reads them as
    # 1/1000 em. So with any other unitsPerEm the glyphs are spaced wrongly.
    units_per_em = font["head"].unitsPerEm
    if units_per_em != 1000:
        raise FontUnsupported(path=str(path), reason=f"it has {units_per_em} units per em; "
                              "pyHanko 0.38 places glyphs correctly only with 1000", ids=ids)

    cmap = font.getBestCmap() or {}
    missing = [character for character in "0123456789:-+签名人时间" if ord(character) not in cmap]
    if missing:
        raise FontUnsupported(path=str(path), reason=f"it has no glyph for {''.join(missing)!r}", ids=ids)


@dataclass(frozen=True)
class _FontBytesFactory(GlyphAccumulatorFactory):
    """A ``GlyphAccumulatorFactory`` over font bytes in memory, so a collection face needs no file."""

    font_bytes: bytes = b""

    def create_font_engine(self, writer, obj_stream=None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs and self.create_objstream_if_needed:
            obj_stream = writer.prepare_object_stream()
        return GlyphAccumulator(writer=writer, font_handle=io.BytesIO(self.font_bytes), font_size=self.font_size,
                                obj_stream=obj_stream)


def build_stamp_style(visible: VisibleSignature) -> TextStampStyle:
    """Build the pyHanko stamp style for ``visible``.

    The text uses the placeholders ``%(signer_cn)s`` (pass it in ``appearance_text_params``) and
    ``%(ts)s`` (the signing time, filled by pyHanko). Raises ``FontNotFound``, ``FontUnsupported`` and
    ``SealImageInvalid``.
    """
    font_bytes = load_font(Path(visible.font_path), visible.font_face)

    background = None
    if visible.seal_image is not None:
        background = images.PdfImage(_load_seal_image(visible.seal_image))

    stamp_text = "\n".join([
        *(line.replace("%", "%%") for line in visible.extra_lines),
        translate(SIGNER_LINE, visible.language, signer="%(signer_cn)s"),
        translate(TIME_LINE, visible.language, time="%(ts)s"),
    ])
    text_box_style = TextBoxStyle(
        font=_FontBytesFactory(str(visible.font_path), font_size=visible.font_size, font_bytes=font_bytes),
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
        # The seal sits above the text lines, so the text stays readable.
        background_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MID,
            y_align=AxisAlignment.ALIGN_MAX,
            margins=Margins(left=2, right=2, top=2,
                            bottom=(2 + len(visible.extra_lines)) * visible.font_size + 6),
            inner_content_scaling=InnerScaling.SHRINK_TO_FIT,
        ),
        inner_content_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MID,
            y_align=AxisAlignment.ALIGN_MIN,
            margins=Margins.uniform(2),
            inner_content_scaling=InnerScaling.SHRINK_TO_FIT,
        ),
        border_width=0,
    )
