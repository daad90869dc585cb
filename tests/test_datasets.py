"""Datasets: the real benchmark layouts open with the right splits and the right mask polarity, user
mistakes get one-line errors, and the synthetic generator gives honest labels.

Polarity is proven from pixels, not from the catalogue: where a mask says blur, the photo must be
measurably less sharp than where it says sharp. An inverted loader would pass every shape check and
still train a model to find the wrong thing.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dbd.core import DBDError, find_data_root
from dbd.core import data_root as data_root_module
from dbd.data.datasets import CATALOGUE, PairedDataset, open_dataset
from dbd.data.synthetic import SyntheticDefocus, disc_blur, disc_kernel


def region_sharpness(image: np.ndarray, blur_mask: np.ndarray, margin: int = 7) -> tuple[float, float]:
    """Mean |Laplacian| of the grey image inside the blur and the sharp region (edges eroded away)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    laplacian = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    blur = cv2.erode(blur_mask.astype(np.uint8), kernel).astype(bool)
    sharp = cv2.erode((1 - blur_mask).astype(np.uint8), kernel).astype(bool)
    assert blur.any() and sharp.any(), "sample needs both regions to compare"
    return float(laplacian[blur].mean()), float(laplacian[sharp].mean())


def assert_clear_error(err: pytest.ExceptionInfo, *names: object) -> str:
    """A DBDError on one line that names every given file or folder."""
    message = str(err.value)
    assert err.type is DBDError
    assert "\n" not in message
    for name in names:
        assert str(name) in message, f"{name!s} not named in: {message}"
    return message


def make_dataset(folder: Path, pairs: dict[str, str | None], size=(24, 16), mask_size=None) -> Path:
    """Write images/ + masks/ under folder: {image filename: mask filename or None}."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    width, height = size
    mask_w, mask_h = mask_size or size
    for image_name, mask_name in pairs.items():
        if image_name:
            Image.new("RGB", (width, height), (90, 120, 200)).save(
                folder / "images" / image_name, format=_pil_format(image_name)
            )
        if mask_name:
            white_left = np.zeros((mask_h, mask_w), np.uint8)
            white_left[:, : mask_w // 2] = 255
            Image.fromarray(white_left, "L").save(folder / "masks" / mask_name, format=_pil_format(mask_name))
    return folder


def _pil_format(name: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[Path(name).suffix.lower()]


# --- the real benchmarks ---------------------------------------------------------------------


def test_cuhk_train_and_test_splits_have_604_and_100_pairs(data_root: Path) -> None:
    train = open_dataset("cuhk", split="train", root=data_root)
    test = open_dataset("cuhk", split="test", root=data_root)
    assert (len(train), len(test)) == (604, 100)


def test_cuhk_splits_are_disjoint_and_cover_all_704(data_root: Path) -> None:
    train = {s.name for s in open_dataset("cuhk", split="train", root=data_root).samples}
    test = {s.name for s in open_dataset("cuhk", split="test", root=data_root).samples}
    everything = {s.name for s in open_dataset("cuhk", root=data_root).samples}
    assert not train & test
    assert train | test == everything and len(everything) == 704


def test_cuhk_split_entries_match_upper_case_jpg_files(data_root: Path) -> None:
    samples = (
        open_dataset("cuhk", split="train", root=data_root).samples
        + open_dataset("cuhk", split="test", root=data_root).samples
    )
    upper = [s for s in samples if s.image_path.suffix == ".JPG"]
    assert len(upper) == 42  # the split files say .jpg; these 42 files are .JPG


def test_cuhk_test_split_keeps_the_split_file_order(data_root: Path) -> None:
    names = [s.name for s in open_dataset("cuhk", split="test", root=data_root).samples[:3]]
    assert names == ["out_of_focus0037", "out_of_focus0117", "out_of_focus0126"]  # BTBNet's 1, 2, 3


def test_dut_samples_open_as_five_320px_pairs(data_root: Path) -> None:
    dut = open_dataset("dut", root=data_root)
    assert dut.spec.polarity == "sharp_white" and len(dut) == 5
    for image, mask in dut:
        assert image.shape == (320, 320, 3) and image.dtype == np.uint8
        assert mask.shape == (320, 320) and mask.dtype == np.float32
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


def test_cuhk_mask_polarity_blur_region_is_less_sharp(data_root: Path) -> None:
    test = open_dataset("cuhk", split="test", root=data_root)
    for index in range(8):
        blur, sharp = region_sharpness(*test[index])
        assert blur < 0.5 * sharp, f"{test.samples[index].name}: blur {blur:.2f} vs sharp {sharp:.2f}"


def test_dut_mask_polarity_blur_region_is_less_sharp(data_root: Path) -> None:
    dut = open_dataset("dut", root=data_root)
    for index in range(len(dut)):
        blur, sharp = region_sharpness(*dut[index])
        assert blur < 0.5 * sharp, f"{dut.samples[index].name}: blur {blur:.2f} vs sharp {sharp:.2f}"


def test_catalogue_names_and_folder_names_are_case_insensitive(data_root: Path) -> None:
    assert open_dataset("CUHK", split="test", root=data_root).name == "cuhk"
    assert open_dataset("Dut-Samples", root=data_root).name == "dut"


def test_folder_path_of_catalogued_dataset_uses_its_polarity_and_splits(data_root: Path) -> None:
    cuhk = open_dataset(data_root / "CUHK", split="test")
    assert cuhk.spec is CATALOGUE["cuhk"] and len(cuhk) == 100
    assert open_dataset(str(data_root / "DUT-samples")).spec.polarity == "sharp_white"


def test_catalogue_polarities_follow_the_dataset_documentation() -> None:
    assert {name: spec.polarity for name, spec in CATALOGUE.items()} == {
        "cuhk": "blur_white",
        "dut": "sharp_white",
        "ctcug": "blur_white",
        "szu-bd": "blur_white",
    }
    assert CATALOGUE["dut"].dirnames == ("DUT", "DUT-samples")


# --- generic folders -------------------------------------------------------------------------


def test_generic_folder_pairs_by_stem_across_extensions_and_case(tmp_path: Path) -> None:
    pairs = {"a.JPG": "a.png", "b.jpeg": "b.BMP", "c.bmp": "c.jpg", "10.png": "10.png"}
    folder = make_dataset(tmp_path / "mine", pairs)
    (folder / "images" / "README.txt").write_text("not an image")
    dataset = open_dataset(folder, polarity="blur_white")
    assert isinstance(dataset, PairedDataset)
    assert [s.name for s in dataset.samples] == ["10", "a", "b", "c"]
    image, mask = dataset[1]
    assert image.shape == (16, 24, 3) and mask.shape == (16, 24)
    assert mask[0, 0] == 1 and mask[0, -1] == 0  # white (left) = blur


def test_generic_folder_with_sharp_white_masks_is_inverted(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.png": "a.png"})
    _, mask = open_dataset(folder, polarity="sharp_white")[0]
    assert mask[0, 0] == 0 and mask[0, -1] == 1


def test_split_can_be_given_as_a_split_file_path(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png", "b.jpg": "b.png", "c.jpg": "c.png"})
    split = tmp_path / "val.txt"
    split.write_text("c.jpg\n\nimages/a.JPG\n")
    dataset = open_dataset(folder, split=str(split), polarity="blur_white")
    assert [s.name for s in dataset.samples] == ["c", "a"]


# --- user mistakes: one clear line each ------------------------------------------------------


def test_mask_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.png": "a.png"}, size=(24, 16), mask_size=(12, 8))
    dataset = open_dataset(folder, polarity="blur_white")
    with pytest.raises(DBDError) as err:
        dataset[0]
    message = assert_clear_error(err, folder / "images" / "a.png", folder / "masks" / "a.png")
    assert "12x8" in message and "24x16" in message


def test_folder_with_no_pairs_says_what_layout_is_expected(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    with pytest.raises(DBDError, match="no image/mask pairs") as err:
        open_dataset(folder, polarity="blur_white")
    assert_clear_error(err, folder / "masks", folder / "images")


def test_folder_without_masks_subfolder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "half"
    (folder / "images").mkdir(parents=True)
    with pytest.raises(DBDError) as err:
        open_dataset(folder, polarity="blur_white")
    assert_clear_error(err, folder / "masks")


def test_image_without_mask_names_count_and_first_example(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png", "b.jpg": None, "c.jpg": None})
    with pytest.raises(DBDError) as err:
        open_dataset(folder, polarity="blur_white")
    message = assert_clear_error(err, "b.jpg", folder / "masks")
    assert message.startswith("2 image(s)")


def test_mask_without_image_names_count_and_first_example(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png"})
    make_dataset(folder, {"": "z.png"})
    with pytest.raises(DBDError) as err:
        open_dataset(folder, polarity="blur_white")
    assert assert_clear_error(err, "z.png", folder / "images").startswith("1 mask(s)")


def test_two_images_with_one_stem_are_ambiguous(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png", "a.png": None})
    with pytest.raises(DBDError, match="ambiguous") as err:
        open_dataset(folder, polarity="blur_white")
    assert_clear_error(err, "a.jpg", "a.png")


def test_unknown_dataset_name_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(DBDError) as err:
        open_dataset("cuhkk", root=tmp_path)
    message = assert_clear_error(err, "cuhkk")
    assert "did you mean 'cuhk'?" in message
    assert all(name in message for name in CATALOGUE)


def test_generic_folder_without_polarity_asks_for_it(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png"})
    with pytest.raises(DBDError) as err:
        open_dataset(folder)
    message = assert_clear_error(err, folder)
    assert "polarity is unknown" in message and "--polarity" in message


def test_bad_polarity_value_is_a_clear_error(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "mine", {"a.jpg": "a.png"})
    with pytest.raises(DBDError, match="blur_white or sharp_white"):
        open_dataset(folder, polarity="white")


def test_catalogued_name_with_contradicting_polarity_is_refused(data_root: Path) -> None:
    with pytest.raises(DBDError, match="stores sharp_white masks"):
        open_dataset("dut", polarity="blur_white", root=data_root)


def test_missing_catalogued_dataset_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DBDError) as err:
        open_dataset("szu-bd", root=tmp_path)
    message = assert_clear_error(err, tmp_path / "SZU-BD")
    assert "DBD_DATA" in message


def test_missing_folder_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DBDError) as err:
        open_dataset(tmp_path / "absent", polarity="blur_white")
    assert_clear_error(err, tmp_path / "absent")


def test_unknown_split_lists_the_known_splits(data_root: Path) -> None:
    with pytest.raises(DBDError) as err:
        open_dataset("cuhk", split="val", root=data_root)
    message = assert_clear_error(err, "val")
    assert "train, test" in message


def test_missing_split_file_of_a_catalogued_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path / "CUHK", {"a.jpg": "a.png"})
    with pytest.raises(DBDError) as err:
        open_dataset("cuhk", split="test", root=tmp_path)
    assert_clear_error(err, tmp_path / "CUHK" / "splits" / "cuhk_te1_test_100.txt")


def test_empty_split_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "CUHK", {"a.jpg": "a.png"})
    split = folder / "splits" / "cuhk_te1_test_100.txt"
    split.parent.mkdir()
    split.write_text("\n  \n")
    with pytest.raises(DBDError, match="empty") as err:
        open_dataset("cuhk", split="test", root=tmp_path)
    assert_clear_error(err, split)


def test_split_listing_a_missing_image_names_it_and_the_split_file(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "CUHK", {"a.jpg": "a.png"})
    split = folder / "splits" / "cuhk_tr1_train_604.txt"
    split.parent.mkdir()
    split.write_text("a.jpg\nghost.jpg\n")
    with pytest.raises(DBDError) as err:
        open_dataset("cuhk", split="train", root=tmp_path)
    assert_clear_error(err, split, "ghost.jpg")


def test_dbd_data_pointing_nowhere_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = tmp_path / "no" / "data"
    monkeypatch.setenv("DBD_DATA", str(nowhere))
    with pytest.raises(DBDError) as err:
        find_data_root()
    assert "set DBD_DATA=/path/to/shared/data" in assert_clear_error(err, nowhere)


def test_dbd_data_is_used_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBD_DATA", str(tmp_path))
    assert find_data_root() == tmp_path.resolve()


def test_data_root_falls_back_to_beside_the_repo(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBD_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # ../shared/data from here does not exist
    assert find_data_root() == (data_root_module.REPO_ROOT / "../shared/data").resolve()


def test_no_data_anywhere_lists_places_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBD_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_root_module, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DBDError) as err:
        find_data_root()
    message = assert_clear_error(err, (tmp_path / "../shared/data").resolve())
    assert "set DBD_DATA=/path/to/shared/data" in message


# --- synthetic defocus -----------------------------------------------------------------------


def test_disc_kernel_is_normalised_and_symmetric() -> None:
    for radius in (0.7, 2.0, 3.5, 12.0):
        kernel = disc_kernel(radius)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1, ::-1])
    assert disc_kernel(0.2).tolist() == [[1.0]]
    assert disc_kernel(12.0).shape == (25, 25)


def test_disc_blur_of_large_radius_matches_full_resolution_filter() -> None:
    image = SyntheticDefocus(seed=3)[0][0].astype(np.float32)
    fast = disc_blur(image, 9.0)
    exact = cv2.filter2D(image, -1, disc_kernel(9.0), borderType=cv2.BORDER_REFLECT)
    assert np.abs(fast - exact)[16:-16, 16:-16].mean() < 1.5  # grey levels, on 0..255


def test_synthetic_samples_are_deterministic_per_seed_and_index() -> None:
    first, again, other = SyntheticDefocus(seed=7), SyntheticDefocus(seed=7), SyntheticDefocus(seed=8)
    for index in (0, 5):
        assert all(np.array_equal(a, b) for a, b in zip(first[index], again[index]))
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])


def test_synthetic_masks_are_binary_with_varied_coverage() -> None:
    synthetic = SyntheticDefocus(size=(96, 128), length=40)
    coverages = []
    for image, mask in synthetic:
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (96, 128) and mask.dtype == np.float32
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
        coverages.append(float(mask.mean()))
    assert len(coverages) == 40
    assert 0.08 <= min(coverages) < 0.3 and 0.7 < max(coverages) <= 0.92


def test_synthetic_blurred_region_is_less_sharp() -> None:
    synthetic = SyntheticDefocus(seed=1)
    for index in range(10):
        blur, sharp = region_sharpness(*synthetic[index])
        assert blur < 0.5 * sharp, f"sample {index}: blur {blur:.2f} vs sharp {sharp:.2f}"


def test_synthetic_crops_source_photos(data_root: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(small)
    photo = data_root / "photos" / "hifst_moreimages_F" / "F1.png"
    synthetic = SyntheticDefocus(size=(64, 80), sources=[small, photo], length=6)
    for image, mask in synthetic:
        assert image.shape == (64, 80, 3) and mask.shape == (64, 80)
