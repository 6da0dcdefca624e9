"""The one preparation of an image file for the network (docs/data.md, "How an image is
prepared"): tools/images_to_npz.py prepares the training images of --dataset own with it,
--predict new images, so that a model sees both alike: 28x28 uint8, light ink on dark, as
KMNIST and MNIST store theirs. Imports only NumPy and Pillow, all the converter needs."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 28
# ITU-R BT.601 luma, the weights of Pillow's convert("L"); applied here in floating
# point, before the resize, so that an image is rounded to whole numbers once.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
RESAMPLING = Image.Resampling.LANCZOS
PREPARATION_FILE = "preparation.json"  # beside data.npz
PREPARATION = {
    "grayscale": "0.299 R + 0.587 G + 0.114 B",
    "transparency": "composited on the page: white behind dark visible pixels, black "
                    "behind light ones",
    "size": "28x28, the whole image stretched (never cropped), Lanczos resampling",
    "polarity": "light on dark: an image whose outermost ring of pixels is brighter on "
                "average than the whole image is inverted (255 - pixel)",
}
# What Pillow raises for a file it cannot read: not an image, truncated, too large.
UNREADABLE = (OSError, ValueError, Image.DecompressionBombError)


def grayscale(image):
    """A Pillow image as float gray levels 0..255, transparency on the page's colour. Transparent
    pixels often store black whatever the ink, so their colour is never used: the page is white
    behind dark ink and black behind light ink, the ink being the visible pixels (by opacity)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    gray, alpha = rgba[..., :3] @ GRAY_WEIGHTS, rgba[..., 3] / 255
    seen = alpha.sum()
    page = 255.0 if seen and (gray * alpha).sum() / seen < 128 else 0.0
    return gray * alpha + page * (1 - alpha)


def resized(gray):
    """Float gray levels of any size as uint8 (SIDE, SIDE): stretched, Lanczos."""
    small = Image.fromarray(gray.astype(np.float32)).resize((SIDE, SIDE), RESAMPLING)
    return np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)


def dark_on_light(pixels):
    """Per image of `pixels` (..., H, W): whether its outermost ring of pixels (the
    background) is brighter on average than the whole image."""
    pixels = np.asarray(pixels, dtype=np.float64)
    ring = np.concatenate([pixels[..., 0, :], pixels[..., -1, :], pixels[..., 1:-1, 0],
                           pixels[..., 1:-1, -1]], axis=-1)
    return ring.mean(axis=-1) > pixels.mean(axis=(-2, -1))


def prepare(image):
    """(uint8 (SIDE, SIDE) light on dark, whether it was inverted) of a Pillow image."""
    pixels = resized(grayscale(image))
    if dark_on_light(pixels):
        return 255 - pixels, True
    return pixels, False


def prepare_file(path):
    """prepare() of the image in `path`; Pillow's UNREADABLE errors pass through."""
    with Image.open(path) as image:
        return prepare(image)


def write_record(folder):
    """PREPARATION as PREPARATION_FILE in `folder`, beside data.npz."""
    path = Path(folder) / PREPARATION_FILE
    path.write_text(json.dumps(PREPARATION, indent=2) + "\n", encoding="utf-8")
    return path
