"""The last step in the bench: each file's second map (the same model maps scored with the other
refinement: bilinear for a file whose contract refines, guided for one exported before refinement)
and what the guided refinement itself costs at common photo sizes. Used by the x86 rows
(dbd.benchmarks.bench) and the emulated ones (dbd.benchmarks.emulation) alike."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dbd.evaluation.scoring import score_maps
from dbd.runtime.refine import RefineSpec, refine_map
from dbd.runtime.spec import PreprocessSpec

# Photo sizes the refinement's cost is measured at: a web photo, a 1080p frame, a 12 MP camera photo.
REFINE_SIZES = {"640x427": (427, 640), "1920x1080": (1080, 1920), "12 MP": (3000, 4000)}


def refine_label(spec: RefineSpec) -> str:
    return "guided" if spec.enabled else "bilinear"


def other_refine_row(row: dict[str, Any], runner_spec: PreprocessSpec, pairs: list) -> dict[str, Any]:
    """The same file's maps (kept at the model's size) scored with the other last step: bilinear for
    a file whose contract refines, the default guided filter for one exported before refinement.
    Accuracy only: the model's latency is the row's it was made from."""
    other = RefineSpec.none() if runner_spec.refine.enabled else RefineSpec()
    metrics, decisions = score_maps(row["_maps"], pairs, runner_spec.with_refine(other))
    label = refine_label(other)
    return accuracy_row(
        row,
        metrics,
        decisions,
        id=row["id"].rsplit(":", 1)[0] + f":{label}",
        refine=label,
        refine_spec=other.to_dict(),
        curves={k: [round(float(x), 5) for x in v] for k, v in metrics.curves().items()},
    )


def accuracy_row(row: dict[str, Any], metrics, decisions, **fields: Any) -> dict[str, Any]:
    """A row made from `row` that has scores but no timing of its own (a second map of the same model
    output, or an emulated CPU whose time is not a phone's): `fields` override, latency and memory empty."""
    return {
        **row,
        "accuracy_only": True,
        "peak_mem_mb": None,
        "memory": {"method": None, "runtime_mb": None},
        "latency": {},
        "metrics": {k: v for k, v in metrics.compute().items() if k != "n_images"},
        "decisions": decisions.compute(),
        "robustness": None,
        **fields,
    }


def refine_cost(spec: RefineSpec, model_size: tuple[int, int], runs: int = 10) -> dict[str, float]:
    """Median ms (this thread) to refine a model map into a photo of each size in REFINE_SIZES."""
    rng = np.random.default_rng(0)
    prob = rng.random(model_size).astype(np.float32)
    cost = {}
    for label, hw in REFINE_SIZES.items():
        photo = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        refine_map(prob, photo, spec)  # compile / warm up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            refine_map(prob, photo, spec)
            times.append(time.perf_counter() - start)
        cost[label] = 1000 * float(np.median(times))
    return cost
