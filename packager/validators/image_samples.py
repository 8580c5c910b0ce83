"""The images an image route is gated and calibrated on: real photographs and drawings that ship
with matplotlib (a build dependency), and the same images made odd in every way the runtime's
preprocessing has a branch for: grayscale, transparency, a palette, CMYK, rotation, a single pixel,
very thin, very large, cropped; and some as files (a path, a data URI), which sentence-transformers
opens another way (EXIF orientation applied, transparency dropped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# matplotlib's sample data: a photograph and two drawings with transparency.
_REAL = ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")
# What the gate's similarity matrix compares the images with.
CAPTIONS = ("a portrait photograph of a woman in a naval uniform", "the matplotlib logo", "a blue present box",
            "a black and white photograph", "a tiny icon", "a diagram with text")


def real_image_files() -> list[Path]:
    """The real images' files (one JPEG, two PNGs)."""
    from matplotlib import get_data_path

    return [Path(get_data_path()) / "sample_data" / name for name in _REAL]


def real_images() -> dict[str, Any]:
    """The real images, decoded (RGB and RGBA, as they ship)."""
    from PIL import Image

    images = {}
    for path in real_image_files():
        with Image.open(path) as image:
            image.load()
            images[path.name] = image.copy()
    return images


def parity_images(folder: Path) -> dict[str, Any]:
    """The real images and their odd variants, by label; the file forms written into ``folder``."""
    import base64
    import io

    from PIL import Image

    real = real_images()
    photo, logo, drawing = (real[n] for n in _REAL)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    transparent_palette = drawing.convert("RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    transparent_palette.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    photo.save(folder / "photo-exif-rotated.jpg", exif=exif.tobytes())
    drawing.save(folder / "drawing-rgba.png")
    logo_png = io.BytesIO()
    logo.save(logo_png, "PNG")
    return {
        **real,
        "photo grayscale (L)": photo.convert("L"),
        "photo with an alpha gradient (RGBA)": rgba,
        "photo as a 64-colour palette (P)": photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "drawing as a palette with a transparent colour": transparent_palette,
        "photo in CMYK": photo.convert("CMYK"),
        "photo rotated 90 degrees": photo.transpose(Image.Transpose.ROTATE_90),
        "photo rotated 33 degrees, expanded": photo.rotate(33, expand=True, resample=Image.Resampling.BICUBIC),
        "photo 1x1": photo.resize((1, 1)),
        "photo very thin (400x2)": photo.resize((400, 2)),
        "photo very tall (3x500)": photo.resize((3, 500)),
        "photo very large (2560x3000)": photo.resize((2560, 3000), Image.Resampling.BICUBIC),
        "photo cropped (face)": photo.crop((150, 60, 370, 300)),
        "logo cropped off-centre": logo.crop((0, 0, 130, 130)),
        "photo file with an EXIF orientation (path)": str(folder / "photo-exif-rotated.jpg"),
        "drawing file with transparency (path)": str(folder / "drawing-rgba.png"),
        "logo as a data URI": "data:image/png;base64," + base64.b64encode(logo_png.getvalue()).decode(),
    }


def parity_messages(images: dict[str, Any]) -> dict[str, Any]:
    """Inputs of a vision-language route that mix the parity images with texts, by label: a text
    with an image, an image before its text, several images in one message (odd modes among
    them), a system turn, images at both pixel limits (the very large photo and the 1x1 one), and
    an image as an array."""
    import numpy as np

    photo, logo, drawing = (images[n] for n in _REAL)

    def user(*parts: Any) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str)
                                             else {"type": "image", "image": p} for p in parts]}]

    return {
        "a caption with the photo (dict)": {"text": CAPTIONS[0], "image": photo},
        "the logo before its caption (dict)": {"image": logo, "text": CAPTIONS[1]},
        "three images in one message": user("Compare these:", drawing, images["photo grayscale (L)"], "and",
                                            images["drawing as a palette with a transparent colour"]),
        "a system turn, then a text and an image": [{"role": "system", "content": "Describe pictures."},
                                                    *user("What is this?", logo)],
        "images at both pixel limits": user(images["photo very large (2560x3000)"], images["photo 1x1"], "sizes"),
        "the drawing as an HWC uint8 array, with a text (dict)": {"image": np.asarray(drawing.convert("RGB")),
                                                                  "text": CAPTIONS[2]},
    }


def calibration_images() -> list[Any]:
    """What an image route's int8 recipes calibrate on: the real images and crops of them at
    several scales (none of the parity set's extremes)."""
    images = list(real_images().values())
    photo = images[0]
    width, height = photo.size
    crops = [photo.crop((x, y, x + width // 2, y + height // 2)) for x in (0, width // 4, width // 2)
             for y in (0, height // 4, height // 2)]
    return [*images, *crops, photo.transpose(0), images[1].convert("RGB"), images[2].resize((300, 300))]
