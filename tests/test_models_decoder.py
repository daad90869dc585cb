"""The decoder is a module of its own and the papers' components are its options, declared once:
an option defined here, in the test (one class, one registration), is a flag of the student and
the teacher alike, trains through the real training loop, warm-starts from a network trained
without it, and leaves the networks built without it exactly as they were (keys, names, outputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from safetensors import safe_open
from torch import nn

from dbd.core import DBDError
from dbd.models import DecoderOption, TopDownDecoder, create_model, register_decoder_option
from dbd.models.checkpoint import load_checkpoint, save_checkpoint
from dbd.models.decoder import DECODER_OPTIONS, unregister_decoder_option
from dbd.models.student import LightDecoderBlock
from dbd.training.cli import main
from dbd.training.networks import warm_start

SHIPPED_STUDENT = Path(__file__).resolve().parents[1] / "models" / "weights" / "dbd_student.safetensors"


class ToyGate(nn.Module):
    """A paper's block as a user would add one: a residual 1x1 conv that starts at zero (identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


@pytest.fixture
def toy_gate():
    register_decoder_option("toy_gate", DecoderOption(ToyGate, "stage", "toy_gate"))
    yield "toy_gate"
    # Registered for this test only: cards written afterwards must not name it.
    unregister_decoder_option("toy_gate")


def _bn_statistics(net: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, as in a trained network."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def test_the_papers_components_are_declared_once_as_decoder_options():
    assert list(DECODER_OPTIONS) == ["srfb", "sab", "separated_attention", "connectivity"]
    student = create_model("dbd_student")
    # What --init (training/networks.py) reads, as before the options were a table.
    assert student.additive_options == {
        "srfb": "srfb.",
        "sab": "sab.",
        "separated_attention": "separated_attention.",
        "connectivity": "connectivity_head.",
    }
    assert student.training_only_options == ("connectivity",)
    assert create_model("dbd_teacher").additive_options == student.additive_options


def test_decoder_parts_keep_the_keys_and_module_names_of_the_shipped_checkpoints():
    net = create_model("dbd_student", srfb=True, sab=True, separated_attention=True, connectivity=True)
    prefixes = {k.split(".")[0] for k in net.state_dict()}
    assert prefixes == {
        "encoder",
        "context",
        "decoder",
        "side_heads",
        "head",
        "srfb",
        "sab",
        "separated_attention",
        "connectivity_head",
    }
    assert "decoder.0.fuse.0.0.weight" in net.state_dict()
    assert "top_down" not in dict(net.named_modules())  # a view of the parts, not a second copy
    assert net.top_down.srfb is net.srfb and net.top_down.blocks is net.decoder
    assert net.eval().top_down.training is False
    with safe_open(str(SHIPPED_STUDENT), "pt") as f:
        assert set(create_model("dbd_student", connectivity=True).state_dict()) == set(f.keys())


def test_the_decoder_runs_on_its_own_from_an_encoders_feature_info():
    encoder = create_model("mobilenetv2_100", features_only=True)
    decoder = TopDownDecoder(encoder.feature_info, 96, LightDecoderBlock, (64, 32), srfb=True).eval()
    *skips, deepest = encoder(torch.randn(1, 3, 64, 64))
    out = decoder(torch.randn(1, 96, *deepest.shape[-2:]), skips)
    assert decoder.stage_strides == (32, 16, 8) and decoder.stage_channels == (96, 64, 32)
    assert [tuple(s.shape[1:]) for s in out.stages] == [(96, 2, 2), (64, 4, 4), (32, 8, 8)]
    assert out.features is out.stages[-1] and [tuple(s.shape[1:]) for s in out.sides] == [(1, 2, 2), (1, 4, 4)]
    assert decoder(torch.randn(1, 96, 2, 2), skips, with_sides=False).sides == []  # the exported path


def test_an_unknown_decoder_option_is_one_line():
    with pytest.raises(DBDError, match="cannot be built.*unknown decoder option.*'srfbb'.*known: srfb") as err:
        create_model("dbd_student", srfbb=True)
    assert "\n" not in str(err.value)


def test_a_registered_option_is_a_flag_of_every_network_and_trains(toy_gate):
    torch.manual_seed(0)
    teacher = create_model("dbd_teacher", toy_gate=True)
    assert len(teacher.toy_gate) == 4 and teacher.config["toy_gate"] is True
    net = create_model("dbd_student", toy_gate=True).train()
    assert [g.proj.in_channels for g in net.toy_gate] == [96, 64, 48, 32]
    assert create_model("dbd_student").config["toy_gate"] is False  # cards record it, off
    x, y = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    out = net.forward_train(x)
    loss = F.binary_cross_entropy_with_logits(out.logits, y)
    loss = loss + sum(F.binary_cross_entropy_with_logits(s, y) for s in out.side_logits)
    loss.backward()
    assert all(g.proj.weight.grad.abs().sum() > 0 for g in net.toy_gate)


def test_a_registered_option_round_trips_and_warm_starts_from_a_network_without_it(toy_gate, tmp_path):
    torch.manual_seed(0)
    base = _bn_statistics(create_model("dbd_student")).eval()
    save_checkpoint(tmp_path / "base.safetensors", base)
    net = create_model("dbd_student", toy_gate=True)
    warm_start(net, str(tmp_path / "base.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), base(x))  # it starts as the identity
    save_checkpoint(tmp_path / "with.safetensors", net)
    loaded, card = load_checkpoint(tmp_path / "with.safetensors")
    assert card["config"]["toy_gate"] is True and "toy_gate.3.proj.weight" in loaded.state_dict()
    with pytest.raises(DBDError, match="was built with config"):  # a trained block is not dropped silently
        warm_start(create_model("dbd_student"), str(tmp_path / "with.safetensors"))


def test_a_registered_option_trains_through_the_training_loop_from_a_network_without_it(toy_gate, tmp_path, capsys):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "base.safetensors", _bn_statistics(create_model("dbd_student")))
    out = tmp_path / "toy"
    args = ["teacher", *TINY, "--arch", "dbd_student", "--model-config", "toy_gate=true"]
    args += ["--init", str(tmp_path / "base.safetensors"), "--epochs", "1", "--max-steps-per-epoch", "2"]
    assert main([*args, "--amp", "off", "--out", str(out)]) == 0, capsys.readouterr().err
    net, card = load_checkpoint(out / "last.safetensors")
    assert card["config"]["toy_gate"] is True
    assert any(g.proj.weight.abs().sum() > 0 for g in net.toy_gate)  # it learned from zero
