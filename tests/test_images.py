"""The one preparation of an image (docs/data.md, "How an image is prepared"): the gray
weighting, transparency, the resize and the polarity, each against values worked out
here by hand or by Pillow itself, as tools/images_to_npz.py and --predict read files."""
import numpy as np
from PIL import Image

from machinery import images, predict


def prepared(array, tmp_path, name="image.png"):
    """The file's image prepared as the converter and --predict prepare it."""
    Image.fromarray(array).save(tmp_path / name)
    return images.prepare_file(tmp_path / name)


def test_colour_is_weighted_0_299_red_0_587_green_0_114_blue(tmp_path):
    rgb = np.zeros((28, 28, 3), np.uint8)  # black page, two coloured blocks of ink
    rgb[6:12, 6:22] = (200, 100, 50)  # 0.299*200 + 0.587*100 + 0.114*50 = 124.2
    rgb[16:22, 6:22] = (10, 250, 30)  # 0.299*10 + 0.587*250 + 0.114*30 = 153.16
    pixels, inverted = prepared(rgb, tmp_path)
    assert not inverted
    assert set(np.unique(pixels[6:12, 6:22])) == {124}
    assert set(np.unique(pixels[16:22, 6:22])) == {153}
    assert pixels[0].max() == 0


def ink(alpha, colour):
    """An RGBA image: `colour` ink where `alpha` is, every transparent pixel storing black."""
    rgb = np.zeros(alpha.shape + (3,), np.uint8)
    rgb[alpha > 0] = colour
    return np.dstack([rgb, alpha])


def test_black_ink_on_a_transparent_page_is_a_light_digit_on_dark(tmp_path):
    alpha = np.zeros((28, 28), np.uint8)
    alpha[5:23, 12:16], alpha[5:8, 8:20] = 255, 128  # a stroke, and a half-transparent bar
    pixels, inverted = prepared(ink(alpha, (0, 0, 0)), tmp_path)
    # On a white page black ink of opacity a is 255 - a; made light on dark, a again.
    assert inverted and np.array_equal(pixels, alpha)


def test_white_ink_on_a_transparent_page_is_a_light_digit_on_dark(tmp_path):
    alpha = np.zeros((28, 28), np.uint8)
    alpha[5:23, 12:16] = 255
    pixels, inverted = prepared(ink(alpha, (255, 255, 255)), tmp_path)
    assert not inverted and np.array_equal(pixels, alpha)


def test_a_larger_image_is_resized_with_lanczos(tmp_path):
    # A digit drawn at 56x56: the expected 28x28 is Pillow's own Lanczos resize of its
    # gray levels as floating point (its 8-bit resize rounds inside, off by up to 2),
    # rounded to whole numbers once.
    rng = np.random.default_rng(3)
    large = np.zeros((56, 56), np.uint8)
    large[8:48, 20:36] = rng.integers(100, 256, (40, 16))
    exact = Image.fromarray(large.astype(np.float32)).resize((28, 28), Image.Resampling.LANCZOS)
    expected = np.clip(np.rint(np.asarray(exact)), 0, 255)
    pixels, inverted = prepared(large, tmp_path)
    assert not inverted
    assert np.array_equal(pixels, expected)


def test_a_non_square_image_is_stretched_whole_not_cropped(tmp_path):
    # 84 wide, 28 tall: a bright band in the middle third. Stretched to 28x28 the band
    # is the middle third of the columns, the same in every row; a crop of the
    # centre would be bright all over.
    wide = np.zeros((28, 84), np.uint8)
    wide[:, 28:56] = 255
    pixels, _ = prepared(wide, tmp_path, "wide.png")
    assert (pixels == pixels[0]).all()
    assert pixels[0, 10:18].min() >= 250 and pixels[0, :7].max() <= 5 \
        and pixels[0, 21:].max() <= 5
    tall, _ = prepared(wide.T.copy(), tmp_path, "tall.png")
    assert np.array_equal(tall, pixels.T)


def test_dark_ink_on_a_light_page_is_inverted_by_its_border(tmp_path):
    page = np.full((28, 28), 230, np.uint8)
    page[6:22, 12:16] = 20
    pixels, inverted = prepared(page, tmp_path)
    assert inverted and pixels[0, 0] == 25 and pixels[10, 13] == 235


def test_equal_probabilities_go_to_the_lower_class_number():
    # docs/predict.md: "equal probabilities go to the lower class number".
    names = [f"class {i}" for i in range(5)]
    p = np.array([0.1, 0.25, 0.05, 0.25, 0.35], np.float32)
    assert predict.ranked(p, names) == "class 4 35.0%, class 1 25.0%, class 3 25.0%"
    tied = np.array([0.2] * 5, np.float32)
    assert predict.ranked(tied, names) == "class 0 20.0%, class 1 20.0%, class 2 20.0%"
