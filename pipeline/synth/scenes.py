"""Synthetic scenes: a coloured shape on a background, and captions that describe it.

The distribution is small enough for a CLIP trained in minutes on two CPU cores
to learn, and rich enough that a caption can be right about one attribute and
wrong about another, which is what separates a useful score from a lucky one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 10),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
BACKGROUNDS = {
    "grey": (128, 128, 128),
    "sand": (210, 190, 150),
    "sky": (150, 200, 235),
    "grass": (110, 160, 90),
}
POSITIONS = {
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "centre": (0.5, 0.5),
}
SIZES = {"small": 0.16, "large": 0.3}
ATTRIBUTES = ("colour", "shape", "background", "position", "size")

TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "a photo of a {colour} {shape}",
    "{colour} {shape} in the {position}, {background} backdrop",
    "there is a {size} {colour} {shape} at the {position}",
    "a {colour} {shape} on {background}",
    "{size} {shape}, {colour}, placed {position}",
    "an image showing a {colour} {shape} to the {position}",
)
GENERIC_CAPTIONS = (
    "image",
    "photo",
    "click here to download",
    "untitled",
    "stock picture",
    "img_0042.jpg",
    "view full size",
)


@dataclass(frozen=True, slots=True)
class Scene:
    colour: str
    shape: str
    background: str
    position: str
    size: str


def random_scene(rng: np.random.Generator) -> Scene:
    return Scene(
        colour=str(rng.choice(list(COLOURS))),
        shape=str(rng.choice(SHAPES)),
        background=str(rng.choice(list(BACKGROUNDS))),
        position=str(rng.choice(list(POSITIONS))),
        size=str(rng.choice(list(SIZES))),
    )


def caption(scene: Scene, rng: np.random.Generator) -> str:
    template = str(rng.choice(TEMPLATES))
    return template.format(**{name: getattr(scene, name) for name in ATTRIBUTES})


def caption_naming(scene: Scene, rng: np.random.Generator, attributes: tuple[str, ...]) -> str:
    """A caption that mentions every attribute in `attributes` (so a changed one shows)."""
    options = [t for t in TEMPLATES if all("{" + a + "}" in t for a in attributes)]
    template = str(rng.choice(options))
    return template.format(**{name: getattr(scene, name) for name in ATTRIBUTES})


def hard_negative(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str]:
    """The same scene with colour or shape changed, and a caption naming both."""
    attribute = str(rng.choice(("colour", "shape")))
    choices = list(COLOURS) if attribute == "colour" else list(SHAPES)
    wrong = str(rng.choice([c for c in choices if c != getattr(scene, attribute)]))
    changed = replace(scene, **{attribute: wrong})
    return changed, caption_naming(changed, rng, ("colour", "shape"))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [
            (cx + r * math.cos(a), cy + r * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    w = r * 0.35  # cross
    return [
        (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
        (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
        (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
    ]  # fmt: skip


def render(scene: Scene, rng: np.random.Generator, *, side: int) -> Image.Image:
    """Draw the scene with jitter in placement, tint and noise, as a square RGB image."""
    background = np.asarray(BACKGROUNDS[scene.background], np.float64)
    background = np.clip(background + rng.normal(0, 12, 3), 0, 255)
    image = Image.new("RGB", (side, side), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(image)
    fx, fy = POSITIONS[scene.position]
    cx = (fx + rng.uniform(-0.05, 0.05)) * side
    cy = (fy + rng.uniform(-0.05, 0.05)) * side
    r = SIZES[scene.size] * side * rng.uniform(0.85, 1.15)
    colour = np.clip(np.asarray(COLOURS[scene.colour]) + rng.normal(0, 10, 3), 0, 255)
    fill = tuple(int(v) for v in colour)
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r * 0.3)))
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, r), fill=fill)
    noise = rng.normal(0, 6, (side, side, 3))
    pixels = np.clip(np.asarray(image, np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=side / 256))
