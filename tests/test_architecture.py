"""Networks composed of parts: the shipped weights still mean what they meant, a decoder variant is
one registered function, the feature contract is checked, and the papers' decoder components
(SRFB, SAB, separated attention) start as the identity, learn, and export with builtin ops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY
from torch import nn

from dbd.core import DBDError
from dbd.models import EncoderDecoderNet, create_model, register_model
from dbd.models.attention import SelectiveReceptiveField, SeparatedAttention, SupervisionGuidedAttention
from dbd.models.checkpoint import load_checkpoint, save_checkpoint
from dbd.models.layers import SeparableConvBNAct, upsample_like
from dbd.training.cli import main
from dbd.training.networks import warm_start

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"


def _digest(t: torch.Tensor) -> tuple[float, float, float]:
    t = t.double()
    return round(t.sum().item(), 6), round((t * t).sum().item(), 6), round(t.flatten()[::997].sum().item(), 6)


# Printed by the pre-refactor classes (commit 1aea60d, DBDStudent/DBDTeacher before EncoderDecoderNet)
# for x = torch.randn(1, 3, 320, 320) after torch.manual_seed(0): sum, sum of squares and a strided
# sample of each shipped network's map. The student shipped after the refactor was loaded into
# those old classes (its state dict, strict) to print its digest.
SHIPPED_OUTPUT_DIGESTS = {
    "student": (1019.256534, 12.072536, 1.066858),
    "teacher": (2700.118147, 93.449754, 3.057501),
}


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_shipped_weights_load_into_the_composed_networks_with_unchanged_keys_and_outputs(name):
    net, card = load_checkpoint(WEIGHTS / f"dbd_{name}.safetensors")
    own = set(net.state_dict())
    from safetensors import safe_open

    with safe_open(str(WEIGHTS / f"dbd_{name}.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert own == stored  # no key conversion was needed
    torch.manual_seed(0)
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        digest = _digest(net.eval()(x))
    assert digest == pytest.approx(
        SHIPPED_OUTPUT_DIGESTS[name], rel=1e-5
    )  # CPUs with other SIMD widths sum in other orders


class TwoConvBlock(nn.Module):
    """A decoder variant defined here, in the test: upsample, concatenate, two separable convs."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.convs = nn.Sequential(SeparableConvBNAct(cin + cskip, cout), SeparableConvBNAct(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([upsample_like(x, skip), skip], 1))


@register_model
def dbd_student_three_level(pretrained: bool = False, decoder_channels: tuple[int, ...] = (64, 48, 32), **options):
    """A 3-level decoder (head at stride 4) over the student's encoder."""
    encoder = create_model("mobilenetv2_100", pretrained=pretrained, features_only=True)
    return EncoderDecoderNet(
        encoder,
        nn.Conv2d(encoder.feature_info[-1]["channels"], 96, 1),
        96,
        TwoConvBlock,
        decoder_channels,
        nn.Conv2d(decoder_channels[-1], 1, 1),
        **options,
    )


def test_a_decoder_variant_is_one_registered_function_and_declares_its_features():
    net = create_model("dbd_student_three_level")
    assert net.stage_strides == (32, 16, 8, 4)
    assert net.feature_strides == (16, 8, 4) and net.feature_channels == (64, 48, 32)
    out = net.forward_train(torch.randn(2, 3, 64, 64))
    assert [f.shape[1:] for f in out.features] == [(64, 4, 4), (48, 8, 8), (32, 16, 16)]
    assert out.logits.shape == (2, 1, 64, 64) and len(out.side_logits) == 3


def test_the_student_takes_a_three_level_decoder_and_trains_a_step_with_feature_distillation(
    tiny_teacher,  # noqa: F811  (the imported fixture)
    tmp_path,
    capsys,
):
    out = tmp_path / "student"
    code = main(
        [
            "student",
            *TINY,
            "--teacher",
            str(tiny_teacher),
            "--kd-feat",
            "1",
            "--kd-out",
            "1",
            "--adv-gt",
            "0",
            "--adv-teacher",
            "0",
            "--model-config",
            "decoder_channels=[64,48,32]",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--amp",
            "off",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    net, card = load_checkpoint(out / "best.safetensors")
    assert card["config"]["decoder_channels"] == [64, 48, 32] and net.feature_strides == (16, 8, 4)
    assert "train_kd_feat" in (out / "log.csv").read_text().splitlines()[0]


def test_a_registered_decoder_trains_as_the_student_by_arch_with_a_student_as_its_teacher(tiny_teacher, tmp_path):
    """The architecture is a training setting: `--arch NAME` trains any registered DBD network in
    either stage, and any DBD network may teach (here the shipped student, self-distillation)."""
    out = tmp_path / "three_level"
    args = [
        "student",
        *TINY,
        "--arch",
        "dbd_student_three_level",
        "--teacher",
        str(WEIGHTS / "dbd_student.safetensors"),
    ]
    args += ["--kd-feat", "0", "--adv-gt", "0", "--adv-teacher", "0", "--epochs", "1", "--max-steps-per-epoch", "1"]
    assert main([*args, "--amp", "off", "--out", str(out)]) == 0
    net, card = load_checkpoint(out / "last.safetensors")
    assert net.arch == "dbd_student_three_level" and card["training"]["teacher"]["arch"] == "dbd_student"
    assert card["training"]["config"]["arch"] == "dbd_student_three_level"
    assert "train_kd_out" in (out / "log.csv").read_text().splitlines()[0]


def test_feature_distillation_between_decoders_of_different_strides_is_one_line(
    tiny_teacher,  # noqa: F811  (the imported fixture)
    tmp_path,
    capsys,
):
    capsys.readouterr()  # the fixture's training output
    code = main(
        [
            "student",
            *TINY,
            "--teacher",
            str(tiny_teacher),
            "--kd-feat",
            "1",
            "--model-config",
            "decoder_channels=[64,48]",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "strides (16, 8)" in err and "--kd-feat 0" in err and len(err.strip().splitlines()) == 1


def test_a_decoder_with_more_levels_than_the_encoder_is_one_line():
    with pytest.raises(DBDError, match="needs 1 to 4 levels"):
        create_model("dbd_student", decoder_channels=(96, 64, 48, 32, 16))


def test_a_model_config_flag_that_is_not_toml_is_one_line(tmp_path, capsys):
    code = main(
        [
            "student",
            *TINY,
            "--kd-out",
            "0",
            "--kd-feat",
            "0",
            "--adv-gt",
            "0",
            "--adv-teacher",
            "0",
            "--model-config",
            "srfb=yes",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--model-config" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "block",
    [
        lambda: SelectiveReceptiveField(16),
        lambda: SupervisionGuidedAttention(16),
        lambda: SeparatedAttention(16),
    ],
)
def test_each_paper_block_starts_as_the_identity_and_its_gradients_flow(block):
    torch.manual_seed(0)
    module = block().train()
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    side = torch.randn(2, 1, 4, 4)
    if isinstance(module, SelectiveReceptiveField):
        y, identity = module(x), x
    elif isinstance(module, SupervisionGuidedAttention):
        y, identity = module(x, side), x
    else:
        y, identity = module(x, side), side
    assert y.shape == identity.shape and torch.equal(y, identity)
    y.square().sum().backward()
    trainable = [p for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trainable, "the zero-initialised last layer must receive a gradient"


def test_selective_receptive_field_weights_are_a_softmax_over_its_branches():
    module = SelectiveReceptiveField(8, dilations=(1, 2)).eval()
    nn.init.ones_(module.project[1].weight)
    x = torch.randn(1, 8, 6, 6)
    branches = [b(x) for b in module.branches]
    with torch.no_grad():
        nn.init.zeros_(module.select.weight)
        nn.init.zeros_(module.select.bias)  # equal logits: the selection averages the branches
        expected = x + module.project((branches[0] + branches[1]) / 2)
        assert torch.allclose(module(x), expected, atol=1e-6)


def test_supervision_guided_attention_weighs_features_by_the_side_output():
    module = SupervisionGuidedAttention(1).eval()
    conv, bn = module.project[0], module.project[1]
    nn.init.ones_(conv.weight)
    nn.init.ones_(bn.weight)
    x = torch.ones(1, 1, 2, 2)
    side = torch.tensor([[[[-100.0, 100.0], [0.0, 0.0]]]])  # clear, blurred, unsure
    with torch.no_grad():
        y = module(x, side)
    # BN in eval with running mean 0, var 1: x + x * sigmoid(side)
    assert torch.allclose(y, torch.tensor([[[[1.0, 2.0], [1.5, 1.5]]]]), atol=1e-4)


def test_separated_attention_sends_clear_and_blurred_pixels_to_different_streams():
    module = SeparatedAttention(8).eval()
    seen = {}
    module.clear.register_forward_hook(lambda m, i, o: seen.__setitem__("clear", i[0]))
    module.blurred.register_forward_hook(lambda m, i, o: seen.__setitem__("blurred", i[0]))
    x = torch.ones(1, 8, 2, 2)
    logits = torch.tensor([[[[-100.0, 100.0], [-100.0, 100.0]]]])  # left column clear, right blurred
    with torch.no_grad():
        module(x, logits)
    assert torch.allclose(seen["clear"][0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(seen["blurred"][0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


@pytest.mark.parametrize("option", ["srfb", "sab", "separated_attention"])
def test_a_trained_student_warm_starts_with_a_paper_block_and_predicts_the_same_at_first(option, tmp_path):
    torch.manual_seed(0)
    base = create_model("dbd_student").eval()
    for m in base.modules():  # non-trivial BN statistics, as in a trained network
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "base.safetensors", base)
    net = create_model("dbd_student", **{option: True})
    warm_start(net, str(tmp_path / "base.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), base(x))
    # ... but a network trained WITH the block cannot silently drop it
    save_checkpoint(tmp_path / "with.safetensors", net)
    with pytest.raises(DBDError, match="was built with config"):
        warm_start(create_model("dbd_student"), str(tmp_path / "with.safetensors"))


@pytest.mark.slow
def test_the_student_with_every_component_exports_to_int8_tflite_with_builtin_ops(tmp_path, data_root):
    from dbd.export import export_model

    torch.manual_seed(0)
    net = create_model("dbd_student", srfb=True, sab=True, separated_attention=True, connectivity=True)
    for m in net.modules():  # let the identity-initialised blocks contribute, as after training
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    nn.init.normal_(net.separated_attention.fuse.weight, std=0.1)
    save_checkpoint(tmp_path / "all.safetensors", net)
    report = export_model(
        weights=tmp_path / "all.safetensors", formats="tflite", precisions="int8", out=tmp_path / "exports"
    )
    (outcome,) = report.outcomes
    # ok = written after verification: builtin ops only, no layout Transpose, within the parity budget
    assert outcome.ok, (outcome.error, outcome.failures)
