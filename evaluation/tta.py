"""The teacher as distillation uses it: test-time augmentation and ensembles.

The teacher never ships to a phone, so it may spend any compute on a better map: each member
checkpoint of an ensemble runs at several input sizes, each resized *from the original photo*
(upsampling the 320² input instead made the teacher worse: docs/training.md, "The teacher"),
and optionally mirrored; the probabilities are averaged at the photo's resolution.

The same `TTARunner` builds the distillation cache (dbd.training.teacher_cache), scores the
teacher in the report and in dbd-bench, so what is measured is what the student learns from.
A recipe is written as text, e.g. "384,448+flip": input sizes, then "+flip" for mirroring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dbd.core import DBDError
from dbd.runtime.runners import Runner


@dataclass(frozen=True)
class TTARecipe:
    sizes: tuple[int, ...] = ()  # square input sizes; () = the model's own size only
    flip: bool = False  # also run the horizontal mirror image

    @classmethod
    def parse(cls, text: str | None) -> "TTARecipe":
        """'384,448+flip' -> sizes (384, 448), flip; '' or 'none' -> the plain model; 'flip' -> own size mirrored."""
        text = (text or "").strip().lower()
        if text in ("", "none", "off"):
            return cls()
        parts = text.split("+")
        flip = "flip" in parts[1:] or parts[0] == "flip"
        unknown = [p for p in parts[1:] if p != "flip"]
        if unknown:
            raise DBDError(
                f"TTA recipe '{text}': unknown option {unknown[0]!r}; write sizes then '+flip', e.g. 384,448+flip"
            )
        sizes_text = "" if parts[0] == "flip" else parts[0]
        try:
            sizes = tuple(int(s) for s in sizes_text.split(",") if s.strip())
        except ValueError:
            raise DBDError(f"TTA recipe '{text}': sizes must be integers, e.g. 384,448+flip") from None
        bad = [s for s in sizes if s <= 0 or s % 32]
        if bad:
            raise DBDError(f"TTA recipe '{text}': size {bad[0]} is not a positive multiple of 32")
        return cls(sizes, flip)

    def __str__(self) -> str:
        sizes = ",".join(str(s) for s in self.sizes) or "native"
        return sizes + ("+flip" if self.flip else "")

    @property
    def plain(self) -> bool:
        return not self.sizes and not self.flip


class TTARunner(Runner):
    """Average of several runners x sizes x (mirror), each from the original photo."""

    def __init__(self, members: list[Runner], recipe: TTARecipe):
        if not members:
            raise DBDError("a TTA runner needs at least one model")
        first = members[0]
        self.members, self.recipe = members, recipe
        self.format, self.precision = first.format, first.precision
        info = {**first.info, "tta": str(recipe), "ensemble": [str(m.path) for m in members]}
        super().__init__(first.path, first.spec, info)

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        raise DBDError("a TTA runner takes whole photos (predict_photos): its sizes are resized from the photo")

    def _views(self, member: Runner) -> list[Runner]:
        sizes = self.recipe.sizes or (member.spec.input_size[0],)
        return [_Resized(member, s) for s in sizes]

    def predict_photos(
        self, photos: list[np.ndarray], refine=None, downscaler=None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each view's map refined at the photo's size (`refine` as Runner.predict_photos), then averaged."""
        sums = [np.zeros(p.shape[:2], np.float64) for p in photos]
        count = 0
        for member in self.members:
            for view in self._views(member):
                count += 1
                for k, m in enumerate(view.predict_photos(photos, refine, downscaler)[1]):
                    sums[k] += m
                if self.recipe.flip:
                    count += 1
                    mirrored = [np.ascontiguousarray(p[:, ::-1]) for p in photos]
                    for k, m in enumerate(view.predict_photos(mirrored, refine, downscaler)[1]):
                        sums[k] += m[:, ::-1]
        photo_maps = [(s / count).astype(np.float32) for s in sums]
        model_maps = np.stack([self.spec.resize_image(m) for m in photo_maps])
        return model_maps, photo_maps


class _Resized(Runner):
    """A fully convolutional member run at another square input size (a checkpoint's TorchRunner)."""

    def __init__(self, member: Runner, size: int):
        if member.format != "torch" and member.spec.input_size != (size, size):
            raise DBDError(
                f"'{member.path}' is a fixed-size {member.format} file; TTA at other sizes needs a checkpoint"
            )
        self.member = member
        super().__init__(member.path, replace(member.spec, input_size=(size, size)), member.info)

    def run(self, unit_rgb: np.ndarray) -> np.ndarray:
        return self.member.run(unit_rgb)
