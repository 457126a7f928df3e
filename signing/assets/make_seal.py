"""Draw ``seal-red.png``, the default visible-signature seal: a red ring, a five-pointed star and text.

Run ``python signing/assets/make_seal.py`` to redraw it; the PNG is committed so that qsign needs
neither this script nor the font at run time. The arc text uses Debian's DroidSansFallbackFull.ttf
(package fonts-droid-fallback, Apache-2.0); without that font the seal is drawn without text.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 600
RED = (204, 0, 0, 255)
RING_WIDTH = 18
FONT_PATH = Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")
ARC_TEXT = "电子签名专用章"
OUTPUT = Path(__file__).with_name("seal-red.png")


def star_points(center: float, outer: float, inner: float) -> list[tuple[float, float]]:
    """Return the 10 vertices of a five-pointed star with one point straight up."""
    points = []
    for index in range(10):
        radius = outer if index % 2 == 0 else inner
        angle = -math.pi / 2 + index * math.pi / 5
        points.append((center + radius * math.cos(angle), center + radius * math.sin(angle)))
    return points


def draw_arc_text(image: Image.Image, text: str, font: ImageFont.FreeTypeFont, radius: float) -> None:
    """Draw ``text`` along the upper arc of a circle, each character upright towards the centre."""
    center = SIZE / 2
    span = math.radians(220)
    step = span / (len(text) - 1)
    start = -math.pi / 2 - span / 2

    for index, character in enumerate(text):
        angle = start + index * step
        glyph = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((60, 60), character, font=font, fill=RED, anchor="mm",
                                   stroke_width=2, stroke_fill=RED)
        rotated = glyph.rotate(-math.degrees(angle) - 90, resample=Image.Resampling.BICUBIC)
        x = center + radius * math.cos(angle) - rotated.width / 2
        y = center + radius * math.sin(angle) - rotated.height / 2
        image.alpha_composite(rotated, (round(x), round(y)))


def main() -> int:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)

    margin = RING_WIDTH
    draw.ellipse((margin, margin, SIZE - margin, SIZE - margin), outline=RED, width=RING_WIDTH)
    draw.polygon(star_points(SIZE / 2, SIZE * 0.17, SIZE * 0.068), fill=RED)

    if FONT_PATH.exists():
        draw_arc_text(image, ARC_TEXT, ImageFont.truetype(str(FONT_PATH), 70), SIZE * 0.36)
    else:
        print(f"{FONT_PATH} not found; drawing the seal without text", file=sys.stderr)

    image.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
