"""Runtime: the Predictor over a checkpoint, and dbd-predict on images, folders and videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dbd.core import DBDError
from dbd.models import create_model
from dbd.models.checkpoint import save_checkpoint
from dbd.runtime.cli import main as predict_main
from dbd.runtime.imageio import read_image
from dbd.runtime.predictor import Predictor
from dbd.runtime.refine import RefineSpec
from dbd.runtime.spec import PreprocessSpec


@pytest.fixture(scope="module")
def small_student(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("dbd_student")
    path = tmp_path_factory.mktemp("w") / "student.safetensors"
    save_checkpoint(path, model, {"preprocess": PreprocessSpec.for_model(model, (128, 128)).to_dict()})
    return path


def test_predictor_returns_a_map_at_the_photo_resolution(small_student, data_root):
    predictor = Predictor(small_student, threads=1)
    image = read_image(data_root / "photos" / "fast_defocus_map_inputs" / "pr11_bird.png")
    prob = predictor.predict(image)
    assert prob.shape == image.shape[:2] and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    assert predictor.spec.input_size == (128, 128)  # read from the checkpoint's card


def test_batched_prediction_equals_one_by_one(small_student):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(100, 150), (128, 128), (300, 90)]]
    predictor = Predictor(small_student, threads=1, batch=3)
    together = predictor.predict_many(images)
    for image, prob in zip(images, together):
        assert np.allclose(prob, Predictor(small_student, threads=1, batch=1).predict_many([image])[0], atol=1e-5)


def test_tiling_blends_tiles_into_a_full_size_map(small_student):
    image = np.random.default_rng(1).integers(0, 256, (500, 700, 3), dtype=np.uint8)
    prob = Predictor(small_student, threads=1, tile=256).predict(image)
    assert prob.shape == (500, 700) and np.isfinite(prob).all()


def test_pickle_and_unknown_weights_are_refused(tmp_path):
    for name, fragment in [
        ("m.pt", "pickle"),
        ("m.h5", "expected a .safetensors checkpoint or a .onnx, .tflite, .mlpackage, .ncnn or .pte"),
    ]:
        path = tmp_path / name
        path.write_bytes(b"\x80\x04junk")
        with pytest.raises(DBDError, match=fragment):
            Predictor(path)


def test_predict_writes_map_mask_and_overlay_for_a_folder(small_student, data_root, tmp_path, capsys):
    photos = data_root / "photos" / "hifst_moreimages_F"
    assert predict_main([str(photos), "--weights", str(small_student), "--out", str(tmp_path), "--threads", "1"]) == 0
    for stem in ("F1", "F2", "F3", "F4"):
        blur = cv2.imread(str(tmp_path / photos.name / f"{stem}_blur.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / photos.name / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert blur.shape == read_image(photos / f"{stem}.png").shape[:2] and blur.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert (tmp_path / photos.name / f"{stem}_overlay.jpg").exists()


def test_predict_library_call_writes_a_photo_folder_and_says_what_it_wrote(small_student, data_root, tmp_path):
    from dbd.runtime import Predictor, predict

    assert Predictor.__name__ == "Predictor"
    photos = data_root / "photos" / "hifst_moreimages_F"
    result = predict(
        photos,
        tmp_path / "out",
        weights=small_student,
        save=["map", "overlay"],
        overlay_style="heat",
        threads=1,
        progress=False,
    )
    assert result.weights == small_student and not result.skipped and not result.renamed
    assert [f.source for f in result.files] == sorted(photos.glob("*.png"))
    for file in result.files:
        assert set(file.outputs) == {"map", "overlay"} and file.frames == 1 and file.seconds > 0
        assert file.outputs["map"] == tmp_path / "out" / photos.name / f"{file.source.stem}_blur.png"
        photo = read_image(file.source)
        blur = cv2.imread(str(file.outputs["map"]), cv2.IMREAD_UNCHANGED)
        drawn = cv2.imread(str(file.outputs["overlay"]))[..., ::-1]
        assert blur.shape == photo.shape[:2] and drawn.shape == photo.shape
        assert np.abs(drawn.astype(int) - photo).mean() > 10  # the heat map is blended in
    assert sorted(result.written) == sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())  # no masks
    assert result.seconds >= result.load_seconds > 0
    assert result.summary() == (
        f"wrote map, overlay for 4 file(s) to {tmp_path / 'out'}/ with {small_student}, map: {RefineSpec().describe()}"
    )
    with pytest.raises(DBDError, match="--save takes one or more of map, mask, overlay, got thumbnail"):
        predict(photos, tmp_path / "none", weights=small_student, save=["thumbnail"])
    assert not (tmp_path / "none").exists()


def test_unreadable_file_in_a_folder_is_skipped_and_reported(small_student, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.full((64, 80, 3), 120, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    code = predict_main([str(folder), "--weights", str(small_student), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "broken.jpg" in err and "Traceback" not in err
    assert (tmp_path / "out" / "in" / "good_blur.png").exists()


def test_single_unreadable_file_is_one_line_error(small_student, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    assert predict_main([str(broken), "--weights", str(small_student), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(broken) in err


def test_video_gets_an_overlay_video_with_every_frame(small_student, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    assert (
        predict_main(
            [str(video), "--weights", str(small_student), "--out", str(tmp_path / "o"), "--save", "map", "overlay"]
        )
        == 0
    )
    for kind in ("overlay", "blur"):
        capture = cv2.VideoCapture(str(tmp_path / "o" / f"clip_{kind}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        capture.release()
    assert not list((tmp_path / "o").glob(".*tmp*"))  # temp files renamed away


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{tmp}/missing.jpg"], "does not exist"),
        (["{tmp}"], "holds no images"),
        (["--threshold", "1.5", "{tmp}"], "--threshold"),
        (["--tile", "10", "{photo}"], "--tile"),
    ],
)
def test_bad_arguments_are_one_line(args, fragment, small_student, data_root, tmp_path, capsys):
    photo = data_root / "photos" / "hifst_moreimages_F" / "F1.png"
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{photo}", str(photo)) for a in args]
    assert predict_main([*argv, "--weights", str(small_student), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


@pytest.fixture(scope="module")
def small_onnx(small_student, tmp_path_factory) -> Path:
    from dbd.export.cli import main as export_main

    out = tmp_path_factory.mktemp("onnx")
    assert (
        export_main(
            [
                "--format",
                "onnx",
                "--precision",
                "fp32",
                "--weights",
                str(small_student),
                "--calib",
                "dut",
                "--calib-n",
                "2",
                "--parity-n",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return next(out.glob("*.onnx"))


def test_predictor_runs_an_exported_file_like_its_checkpoint(small_onnx, small_student):
    image = np.random.default_rng(2).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    from_onnx = Predictor(small_onnx, threads=1).predict(image)
    from_torch = Predictor(small_student, threads=1).predict(image)
    assert np.abs(from_onnx - from_torch).max() < 1e-4


def test_exported_file_whose_metadata_claims_another_input_size_is_refused(small_onnx, tmp_path):
    import json

    import onnx

    model = onnx.load(str(small_onnx))
    entry = next(p for p in model.metadata_props if p.key == "dbd")
    doc = json.loads(entry.value)
    doc["input"]["shape"] = [1, 3, 96, 96]  # consistently, or the metadata's own check refuses it first
    doc["input"]["size"] = doc["preprocess"]["input_size"] = [96, 96]
    entry.value = json.dumps(doc)
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    with pytest.raises(DBDError, match=r"declares input shape \[1, 3, 96, 96\].*graph takes \[1, 3, 128, 128\]"):
        Predictor(tampered)


def test_exported_file_without_dbd_metadata_is_refused(small_onnx, tmp_path):
    import onnx

    model = onnx.load(str(small_onnx))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(DBDError, match="no 'dbd' metadata"):
        Predictor(bare)


def test_dbd_predict_refines_by_default_and_refine_none_writes_the_bilinear_map(tmp_path, data_root):
    photo = data_root / "photos" / "fast_defocus_map_inputs" / "pr11_bird.png"
    for flag in ([], ["--refine", "none"]):
        out = tmp_path / (flag[-1] if flag else "default")
        assert predict_main([str(photo), "--out", str(out), "--save", "map", "--threads", "1", *flag]) == 0
    image = read_image(photo)
    shipped = Predictor(threads=1)
    assert shipped.spec.refine.enabled  # the shipped student's card carries the guided filter
    refined = cv2.imread(str(tmp_path / "default" / "pr11_bird_blur.png"), cv2.IMREAD_GRAYSCALE)
    bilinear = cv2.imread(str(tmp_path / "none" / "pr11_bird_blur.png"), cv2.IMREAD_GRAYSCALE)
    expected_refined = np.rint(shipped.predict(image) * 255)
    expected_bilinear = np.rint(Predictor(threads=1, refine="none").predict(image) * 255)
    assert np.abs(refined.astype(int) - expected_refined).max() <= 1
    assert np.abs(bilinear.astype(int) - expected_bilinear).max() <= 1
    assert np.abs(refined.astype(int) - bilinear.astype(int)).max() > 20  # the refinement changed the map


def test_refine_setting_of_the_api_is_checked(small_student):
    with pytest.raises(DBDError, match="refine"):
        Predictor(small_student, refine="bicubic")
    with pytest.raises(DBDError, match="refine"):
        Predictor(small_student, refine=3)
