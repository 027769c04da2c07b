"""The echo provider's images: real PNGs drawn with Pillow, the same pixels for the same prompt every time.

A picture is a two-colour gradient with circles and boxes on it and the
prompt written across the top; every colour and position comes from a
SHA-256 of the prompt, the image's index in the call and the quality ("hd"
draws more shapes). Drawing a 1792x1024 PNG takes tens of milliseconds of
CPU: callers run `render_png` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw, ImageOps

__all__ = ["parse_size", "render_png"]

_SHAPES = {"standard": 8, "hd": 24}
# The prompt as written on the image: its first characters, on one line.
_CAPTION_CHARS = 80


def parse_size(size: str) -> tuple[int, int]:
    """ "1792x1024" -> (1792, 1024)."""
    width, _, height = size.partition("x")
    return int(width), int(height)


class _Seed:
    """Deterministic bytes from one digest, stretched by re-hashing when used up."""

    def __init__(self, text: str) -> None:
        self._pool = hashlib.sha256(text.encode()).digest()
        self._at = 0

    def byte(self) -> int:
        if self._at == len(self._pool):
            self._pool, self._at = hashlib.sha256(self._pool).digest(), 0
        self._at += 1
        return self._pool[self._at - 1]

    def colour(self) -> tuple[int, int, int]:
        return self.byte(), self.byte(), self.byte()

    def fraction(self) -> float:
        return (self.byte() * 256 + self.byte()) / 65535


def render_png(prompt: str, size: str, quality: str = "standard", index: int = 0) -> bytes:
    """One PNG of `size` ("WIDTHxHEIGHT") for `prompt`; equal arguments give equal bytes."""
    width, height = parse_size(size)
    seed = _Seed(f"{index}|{quality}|{prompt}")
    # A 256-step gradient scaled to the size: cheaper than drawing it row by row.
    gradient = Image.linear_gradient("L").resize((width, height))
    picture = ImageOps.colorize(gradient, seed.colour(), seed.colour())
    draw = ImageDraw.Draw(picture)
    shortest = min(width, height)
    for shape in range(_SHAPES.get(quality, _SHAPES["standard"])):
        x, y = seed.fraction() * width, seed.fraction() * height
        radius = shortest * (0.04 + 0.2 * seed.fraction())
        box = (x - radius, y - radius, x + radius, y + radius)
        if shape % 2:
            draw.rectangle(box, fill=seed.colour())
        else:
            draw.ellipse(box, fill=seed.colour(), outline=(255, 255, 255), width=max(1, shortest // 256))
    caption = " ".join(prompt.split())[:_CAPTION_CHARS]
    draw.rectangle((0, 0, width, max(20, shortest // 16)), fill=(0, 0, 0))
    draw.text((8, 4), caption, fill=(255, 255, 255))
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=6)
    return out.getvalue()
