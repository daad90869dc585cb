"""read_image / read_mask: every odd-but-valid file loads right, every broken one gets a one-line DBDError.

Inputs are written with PIL into tmp_path, so each test shows exactly which file shape it protects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from dbd.core import DBDError
from dbd.runtime.imageio import read_image, read_mask


def _left_white_right_black(width: int = 40, height: int = 20) -> np.ndarray:
    grey = np.zeros((height, width), np.uint8)
    grey[:, : width // 2] = 255
    return grey


def _assert_clear_error(err: pytest.ExceptionInfo, path: Path) -> None:
    message = str(err.value)
    assert err.type is DBDError
    assert str(path) in message
    assert "\n" not in message


# --- images: odd but valid -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["photo.JPG", "photo.jpeg", "photo.JPEG", "photo.bmp", "photo.Png"])
def test_read_image_accepts_any_extension_case(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    pil_format = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".png": "PNG"}[path.suffix.lower()]
    Image.new("RGB", (30, 20), (200, 40, 10)).save(path, format=pil_format)
    image = read_image(path)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert np.abs(image[10, 15].astype(int) - (200, 40, 10)).max() <= 6  # JPEG rounding


def test_read_image_drops_alpha_of_rgba_png(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 6), (10, 20, 30, 0)).save(path)
    image = read_image(path)
    assert image.shape == (6, 8, 3)
    assert tuple(image[0, 0]) == (10, 20, 30)  # colour kept even where fully transparent


def test_read_image_turns_greyscale_into_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(_left_white_right_black(), "L").save(path)
    image = read_image(path)
    assert image.shape == (20, 40, 3)
    assert (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all()
    assert image[0, 0, 0] == 255 and image[0, -1, 0] == 0


def test_read_image_scales_16_bit_png_instead_of_clipping(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image[0, :, 0].tolist() == [0, 64, 128, 255]


def test_read_image_converts_palette_one_bit_and_cmyk(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "bits.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert tuple(read_image(tmp_path / "palette.png")[0, 0]) == (0, 200, 0)
    assert tuple(read_image(tmp_path / "bits.png")[0, 0]) == (255, 255, 255)
    red = read_image(tmp_path / "cmyk.jpg")[0, 0].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    stored = np.zeros((20, 40, 3), np.uint8)  # stored landscape, 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the photo is portrait
    Image.fromarray(stored).save(path, exif=exif)
    assert read_image(path).shape == (40, 20, 3)


# --- masks: odd but valid --------------------------------------------------------------------


def test_read_mask_normalises_both_polarities_to_blur_one(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(_left_white_right_black(), "L").save(path)
    blur_white = read_mask(path, "blur_white")
    sharp_white = read_mask(path, "sharp_white")
    assert blur_white.dtype == np.float32 and blur_white.shape == (20, 40)
    assert blur_white[0, 0] == 1 and blur_white[0, -1] == 0
    assert (sharp_white == 1 - blur_white).all()


def test_read_mask_thresholds_grey_levels_at_128(tmp_path: Path) -> None:
    path = tmp_path / "grey_edges.png"
    Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8), "L").save(path)
    assert read_mask(path, "blur_white").tolist() == [[0, 0, 1, 1]]
    assert read_mask(path, "blur_white", threshold=200).tolist() == [[0, 0, 0, 1]]


def test_read_mask_looks_up_palette_colours_not_indices(tmp_path: Path) -> None:
    path = tmp_path / "palette_mask.png"
    indices = (_left_white_right_black() == 0).astype(np.uint8)  # index 0 on the left
    mask = Image.fromarray(indices, "P")
    mask.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 = white, 1 = black
    mask.save(path)
    blur = read_mask(path, "blur_white")
    assert blur[0, 0] == 1 and blur[0, -1] == 0


def test_read_mask_reads_alpha_when_colour_is_constant(tmp_path: Path) -> None:
    path = tmp_path / "alpha_only.png"
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[:, :, 3] = _left_white_right_black()
    Image.fromarray(rgba, "RGBA").save(path)
    blur = read_mask(path, "blur_white")
    assert blur[0, 0] == 1 and blur[0, -1] == 0


def test_read_mask_uses_luminance_of_colour_masks_with_opaque_alpha(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    rgba = np.full((20, 40, 4), 255, np.uint8)
    rgba[:, 20:, :3] = 0
    Image.fromarray(rgba, "RGBA").save(path)
    blur = read_mask(path, "blur_white")
    assert blur[0, 0] == 1 and blur[0, -1] == 0


def test_read_mask_reads_one_bit_and_16_bit_masks(tmp_path: Path) -> None:
    Image.fromarray(_left_white_right_black() > 0).save(tmp_path / "bits.png")
    Image.fromarray(_left_white_right_black().astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("bits.png", "deep.png"):
        blur = read_mask(tmp_path / name, "blur_white")
        assert blur[0, 0] == 1 and blur[0, -1] == 0, name


def test_read_mask_rejects_unknown_polarity(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(_left_white_right_black(), "L").save(path)
    with pytest.raises(DBDError, match="blur_white or sharp_white") as err:
        read_mask(path, "white_is_blur")
    _assert_clear_error(err, path)


# --- broken files ----------------------------------------------------------------------------


def _write_broken(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nowhere.jpg"
    if kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
        return path
    if kind == "text_named_png":
        path = tmp_path / "notes.png"
        path.write_text("this is not a picture\nsecond line\n")
        return path
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole.{'jpg' if kind == 'truncated_jpeg' else 'png'}"
    Image.fromarray(noise).save(whole)
    data = whole.read_bytes()
    path = tmp_path / f"cut{whole.suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


BROKEN = ["missing", "empty", "text_named_png", "truncated_jpeg", "truncated_png"]


@pytest.mark.parametrize("kind", BROKEN)
def test_read_image_reports_broken_file_in_one_line(tmp_path: Path, kind: str) -> None:
    path = _write_broken(tmp_path, kind)
    with pytest.raises(DBDError) as err:
        read_image(path)
    _assert_clear_error(err, path)
    assert "cannot read image" in str(err.value)


@pytest.mark.parametrize("kind", BROKEN)
def test_read_mask_reports_broken_file_in_one_line(tmp_path: Path, kind: str) -> None:
    path = _write_broken(tmp_path, kind)
    with pytest.raises(DBDError) as err:
        read_mask(path, "blur_white")
    _assert_clear_error(err, path)
    assert "cannot read mask" in str(err.value)


def test_truncated_jpeg_error_says_truncated_and_how_to_fix(tmp_path: Path) -> None:
    path = _write_broken(tmp_path, "truncated_jpeg")
    with pytest.raises(DBDError, match=r"truncated.*re-save or remove it"):
        read_image(path)


def test_reading_truncated_files_leaves_pil_global_setting_alone(tmp_path: Path) -> None:
    path = _write_broken(tmp_path, "truncated_jpeg")
    with pytest.raises(DBDError):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_folder_instead_of_image_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DBDError) as err:
        read_image(tmp_path)
    _assert_clear_error(err, tmp_path)
