"""Models: ImageNet weights really load, shapes/budgets hold, the student stays phone-friendly,
and checkpoints round-trip while refusing anything unsafe or foreign."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dbd.core import DBDError
from dbd.models import create_model, list_models
from dbd.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from dbd.models.summary import count_macs, count_params
from dbd.runtime.imageio import read_image
from dbd.runtime.spec import PreprocessSpec

BACKBONES = ["efficientnet_lite0", "efficientnet_lite2", "mobilenetv2_100"]
# ImageNet-1k indices: 985 daisy, 850 teddy bear; birds are 7-24, 80-100 and 127-146.
BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
PHOTOS = {
    "fast_defocus_map_inputs/pr11_dflower.png": {985},
    "fast_defocus_map_inputs/pr11_bird.png": BIRDS,
    "hifst_moreimages_F/F1.png": {850},
}


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_model("dbd_student", pretrained=False).eval()


@pytest.mark.parametrize("name", BACKBONES)
def test_imagenet_weights_classify_real_photos_correctly(name, data_root):
    model = create_model(name, pretrained=True).eval()
    spec = PreprocessSpec(input_size=(224, 224), mean=model.pretrained_cfg["mean"], std=model.pretrained_cfg["std"])
    for rel, expected in PHOTOS.items():
        x = torch.from_numpy(spec.preprocess(read_image(data_root / "photos" / rel)))
        with torch.no_grad():
            top1 = int(model(x).argmax(1))
        assert top1 in expected, (
            f"{name} classified {rel} as ImageNet class {top1}, expected one of {sorted(expected)[:5]}"
        )


def test_lite_and_mobilenet_use_their_own_input_normalisation():
    lite = create_model("efficientnet_lite0").pretrained_cfg
    mnv2 = create_model("mobilenetv2_100").pretrained_cfg
    # Lite: (255·x − 127) / 128  <=>  mean 127/255, std 128/255.
    x = np.array([0.0, 127 / 255, 1.0])
    assert np.allclose((x - lite["mean"][0]) / lite["std"][0], (255 * x - 127) / 128)
    assert mnv2["mean"] == (0.485, 0.456, 0.406) and mnv2["std"] == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("name", ["dbd_teacher", "dbd_student"])
def test_dbd_models_output_blur_probability_at_input_resolution(name):
    model = create_model(name).eval()
    for h, w in [(320, 320), (256, 384)]:
        with torch.no_grad():
            prob = model(torch.randn(2, 3, h, w))
            out = model.forward_train(torch.randn(2, 3, h, w))
        assert prob.shape == (2, 1, h, w) and 0 <= prob.min() and prob.max() <= 1
        assert out.logits.shape == (2, 1, h, w)
        assert len(out.side_logits) == 4 and all(s.shape == (2, 1, h, w) for s in out.side_logits)
        strides = [16, 8, 4]
        for feat, ch, s in zip(out.features, model.feature_channels, strides):
            assert feat.shape == (2, ch, h // s, w // s)


@pytest.mark.parametrize(
    "name, max_params, max_gmacs",
    [
        ("dbd_student", 4.0e6, 1.0),
        ("dbd_teacher", 20e6, 10.0),
        ("dbd_discriminator", 0.5e6, 1.0),
        ("mobilenetv2_100", 3.6e6, 0.65),
        ("efficientnet_lite0", 4.7e6, 0.8),
        ("efficientnet_lite2", 6.1e6, 1.2),
    ],
)
def test_params_and_gmacs_at_320(name, max_params, max_gmacs):
    model = create_model(name)
    params, gmacs = count_params(model), count_macs(model, (320, 320)) / 1e9
    assert params <= max_params and gmacs <= max_gmacs, f"{name}: {params / 1e6:.2f} M params, {gmacs:.3f} GMACs"
    assert gmacs > 0.3 * max_gmacs  # the counter really counted the convolutions


def test_mac_counter_matches_published_mobilenetv2_figure():
    # MobileNetV2 1.0 at 224: 300 M multiply-adds (Sandler et al. 2018, Table 3).
    assert abs(count_macs(create_model("mobilenetv2_100"), (224, 224)) / 1e6 - 300) < 3


def test_student_graph_uses_only_int8_friendly_mobile_ops(student):
    graph = torch.export.export(student, (torch.randn(1, 3, 320, 320),)).run_decompositions({})
    ops = {
        str(n.target).split(".")[1] for n in graph.graph.nodes if n.op == "call_function" and "aten" in str(n.target)
    }
    allowed = {
        "conv2d",
        "convolution",
        "_native_batch_norm_legit_no_training",
        "relu",
        "hardtanh",
        "add",
        "cat",
        "upsample_bilinear2d",
        "sigmoid",
        "getitem",
    }
    assert ops <= allowed, f"student uses ops phones may not run natively in int8: {sorted(ops - allowed)}"


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(DBDError, match="did you mean 'dbd_student'"):
        create_model("dbd_studnet")


def test_registry_lists_every_family_member():
    assert set(list_models()) >= {"dbd_teacher", "dbd_student", "dbd_discriminator", *BACKBONES}


def test_checkpoint_round_trip_keeps_outputs_and_card(student, tmp_path):
    path = tmp_path / "student.safetensors"
    spec = PreprocessSpec.for_model(student).to_dict()
    save_checkpoint(path, student, {"preprocess": spec, "metrics": {"mae": 0.1}})
    model, card = load_checkpoint(path, expected_arch="dbd_student")
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        assert torch.equal(model(x), student(x))
    assert card["arch"] == "dbd_student" and card["preprocess"] == spec and card["metrics"] == {"mae": 0.1}
    assert json.loads(path.with_suffix(".json").read_text()) == card == read_card(path)


def test_fp16_checkpoint_is_half_the_size_and_close(student, tmp_path):
    full, half = tmp_path / "f32.safetensors", tmp_path / "f16.safetensors"
    save_checkpoint(full, student)
    save_checkpoint(half, student, dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    model, _ = load_checkpoint(half)
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        assert (model(x) - student(x)).abs().max() < 2e-2


def test_checkpoint_save_rejects_wrong_suffix_and_overwrites_atomically(student, tmp_path):
    with pytest.raises(DBDError, match=r"must end in \.safetensors"):
        save_checkpoint(tmp_path / "x.pt", student)
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, student)
    save_checkpoint(path, student)  # overwriting leaves no temp files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.safetensors"]


def _one_line(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_pickle_checkpoint_is_refused(student, tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(student.state_dict(), path)
    with pytest.raises(DBDError) as err:
        load_checkpoint(path)
    assert "pickle" in _one_line(err, path)


def test_truncated_checkpoint_is_refused(student, tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, student)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DBDError) as err:
        load_checkpoint(path)
    assert "truncated" in _one_line(err, path)


def test_foreign_safetensors_without_card_is_refused(student, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, path)
    with pytest.raises(DBDError) as err:
        load_checkpoint(path)
    assert "no dbd model card" in _one_line(err, path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(path, create_model("dbd_teacher"))
    with pytest.raises(DBDError) as err:
        load_checkpoint(path, expected_arch="dbd_student")
    assert "holds a 'dbd_teacher' but a 'dbd_student'" in _one_line(err, path)


def test_checkpoint_whose_tensors_do_not_fit_its_card_is_refused(student, tmp_path):
    path = tmp_path / "s.safetensors"
    narrow = create_model("dbd_student", decoder_channels=(64, 48, 32, 16))
    narrow.config = student.config  # the card will claim the default architecture
    save_checkpoint(path, narrow)
    with pytest.raises(DBDError) as err:
        load_checkpoint(path)
    assert "does not fit" in _one_line(err, path)


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(DBDError) as err:
        load_checkpoint(path)
    assert "does not exist" in _one_line(err, path)


def test_models_summary_command_prints_params_and_gmacs():
    out = subprocess.run(
        [sys.executable, "-m", "dbd.models", "dbd_student"], capture_output=True, text=True, check=True
    ).stdout
    row = out.splitlines()[1].split()
    assert row[0] == "dbd_student" and 1.0 < float(row[1]) < 4.0 and 0.3 < float(row[2]) <= 1.0


def test_safetensors_whose_header_length_starts_with_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    # The first byte of a safetensors file is the low byte of its header length: 0x80 is possible.
    model = create_model("dbd_student")
    for extra in range(0, 256, 8):
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, model, {"pad": "x" * extra})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path)[1]["arch"] == "dbd_student"


def test_cards_record_every_constructor_argument_so_a_changed_default_cannot_change_a_checkpoint():
    student = create_model("dbd_student")
    assert student.config == {
        "encoder": "mobilenetv2_100",
        "context_channels": 96,
        "decoder_channels": [96, 64, 48, 32],
        "connectivity": False,
        "srfb": False,
        "sab": False,
        "separated_attention": False,
    }
    rebuilt = create_model("dbd_student", **student.config)  # the card's config builds the same network
    assert rebuilt.config == student.config
    assert create_model("mobilenetv2_100", features_only=True).config == {"features_only": True}
