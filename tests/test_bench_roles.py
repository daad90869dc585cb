"""dbd-bench finds the teacher and the student by role (the card's training stage), not by name:
a student trained with another architecture (`dbd-train student --arch NAME`) is the student."""

from __future__ import annotations

import pytest
import torch

from dbd.benchmarks.bench import reference_rows, teacher_recipe
from dbd.core import DBDError
from dbd.models import create_model, register_model
from dbd.models.checkpoint import save_checkpoint
from dbd.models.shipped import RELEASED, RELEASES, WEIGHTS_DIR, released_arch, released_checkpoint, role_of
from dbd.models.student import DBDStudent
from dbd.runtime.spec import PreprocessSpec


@register_model
def my_student(pretrained: bool = False, **config) -> DBDStudent:
    """The student's network under another name: what `--arch` trains when it is not dbd_student."""
    return DBDStudent(pretrained=pretrained, **config)


def _row(model: str, role: str | None, fmt: str = "torch", refine: str = "guided") -> dict:
    return {"id": f"{model}:{fmt}:fp32:{refine}", "model": model, "role": role, "format": fmt, "refine": refine}


def test_the_references_are_the_rows_of_each_role_whatever_their_names():
    rows = [
        _row("big_teacher", "teacher"),
        _row("big_teacher", "teacher", refine="bilinear"),
        _row("big_teacher", "teacher", fmt="torch+tta 384,448+flip"),
        _row("dbd_student", None),  # a released name, but its card says it is neither: not the student
        _row("my_student", "student", fmt="onnx"),  # the student exported: not the fp32 reference
        _row("my_student", "student"),
        _row("my_student", "student", refine="bilinear"),
        _row("other_student", "student"),  # a second student: the first (the --student file) is the reference
    ]
    teacher, student = reference_rows(rows, "guided")
    assert teacher is rows[2] and student is rows[5]  # the teacher as distillation uses it: its TTA row
    teacher, student = reference_rows(rows, "bilinear")  # the same last step only
    assert teacher is rows[1] and student is rows[6]
    assert reference_rows([_row("dbd_student", None), _row("dbd_teacher", None)], "guided") == (None, None)
    assert reference_rows(rows, "none") == (None, None)


def test_a_role_comes_from_the_training_stage_else_from_a_released_name():
    assert role_of({"arch": "my_student", "training": {"stage": "student"}}) == "student"
    # an exported file's metadata: the arch under "model", the card's training section copied whole
    assert role_of({"model": {"arch": "wide_teacher"}, "training": {"stage": "teacher"}}) == "teacher"
    assert role_of({"arch": "dbd_teacher", "training": {"stage": "student"}}) == "student"  # the stage decides
    assert role_of({"arch": "dbd_student"}) == "student" and role_of({"model": {"arch": "dbd_teacher"}}) == "teacher"
    assert role_of({"training": {}}, "dbd_student") == "student"  # a file made before stages were recorded
    assert role_of({"arch": "my_student"}) is None and role_of(None) is None and role_of({}, "x") is None
    assert role_of({"arch": "dbd_student", "training": {"stage": "refiner"}}) == "student"  # unknown stage


def test_the_releases_are_one_per_role_and_the_arch_names_still_work():
    assert RELEASES == {"teacher": "dbd_teacher", "student": "dbd_student"} and RELEASED == tuple(RELEASES.values())
    assert released_arch("student") == "dbd_student" and released_arch("dbd_teacher") == "dbd_teacher"
    for role, arch in RELEASES.items():
        assert released_checkpoint(role) == released_checkpoint(arch) == WEIGHTS_DIR / f"{arch}.safetensors"
    with pytest.raises(DBDError, match="no released weights for 'my_student'; released: teacher .dbd_teacher."):
        released_checkpoint("my_student")


def test_teacher_tta_is_read_for_the_teacher_role_only(tmp_path):
    assert teacher_recipe(_row("my_student", "student"), "384+flip") is None
    assert teacher_recipe(_row("dbd_teacher", "teacher", fmt="onnx"), "384+flip") is None
    assert str(teacher_recipe(_row("wide_teacher", "teacher"), "384+flip")) == "384+flip"


def test_a_student_with_another_arch_is_the_student_every_row_is_compared_with(tmp_path):
    from dbd.benchmarks import run

    torch.manual_seed(0)
    teacher = create_model("dbd_teacher")  # saved without a stage: a teacher by its released name
    spec = PreprocessSpec.for_model(teacher, (64, 64)).to_dict()
    save_checkpoint(tmp_path / "t.safetensors", teacher, {"preprocess": spec})
    student = create_model("my_student")
    torch.nn.init.constant_(student.head.bias, 0.0)  # maps that depend on the image
    save_checkpoint(tmp_path / "s.safetensors", student, {"preprocess": spec, "training": {"stage": "student"}})

    result = run(
        teacher=tmp_path / "t.safetensors",
        student=tmp_path / "s.safetensors",
        data="dut",
        split="",
        limit=2,
        exports=None,
        runs=0,
        threads=[1],
        teacher_tta="none",
        report=None,
    )
    rows = {r["id"]: r for r in result.rows}
    assert list(rows) == [f"{m}:torch:fp32:{s}" for m in ("dbd_teacher", "my_student") for s in ("guided", "bilinear")]
    assert [r["role"] for r in result.rows] == ["teacher", "teacher", "student", "student"]
    for refine in ("guided", "bilinear"):
        t, s = rows[f"dbd_teacher:torch:fp32:{refine}"], rows[f"my_student:torch:fp32:{refine}"]
        # the teacher is compared with my_student: the fp32 student of this run
        assert t["vs_student"]["d_fbeta"] == pytest.approx(t["metrics"]["fbeta_fixed"] - s["metrics"]["fbeta_fixed"])
        assert t["vs_student"]["d_mae"] == pytest.approx(t["metrics"]["mae"] - s["metrics"]["mae"])
        assert s["vs_teacher"]["d_mae"] == pytest.approx(-t["vs_student"]["d_mae"])
        assert 0 < t["vs_student"]["psnr"] == s["vs_teacher"]["psnr"] < 100  # 300 dB: the same maps
        assert s["vs_student"] is None and t["vs_teacher"] is None  # a reference is not compared with itself
