"""The web demo (web_demo/): the page runs the exported .tflite with LiteRT.js in a real headless
Chromium and gives the maps of the Python runtime; its modules reproduce the contract's arithmetic.

What runs here (`make web-tools`: Debian's chromium, npm playwright-core and @litertjs/core into
.tools/web; nothing downloads a browser, the page is served on 127.0.0.1 only):
  * fast: the page's own module tests (`node --test web_demo/tests/`); resize.js against cv2.resize
    bit for bit (the preprocessing contract's bilinear, half-pixel centres) and its fused
    multiply-add against exact rational arithmetic; the tensor encoding/decoding against
    runtime.metadata; overlays and the JET table against dbd-predict's; refine.js (the contract's
    last step, the guided filter that brings the map to the photo) against runtime.refine.refine_map
    on real photos;
  * slow (browser): the shipped student exported afresh (int8, fp16, fp32), the page fed three real
    photos through its file picker (a CUHK-TE-1 image, a smartphone photo, a non-square crop); the
    decoded pixels, input tensors, maps at the model's and the photo's size and both overlays are
    compared with the Python runtime (`open_runner(...).run` on the same file), and the page's own
    model output brought to the photo by the page equals Python's refine_map of it; a file whose
    metadata asks for the guided refinement, on photos that use the subsampled and the full-size
    grid (and the page's refine.js with other settings, bilinear included); the benchmark (button
    and URL parameter, with the refinement's cost at three photo sizes) and its JSON; a screenshot;
    and the failures: a file without
    metadata, metadata that disagrees with the graph, metadata whose normalisation is wrong and a
    page whose resize drifted must each fail, clearly.

The tools missing are the only reason to skip, and only outside CI (`CI` set: fail instead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import io
import json
import math
import os
import shutil
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web_demo"
NODE_MODULES = ROOT / ".tools" / "web" / "node_modules"
INSTALL_HINT = "run `make web-tools` (Debian chromium; playwright-core and @litertjs/core from npm into .tools/web)"
PRECISIONS = ("int8", "fp16", "fp32")
# Parity budgets of the page against the Python runtime.
MIN_AGREEMENT = 0.995  # same decision (P >= 0.5) on this fraction of pixels
MIN_PSNR_DB = 35.0  # of the maps, P in [0, 1]
MIN_INPUT_CLOSE = 0.99  # input tensor values within one step (int8) / one pixel level (float) of Python's
# The page's refinement of a model output against runtime.refine.refine_map of the same output (the
# same float64/float32 steps; exp, log and summation order may differ in the last bits).
REFINE_MAX_ABS = 1e-4  # max |Δ P(blur)| at the photo's size (measured: ~2e-6)
REFINE_MIN_SAME = 0.999  # decisions (P >= 0.5) identical on at least this fraction (measured: 100 %)
BILINEAR_MAX_ABS = 1e-6  # refine.method "none": the contract's bilinear resize (measured: 0, bit-identical)
# Speed-independent page timeouts: the driver waits this long for anything (a loaded 2-core machine
# runs the fp16 file at ~0.4 s a run); they only decide how long a genuine hang takes to report.
PAGE_TIMEOUT_S = 900


def _missing(what: str) -> None:
    message = f"{what} missing: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message + " -- CI must not skip the browser checks")
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if not found:
        _missing("node")
    return found


def run_node(node: str, script: str, cwd: Path) -> str:
    """Runs an ES module script (importing the page's modules by absolute path) in `cwd`."""
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"node failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout


def _module(name: str) -> str:
    return (WEB / name).as_uri()


# ---- the modules, without a browser ------------------------------------------------------------


def test_page_module_unit_tests_pass(node):
    proc = subprocess.run([node, "--test", "web_demo/tests/"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    passed = int(next(line.split()[-1] for line in output.splitlines() if line.startswith("# pass")))
    assert passed >= 8 and "# fail 0" in output, output[-2000:]


def test_resize_module_matches_cv2_bit_for_bit(node, tmp_path, data_root):
    """resize.js is PreprocessSpec's resize: identical float32 values on random images of random
    sizes (down and up, 1 and 3 channels) and on a real photo's RGBA pixels."""
    import cv2

    from dbd.runtime.imageio import read_image
    from dbd.runtime.spec import PreprocessSpec

    rng = np.random.default_rng(0)
    cases = [
        (int(sw), int(sh), c, int(dw), int(dh))
        for (sw, sh, dw, dh), c in zip(rng.integers(1, 500, (40, 4)), [1, 3] * 20)
    ]
    cases += [
        (640, 426, 3, 320, 320),
        (1079, 1043, 3, 320, 320),
        (320, 320, 1, 640, 426),
        (320, 320, 1, 1079, 1043),
        (20, 13, 3, 320, 320),
        (7, 5, 1, 7, 5),
    ]
    for k, (sw, sh, c, _, _) in enumerate(cases):
        rng.random((sh, sw, c), dtype=np.float32).tofile(tmp_path / f"in{k}.f32")
    photo = read_image(data_root / "photos" / "hifst_moreimages_F" / "F1.png")
    h, w = photo.shape[:2]
    np.concatenate([photo, np.full((h, w, 1), 255, np.uint8)], axis=2).tofile(tmp_path / "photo.rgba")
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run_node(
        node,
        f"""
        import fs from 'node:fs';
        import {{ resize, resizeRgba }} from '{_module("resize.js")}';
        const f32 = (name) => {{ const b = fs.readFileSync(name); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); }};
        JSON.parse(fs.readFileSync('cases.json')).forEach(([sw, sh, c, dw, dh], k) =>
          fs.writeFileSync(`out${{k}}.f32`, resize(f32(`in${{k}}.f32`), sw, sh, c, dw, dh)));
        fs.writeFileSync('photo.f32', resizeRgba(new Uint8ClampedArray(fs.readFileSync('photo.rgba')), {w}, {h}, 96, 64));
    """,
        tmp_path,
    )
    inexact = []
    for k, (sw, sh, c, dw, dh) in enumerate(cases):
        src = np.fromfile(tmp_path / f"in{k}.f32", np.float32).reshape(sh, sw, c)
        ref = (
            cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR).reshape(dh, dw, c)
            if (sw, sh) != (dw, dh)
            else src
        )
        out = np.fromfile(tmp_path / f"out{k}.f32", np.float32).reshape(dh, dw, c)
        if not np.array_equal(out, ref):
            inexact.append((sw, sh, c, dw, dh, int((out != ref).sum()), float(np.abs(out - ref).max())))
    spec = PreprocessSpec(input_size=(64, 96))
    ref = spec.resize_image(photo.astype(np.float32) / np.float32(255))
    assert np.array_equal(np.fromfile(tmp_path / "photo.f32", np.float32).reshape(ref.shape), ref)
    if cv2.ipp.useIPP():
        # IPP (x86 opencv-python wheels) is reproduced exactly, except at some clamped border columns
        # of 3-channel upscales (a photo smaller than the model): |Δ| <= 2^-24 there.
        assert all(c == 3 and (dw > sw or dh > sh) and err <= 2**-24 for sw, sh, c, dw, dh, _, err in inexact), inexact
    else:
        # OpenCV's own loop rounds its weights through float32 first: close, not identical.
        assert all(err <= 1e-4 for *_, err in inexact), inexact
    print(
        f"\nresize.js vs cv2.resize: {len(cases) - len(inexact)}/{len(cases)} cases bit-identical; "
        f"the others (3-channel upscales; values differing, max |Δ|): {[(c[:5], c[5], c[6]) for c in inexact]}"
    )


def _refine_agreement(got: np.ndarray, ref: np.ndarray) -> dict:
    return {
        "max_abs": float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()),
        "same_decisions": float(((got >= 0.5) == (ref >= 0.5)).mean()),
        "identical": float((got == ref).mean()),
    }


def _refine_problems(what: str, got: np.ndarray, ref: np.ndarray, method: str) -> list[str]:
    """The budgets of the page's refined map against Python's refine_map of the same model output."""
    if got.shape != ref.shape:
        return [f"{what}: map of shape {got.shape}, Python's {ref.shape}"]
    a = _refine_agreement(got, ref)
    limit = BILINEAR_MAX_ABS if method == "none" else REFINE_MAX_ABS
    problems = []
    if a["max_abs"] > limit:
        problems.append(f"{what}: max |Δ| {a['max_abs']:.2e} > {limit:.0e}")
    if a["same_decisions"] < REFINE_MIN_SAME:
        problems.append(f"{what}: same decision on {a['same_decisions']:.4%} < {REFINE_MIN_SAME:.1%}")
    return problems


def _refine_photos(data_root: Path, folder: Path) -> list[Path]:
    """Real photos for the refinement: a CUHK-TE-1 image (640x426: short side > the default grid,
    so the coefficients are on a subsampled grid), a crop of it whose short side is at most the
    grid (grid = full size) and a 900x300 crop of a Canon photo."""
    from PIL import Image

    from dbd.data.datasets import open_dataset
    from dbd.runtime.imageio import read_image
    from dbd.runtime.refine import RefineSpec, grid_size

    cuhk = open_dataset("cuhk", split="test", root=data_root).samples[0].image_path
    image, grid = read_image(cuhk), RefineSpec().grid
    h = min(180, grid or 180)
    small = folder / f"cuhk_crop_{h * 4 // 3}x{h}.png"
    Image.fromarray(image[100 : 100 + h, 200 : 200 + h * 4 // 3]).save(small)
    assert grid_size(image.shape[:2], grid) != image.shape[:2]  # subsampled
    assert grid_size((h, h * 4 // 3), grid) == (h, h * 4 // 3)  # full size
    wide = folder / "A3_crop_900x300.png"
    Image.fromarray(read_image(data_root / "photos" / "hifst_canon70d_focus_stack" / "A3.jpg")[250:550, 100:1000]).save(
        wide
    )
    return [cuhk, small, wide]


def test_refine_module_matches_python_refine_map(node, tmp_path, data_root):
    """refine.js = runtime.refine.refine_map (max |Δ| <= REFINE_MAX_ABS, decisions identical on >=
    REFINE_MIN_SAME) on real photos: a CUHK image (subsampled grid), a small crop (full-size grid),
    a wide crop, a working size (max_side), grid 0 with a larger radius; method none bit-identical
    to the bilinear resize. The map fed to both: the CUHK ground truth at 320x320, softened (a model
    output's range and smoothness, without a model)."""
    import cv2

    from dbd.data.datasets import open_dataset
    from dbd.runtime.imageio import read_image
    from dbd.runtime.refine import RefineSpec, refine_map

    sample = open_dataset("cuhk", split="test", root=data_root).samples[0]
    mask = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
    prob = cv2.resize((mask > 127).astype(np.float32), (320, 320), interpolation=cv2.INTER_AREA)
    prob = np.clip(cv2.GaussianBlur(prob, (0, 0), 4), 0.001, 0.999).astype(np.float32)
    prob.tofile(tmp_path / "prob.f32")
    photos = _refine_photos(data_root, tmp_path)
    cases = [(photo, RefineSpec()) for photo in photos] + [
        (photos[0], RefineSpec(max_side=400)),
        (photos[0], RefineSpec(grid=0, radius=0.1)),
        (photos[2], RefineSpec(method="none")),
    ]
    jobs = []
    for k, (photo, spec) in enumerate(cases):
        image = read_image(photo)
        h, w = image.shape[:2]
        np.concatenate([image, np.full((h, w, 1), 255, np.uint8)], axis=2).tofile(tmp_path / f"photo{k}.rgba")
        jobs.append({"w": w, "h": h, "spec": spec.to_dict()})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run_node(
        node,
        f"""
        import fs from 'node:fs';
        import {{ refineMap }} from '{_module("refine.js")}';
        const b = fs.readFileSync('prob.f32'); const prob = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
        JSON.parse(fs.readFileSync('jobs.json')).forEach((j, k) => fs.writeFileSync(`map${{k}}.f32`,
          refineMap(prob, 320, 320, new Uint8ClampedArray(fs.readFileSync(`photo${{k}}.rgba`)), j.w, j.h, j.spec)));
    """,
        tmp_path,
    )
    problems, lines = [], []
    for k, (photo, spec) in enumerate(cases):
        image = read_image(photo)
        ref = refine_map(prob, image, spec)
        got = np.fromfile(tmp_path / f"map{k}.f32", np.float32).reshape(ref.shape)
        what = f"{photo.name} {image.shape[1]}x{image.shape[0]} {spec.describe()}" + (
            f", max_side {spec.max_side}" if spec.max_side else ""
        )
        problems += _refine_problems(what, got, ref, spec.method)
        if spec.method == "none" and not np.array_equal(got, ref):
            problems.append(f"{what}: not bit-identical to the bilinear resize")
        a = _refine_agreement(got, ref)
        lines.append(
            f"  {what}: max |Δ| {a['max_abs']:.1e}, decisions {a['same_decisions']:.4%}, bit-identical {a['identical']:.1%}"
        )
    print("\nrefine.js vs refine_map:\n" + "\n".join(lines))
    assert not problems, problems


def test_refine_module_defaults_and_validation_match_refine_spec(node, tmp_path):
    """A `refine` block with keys left out means RefineSpec's defaults in the page too; the page
    refuses what RefineSpec refuses, naming the key."""
    from dbd.core import DBDError
    from dbd.runtime.refine import RefineSpec

    bad = [{"radius": 0}, {"eps": 11}, {"clip": 0.5}, {"grid": 7}, {"max_side": 8}, {"method": "x"}, {"guide": "lab"}]
    out = run_node(
        node,
        f"""
        import {{ BILINEAR, REFINE_DEFAULTS }} from '{_module("refine.js")}';
        import {{ refineOf }} from '{_module("contract.js")}';
        const refused = {json.dumps(bad)}.map((r) => {{ try {{ refineOf({{ refine: r }}); return null; }} catch (e) {{ return e.message; }} }});
        console.log(JSON.stringify({{ defaults: REFINE_DEFAULTS, none: BILINEAR, absent: refineOf({{}}), refused }}));
    """,
        tmp_path,
    )
    got = json.loads(out)
    assert got["defaults"] == RefineSpec().to_dict()
    assert got["none"] == got["absent"] == RefineSpec.none().to_dict()
    for change, message in zip(bad, got["refused"]):
        (key,) = change
        with pytest.raises(DBDError, match=f"refine.{key}"):
            RefineSpec(**change)
        assert message and f"preprocess.refine.{key} = " in message, (change, message)


def _round_f32(q: Fraction) -> np.float32:
    """The float32 nearest to the rational q, ties to even."""
    f = np.float32(float(q))
    candidates = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - q), int(np.float32(v).view(np.uint32)) & 1))


def test_fused_multiply_add_rounds_once(node, tmp_path):
    """fma32 (the bilinear lerp of IPP) against exact rational arithmetic, on random triples and on
    triples built to land next to a float32 midpoint, where rounding through double goes wrong."""
    rng = np.random.default_rng(1)
    triples = [tuple(v) for v in rng.standard_normal((3000, 3)).astype(np.float32)]
    triples += [tuple(v) for v in (rng.random((2000, 3)) * [1, 1e-3, 1]).astype(np.float32)]
    for k in range(12, 24):
        for m in range(20, 30):
            for j in range(1, 6):
                triples.append(
                    (np.float32(1 - 2.0**-k), np.float32((1 + 2.0**-k) * 2.0**-m), np.float32(1 + j * 2.0**-23))
                )
    np.asarray(triples, np.float32).tofile(tmp_path / "abc.f32")
    run_node(
        node,
        f"""
        import fs from 'node:fs';
        import {{ fma32 }} from '{_module("resize.js")}';
        const b = fs.readFileSync('abc.f32'); const v = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
        const out = new Float32Array(v.length / 3);
        for (let i = 0; i < out.length; i++) out[i] = fma32(v[3 * i], v[3 * i + 1], v[3 * i + 2]);
        fs.writeFileSync('fma.f32', out);
    """,
        tmp_path,
    )
    got = np.fromfile(tmp_path / "fma.f32", np.float32)
    wrong, naive_wrong = [], 0
    for (a, b, c), g in zip(triples, got):
        exact = _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
        if g != exact:
            wrong.append((a, b, c, g, exact))
        naive_wrong += np.float32(float(a) * float(b) + float(c)) != exact
    assert not wrong, wrong[:5]
    assert naive_wrong > 0  # the hard cases are hard: rounding through double misses some
    print(f"\nfma32: {len(triples)} triples exact; rounding through double would get {naive_wrong} wrong")


def _contract_doc(dtype: str, layout: str, normalization: str, size=(8, 12)) -> dict:
    """A dbd metadata document with the keys the page reads (the exporter's schema)."""
    h, w = size
    q_in = {"int8": {"scale": 1.0, "zero_point": -128}, "uint8": {"scale": 0.0186, "zero_point": 114}, "float32": None}[
        dtype
    ]
    q_out = {
        "int8": {"scale": 1 / 256, "zero_point": -128},
        "uint8": {"scale": 1 / 255, "zero_point": 0},
        "float32": None,
    }[dtype]
    spec = {
        "format": "dbd-preprocess/1",
        "input_size": [h, w],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "resize": "bilinear",
        "channel_order": "RGB",
        "layout": layout,
        "pixel_scale": 255.0,
        "output": "blur_probability",
    }
    shape = [1, h, w, 3] if layout == "NHWC" else [1, 3, h, w]
    return {
        "format": "dbd-export/1",
        "model": {"arch": "dbd_student", "config": {}},
        "file": {"precision": dtype},
        "source_checkpoint": {},
        "preprocess": spec,
        "input": {
            "name": "pixels",
            "shape": shape,
            "layout": layout,
            "dtype": dtype,
            "color_order": "RGB",
            "size": [h, w],
            "normalization": normalization,
            "mean": spec["mean"],
            "std": spec["std"],
            "pixel_scale": 255.0,
            "quantization": q_in,
        },
        "output": {
            "name": "blur_prob",
            "shape": [1, h, w, 1],
            "layout": "NHWC",
            "dtype": dtype,
            "quantization": q_out,
            "meaning": "blur_probability",
            "blur_value": 1,
        },
    }


def test_tensor_encoding_and_overlays_match_the_python_runtime(node, tmp_path):
    """contract.js's encodeInput/decodeOutput = runtime.metadata's encode_input/decode_output for
    every dtype, layout and normalisation the exporter writes; overlay.js = dbd-predict's overlay
    (tint at several thresholds, heat over all 256 levels) and its JET table = cv2's."""
    import cv2

    from dbd.runtime.metadata import decode_output, encode_input
    from dbd.runtime.overlay import overlay

    rng = np.random.default_rng(2)
    h, w = 8, 12
    unit = rng.random((h, w, 3), dtype=np.float32)
    unit[0, :3] = [0.0, 1.0, 0.5]
    unit.tofile(tmp_path / "unit.f32")
    variants = [
        ("int8", "NHWC", "folded"),
        ("uint8", "NCHW", "external"),
        ("float32", "NCHW", "external"),
        ("float32", "NHWC", "folded"),
    ]
    raws = {}
    for dtype, layout, norm in variants:
        name = f"{dtype}_{layout}_{norm}"
        (tmp_path / f"{name}.json").write_text(json.dumps(_contract_doc(dtype, layout, norm)))
        raw = (
            rng.integers(-128, 128, (1, h, w, 1))
            if dtype == "int8"
            else rng.integers(0, 256, (1, h, w, 1))
            if dtype == "uint8"
            else rng.random((1, h, w, 1))
        ).astype(dtype)
        raw.tofile(tmp_path / f"{name}.raw")
        raws[name] = raw
    photo = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    prob = rng.random((40, 64), dtype=np.float32)
    prob.reshape(-1)[:256] = np.arange(256, dtype=np.float32) / 255  # every JET level once
    prob[5, :4] = [0.3, np.float32(0.3), np.nextafter(np.float32(0.3), np.float32(0)), 0.5]
    np.concatenate([photo, np.full((40, 64, 1), 255, np.uint8)], axis=2).tofile(tmp_path / "photo.rgba")
    prob.tofile(tmp_path / "prob.f32")
    thresholds = [0.5, 0.3, 0.05, 0.95]
    out = run_node(
        node,
        f"""
        import fs from 'node:fs';
        import {{ contractOf, decodeOutput, encodeInput }} from '{_module("contract.js")}';
        import {{ JET, blurredFraction, drawOverlay }} from '{_module("overlay.js")}';
        const read = (name, T) => {{ const b = fs.readFileSync(name); return new T(b.buffer, b.byteOffset, b.length / T.BYTES_PER_ELEMENT); }};
        const unit = read('unit.f32', Float32Array);
        for (const name of {json.dumps([f"{d}_{layout}_{n}" for d, layout, n in variants])}) {{
          const meta = JSON.parse(fs.readFileSync(`${{name}}.json`));
          const tensor = (m) => ({{ name: m.name, shape: m.shape, dtype: m.dtype, quantization: m.quantization }});
          const c = contractOf({{ meta, input: tensor(meta.input), output: tensor(meta.output) }});
          fs.writeFileSync(`${{name}}.input`, encodeInput(c, unit));
          const T = {{ int8: Int8Array, uint8: Uint8Array, float32: Float32Array }}[meta.output.dtype];
          fs.writeFileSync(`${{name}}.prob`, decodeOutput(c, read(`${{name}}.raw`, T)));
        }}
        const rgba = read('photo.rgba', Uint8ClampedArray), prob = read('prob.f32', Float32Array);
        fs.writeFileSync('heat.rgba', drawOverlay('heat', rgba, prob, 0.5));
        const fractions = [];
        for (const t of {json.dumps(thresholds)}) {{
          fs.writeFileSync(`tint_${{t}}.rgba`, drawOverlay('tint', rgba, prob, t));
          fractions.push(blurredFraction(prob, t));
        }}
        fs.writeFileSync('jet.rgb', JET);
        console.log(JSON.stringify(fractions));
    """,
        tmp_path,
    )
    for dtype, layout, norm in variants:
        name = f"{dtype}_{layout}_{norm}"
        meta = _contract_doc(dtype, layout, norm)
        expected = encode_input(meta, unit[None])
        got = np.fromfile(tmp_path / f"{name}.input", expected.dtype).reshape(expected.shape)
        assert np.array_equal(got, expected), name
        expected = decode_output(meta, raws[name])[0]
        assert np.array_equal(np.fromfile(tmp_path / f"{name}.prob", np.float32).reshape(h, w), expected), name
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0, :, ::-1]
    assert np.array_equal(np.fromfile(tmp_path / "jet.rgb", np.uint8).reshape(256, 3), jet)
    drawn = np.fromfile(tmp_path / "heat.rgba", np.uint8).reshape(40, 64, 4)
    assert np.array_equal(drawn[..., :3], overlay(photo, prob, "heat", 0.5)) and (drawn[..., 3] == 255).all()
    for t, fraction in zip(thresholds, json.loads(out)):
        drawn = np.fromfile(tmp_path / f"tint_{t}.rgba", np.uint8).reshape(40, 64, 4)
        assert np.array_equal(drawn[..., :3], overlay(photo, prob, "tint", t)), t
        assert fraction == float((prob >= t).mean()), t


# ---- the page in headless Chromium ---------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(node) -> dict[str, str]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    playwright = NODE_MODULES / "playwright-core"
    litert = NODE_MODULES / "@litertjs" / "core" / "wasm"
    for what, path in (
        ("chromium (Debian package)", Path(chromium)),
        ("npm playwright-core", playwright / "package.json"),
        ("npm @litertjs/core", litert),
    ):
        if not path.exists():
            _missing(f"{what} ({path})")
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    return {"node": node, "chromium": chromium, "playwright": str(playwright), "version": version}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files of one site folder, plus /_models/NAME from the test's model folder."""

    models: Path

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/_models/"):
            return str(self.models / Path(clean).name)
        return super().translate_path(path)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path, models: Path):
    """The site on 127.0.0.1 (a free port) for the duration of the block."""
    handler = type("Handler", (_Handler,), {"models": models})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, data_root) -> Path:
    """The shipped student exported afresh by dbd-export: int8, fp16 and fp32 .tflite, 320x320."""
    from dbd.export.cli import main

    folder = tmp_path_factory.mktemp("web_exports")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--format", "tflite", "--precision", "all", "--parity-n", "4", "--out", str(folder)])
    assert code == 0, out.getvalue() + err.getvalue()
    for precision in PRECISIONS:
        assert (folder / f"dbd_student_320_{precision}.tflite").is_file(), out.getvalue()
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_root) -> list[Path]:
    """A CUHK-TE-1 image, a smartphone photo (EXIF, ICC profile), a 900x300 crop of a Canon photo."""
    from dbd.data.datasets import open_dataset
    from dbd.runtime.imageio import read_image

    cuhk = open_dataset("cuhk", split="test", root=data_root).samples[0].image_path
    phone = data_root / "photos" / "distill_dbdgan_smartphone" / "mob1.jpg"
    crop = tmp_path_factory.mktemp("web_photos") / "A3_crop_900x300.png"
    from PIL import Image

    Image.fromarray(read_image(data_root / "photos" / "hifst_canon70d_focus_stack" / "A3.jpg")[250:550, 100:1000]).save(
        crop
    )
    return [cuhk, phone, crop]


def run_page(
    browser,
    site: Path,
    models: Path,
    out: Path,
    model: str,
    photos: list[Path],
    query: str = "",
    styles=("heat", "tint"),
    bench_button=False,
    camera=False,
    screenshot: Path | None = None,
    refine_specs: list[dict] = (),
) -> dict:
    """Opens web_demo/index.html?model=/_models/MODEL headless, feeds the photos, returns result.json.
    `refine_specs`: each photo's model output is also refined by the page's refine.js with these."""
    with serve(site, models) as url:
        job = {
            "playwright": browser["playwright"],
            "chromium": browser["chromium"],
            "out": str(out),
            "url": f"{url}/web_demo/index.html?model=/_models/{model}{query}",
            "photos": [str(p) for p in photos],
            "styles": list(styles),
            "benchButton": bench_button,
            "camera": camera,
            "screenshot": str(screenshot) if screenshot else None,
            "refineSpecs": list(refine_specs),
            "timeoutMs": PAGE_TIMEOUT_S * 1000,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "job.json").write_text(json.dumps(job))
        proc = subprocess.run(
            [browser["node"], str(WEB / "tests" / "driver.js"), str(out / "job.json")],
            capture_output=True,
            text=True,
            timeout=3 * PAGE_TIMEOUT_S,
        )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert "driverError" not in result, result["driverError"] + "\n" + "\n".join(result["console"][-30:])
    return result


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def parity(model_path: Path, out: Path, row: dict, photo: Path) -> dict:
    """The page's figures for one photo against the Python runtime on the same file and photo.
    Raises AssertionError naming every budget that is missed."""
    from dbd.runtime.imageio import read_image
    from dbd.runtime.metadata import encode_input
    from dbd.runtime.overlay import overlay
    from dbd.runtime.refine import refine_map
    from dbd.runtime.runners import open_runner

    runner = open_runner(model_path, threads=1)
    spec, meta = runner.spec, runner.info
    image = read_image(photo)
    h, w = image.shape[:2]
    assert (row["height"], row["width"]) == (h, w), (
        f"{photo.name}: the page decoded {row['width']}x{row['height']}, PIL {w}x{h}"
    )
    pixels = np.fromfile(out / row["rgba"], np.uint8).reshape(h, w, 4)[..., :3]
    unit = spec.resize_image(image.astype(np.float32) / np.float32(spec.pixel_scale))[None]
    x_py = encode_input(meta, unit)
    x_js = np.fromfile(out / row["input"], x_py.dtype).reshape(x_py.shape)
    prob_py = runner.run(unit)[0]
    prob_js = np.fromfile(out / row["prob"], np.float32).reshape(prob_py.shape)
    map_py = spec.postprocess(prob_py, image)
    map_js = np.fromfile(out / row["map"], np.float32).reshape(h, w)
    # The page's own model output brought to the photo by Python (its decoded pixels as the guide).
    map_js_by_py = refine_map(prob_js, pixels, spec.refine)
    # One quantisation step (int8), one pixel level (float, folded) or its normalised size (external).
    step = 1 / 255 / min(meta["input"]["std"]) if meta["input"]["normalization"] == "external" else 1
    figures = {
        "photo": photo.name,
        "size": f"{w}x{h}",
        "decoded_pixels_differing": int((pixels != image).any(axis=2).sum()),
        "input_close": float((np.abs(x_js.astype(np.float64) - x_py.astype(np.float64)) <= step + 1e-6).mean()),
        "input_identical": float((x_js == x_py).mean()),
        "agreement": float(((prob_js >= 0.5) == (prob_py >= 0.5)).mean()),
        "psnr_db": _psnr(prob_js, prob_py),
        "agreement_photo": float(((map_js >= 0.5) == (map_py >= 0.5)).mean()),
        "psnr_photo_db": _psnr(map_js, map_py),
        "refine": spec.refine.method,
        **{f"refine_{k}": v for k, v in _refine_agreement(map_js, map_js_by_py).items()},
        "overlay_pixels_differing": {
            s: int(
                (
                    np.fromfile(out / o["file"], np.uint8).reshape(h, w, 4)[..., :3]
                    != overlay(pixels, map_js, s, o["threshold"])
                )
                .any(axis=2)
                .sum()
            )
            for s, o in row["overlays"].items()
        },
        "inference_ms": row["inferenceMs"],
    }
    problems = []
    if photo.suffix.lower() == ".png" and figures["decoded_pixels_differing"]:
        problems.append(f"{figures['decoded_pixels_differing']} decoded pixels differ from PIL's on a PNG")
    if figures["input_close"] < MIN_INPUT_CLOSE:
        problems.append(f"input tensor: only {figures['input_close']:.2%} of values within one step of Python's")
    for key, psnr_key in (("agreement", "psnr_db"), ("agreement_photo", "psnr_photo_db")):
        if figures[key] < MIN_AGREEMENT:
            problems.append(f"{key}: same decision on {figures[key]:.3%} of pixels < {MIN_AGREEMENT:.1%}")
        if figures[psnr_key] < MIN_PSNR_DB:
            problems.append(f"{psnr_key}: {figures[psnr_key]:.1f} dB < {MIN_PSNR_DB} dB")
    problems += [
        f"the map brought back to the photo differs from PreprocessSpec.postprocess (refine_map): {p}"
        for p in _refine_problems(spec.refine.describe(), map_js, map_js_by_py, spec.refine.method)
    ]
    if any(figures["overlay_pixels_differing"].values()):
        problems.append(f"overlay pixels differ from dbd-predict's: {figures['overlay_pixels_differing']}")
    assert not problems, f"{photo.name} ({model_path.name}): " + "; ".join(problems)
    return figures


def _report(figures: list[dict]) -> str:
    return "\n".join(
        f"  {f['photo']} {f['size']}: decisions {f['agreement']:.4%} (photo size {f['agreement_photo']:.4%}), "
        f"PSNR {f['psnr_db']:.1f} dB (photo size {f['psnr_photo_db']:.1f} dB), input identical {f['input_identical']:.2%}, "
        f"decoded px differing {f['decoded_pixels_differing']}, overlays differing {f['overlay_pixels_differing']}, "
        f"map to the photo ({f['refine']}) vs refine_map: max |Δ| {f['refine_max_abs']:.1e}, "
        f"decisions {f['refine_same_decisions']:.4%}; inference {f['inference_ms']:.0f} ms"
        for f in figures
    )


def check_bench(bench: dict, precision: str, runs: int, warmup: int) -> None:
    assert bench["tool"] == "dbd web_demo benchmark" and bench["model"]["precision"] == precision
    assert bench["model"]["file"] == f"dbd_student_320_{precision}.tflite" and bench["model"]["size"] == [320, 320]
    assert bench["backend"] in ("wasm", "webgpu") and bench["backend_note"]
    assert bench["runs"] == runs == len(bench["times_ms"]) and bench["warmup"] == warmup
    assert 0 < bench["min_ms"] <= bench["median_ms"] <= bench["p90_ms"]
    assert bench["median_ms"] == pytest.approx(float(np.median(bench["times_ms"])), abs=0.02)
    assert bench["p90_ms"] == pytest.approx(float(np.percentile(bench["times_ms"], 90)), abs=0.02)
    # fps and median_ms are each rounded to 2 decimals by the page: at ~400 ms a run (a loaded
    # machine) fps = 2.49 for 1000 / median = 2.4928, so a relative tolerance would fail on speed alone.
    rounding = 0.005 + 1000 * 0.005 / bench["median_ms"] ** 2 + 1e-9
    assert abs(bench["fps"] - 1000 / bench["median_ms"]) <= rounding, (bench["fps"], bench["median_ms"])
    assert "Chrome/" in bench["user_agent"] and bench["litert_js"] == "2.5.3" and bench["threads"] >= 1
    refine = bench["refine"]
    assert [r["size"] for r in refine["sizes"]] == ["640x427", "1920x1080", "4000x3000"], refine
    assert refine["spec"]["method"] == "guided" and all(len(r["times_ms"]) == 3 for r in refine["sizes"]), refine
    for r in refine["sizes"]:
        assert 0 < r["median_ms"] == pytest.approx(float(np.median(r["times_ms"])), abs=0.02), r


def _bench_line(precision: str, bench: dict) -> str:
    return (
        f"{precision}: median {bench['median_ms']:.1f} ms, p90 {bench['p90_ms']:.1f} ms, {bench['fps']:.1f} FPS "
        f"({bench['backend']}, {bench['threads']} thread(s), {bench['warmup']}+{bench['runs']} runs on {bench['input']}); "
        "refinement ("
        + ("this file's" if bench["refine"]["of_this_file"] else "default guided; the file asks for bilinear")
        + "): "
        + ", ".join(f"{r['size']} {r['median_ms']:.0f} ms" for r in bench["refine"]["sizes"])
    )


@pytest.fixture(scope="module")
def float_runs(browser, exports, photos, tmp_path_factory) -> dict[str, dict]:
    """fp16 and fp32 through the page (benchmark from the URL parameter), checked against Python."""
    runs = {}
    for precision in ("fp16", "fp32"):
        out = tmp_path_factory.mktemp(f"web_{precision}")
        model = f"dbd_student_320_{precision}.tflite"
        result = run_page(
            browser, ROOT, exports, out, model, photos, query="&bench=50&warmup=10", camera=precision == "fp32"
        )
        assert result["state"] == "ready", f"{model}: {result['error']}"
        check_bench(result["urlBench"], precision, 50, 10)
        assert result["urlBench"]["input"] == "synthetic"
        figures = [parity(exports / model, out, row, photo) for row, photo in zip(result["results"], photos)]
        runs[precision] = {"result": result, "figures": figures}
        print(
            f"\n{model} in {browser['version']}, {result['backend']} ({result['backendNote']}):\n{_report(figures)}\n"
            f"  benchmark {_bench_line(precision, result['urlBench'])}"
        )
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_float_files_run_in_the_page_like_the_python_runtime(precision, float_runs):
    result = float_runs[precision]["result"]
    assert result["backend"] == "wasm" and "WebGPU has no usable adapter" in result["backendNote"]  # --disable-gpu
    assert len(float_runs[precision]["figures"]) == 3
    if precision == "fp32":
        # getUserMedia with Chromium's fake camera: frames go through the same pipeline, on screen.
        camera = result["camera"]
        assert not camera["error"] and camera["frames"] >= 3 and camera["button"] == "Stop camera", camera
        assert camera["stats"].startswith("Blurred: ") and " ms (median of the last" in camera["stats"], camera
        print(
            f"\nfake camera: {camera['frames']} frames of {camera['canvas'][0]}x{camera['canvas'][1]}: {camera['stats']}"
        )


@pytest.mark.slow
def test_int8_file_runs_in_the_page_like_the_python_runtime(browser, exports, photos, tmp_path, request):
    """The shipped int8 file: the page's maps agree with the Python runtime on three real photos;
    overlays, on-screen figures, the benchmark button and its JSON; a screenshot."""
    out, shot = tmp_path / "page", tmp_path / "screenshot.png"
    model = "dbd_student_320_int8.tflite"
    result = run_page(browser, ROOT, exports, out, model, photos, bench_button=True, screenshot=shot)
    if result["state"] != "ready" and "Could not run the model" in (result["error"] or ""):
        request.getfixturevalue("float_runs")  # the float files must pass first
        pytest.skip(f"LiteRT.js cannot run the int8 file (fp16 and fp32 pass): {result['error']}")
    assert result["state"] == "ready", result["error"]
    figures = [parity(exports / model, out, row, photo) for row, photo in zip(result["results"], photos)]
    # On screen: the model from its own metadata, the backend and why, the blurred fraction, the latency.
    screen = result["screen"]
    assert "from the file's own dbd metadata" in screen["model"] and "int8 [1,320,320,3] NHWC" in screen["model"]
    assert (
        screen["backend"].startswith("Runs on WASM")
        and "Tensor API takes float32/int32/uint8 only" in screen["backend"]
    )
    for row in result["results"]:
        tint = row["overlays"]["tint"]
        map_js = np.fromfile(out / row["map"], np.float32)
        assert tint["fraction"] == float((map_js >= np.float32(tint["threshold"])).mean())
        assert (
            f"Blurred: {100 * tint['fraction']:.1f} % of the frame" in tint["stats"]
            and " ms (median of the last" in tint["stats"]
        )
    bench = result["buttonBench"]
    check_bench(bench, "int8", 50, 10)
    assert bench["input"].startswith(photos[-1].name) and bench["backend"] == "wasm"
    # The screenshot: the page with the last photo under the tint overlay (red blend) and the figures.
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[0] > 600
    b, g, r = (image[..., i].astype(int) for i in range(3))
    assert ((r - g > 60) & (r - b > 60)).mean() > 0.01, "no tinted pixels in the screenshot"
    print(
        f"\n{model} in {browser['version']}, {result['backend']}:\n{_report(figures)}\n"
        f"  benchmark {_bench_line('int8', bench)}\n  screenshot: {shot}"
    )


@pytest.mark.slow
def test_page_refines_the_map_like_python_refine_map_on_real_photos(browser, exports, data_root, tmp_path):
    """A file whose metadata asks for the guided refinement (settings other than the defaults, so
    the page must read them): on a CUHK image (subsampled grid), a small crop (full-size grid) and
    a 900x300 crop, the map the page shows and overlays is Python's refine_map of the page's own
    model output and decoded pixels (max |Δ| <= REFINE_MAX_ABS, decisions identical on >=
    REFINE_MIN_SAME), and the whole parity with the Python runtime holds. The page's refine.js
    with other settings on the same outputs: a working size (max_side), the full grid, and
    method none = the contract's bilinear resize bit for bit."""
    from dbd.runtime.refine import RefineSpec, refine_map
    from dbd.runtime.resize import resize_bilinear

    spec = dataclasses.replace(RefineSpec(), radius=0.03, eps=5e-4)
    models = tmp_path / "models"
    models.mkdir()
    model = _with_metadata(
        exports / "dbd_student_320_int8.tflite",
        models / "dbd_student_320_int8.tflite",
        lambda m: m["preprocess"].update(refine=spec.to_dict()),
    )
    photos = _refine_photos(data_root, tmp_path)
    others = [RefineSpec.none(), dataclasses.replace(spec, max_side=400), dataclasses.replace(spec, grid=0, radius=0.1)]
    out = tmp_path / "page"
    result = run_page(
        browser, ROOT, models, out, model.name, photos, styles=("tint",), refine_specs=[o.to_dict() for o in others]
    )
    assert result["state"] == "ready", result["error"]
    assert "back to the photo by guided filter on the logit (radius 0.03 of the short side" in result["screen"]["model"]
    assert result["model"]["refine"] == spec.to_dict()
    lines, problems = [], []
    for row, photo in zip(result["results"], photos):
        figures = parity(model, out, row, photo)  # includes the page's map vs refine_map (the file's spec)
        h, w = row["height"], row["width"]
        pixels = np.fromfile(out / row["rgba"], np.uint8).reshape(h, w, 4)[..., :3]
        prob = np.fromfile(out / row["prob"], np.float32).reshape(320, 320)
        lines.append(
            f"  {photo.name} {w}x{h}, the file's {spec.describe()}: max |Δ| {figures['refine_max_abs']:.1e}, "
            f"decisions {figures['refine_same_decisions']:.4%}, bit-identical {figures['refine_identical']:.1%}"
        )
        for other, refined in zip(others, row["refined"]):
            got = np.fromfile(out / refined["map"], np.float32).reshape(h, w)
            ref = refine_map(prob, pixels, other)
            what = f"{photo.name} {w}x{h} {other.describe()}" + (
                f", max_side {other.max_side}" if other.max_side else ""
            )
            problems += _refine_problems(what, got, ref, other.method)
            if other.method == "none" and not np.array_equal(got, np.clip(resize_bilinear(prob, (h, w)), 0, 1)):
                problems.append(f"{what}: not the bilinear resize bit for bit")
            a = _refine_agreement(got, ref)
            lines.append(
                f"  {what}: max |Δ| {a['max_abs']:.1e}, decisions {a['same_decisions']:.4%}, bit-identical {a['identical']:.1%}"
            )
    print(
        f"\npage (refine.js in {browser['version']}) vs refine_map, on the page's int8 model outputs:\n"
        + "\n".join(lines)
    )
    assert not problems, problems


def _with_metadata(src: Path, dest: Path, change) -> Path:
    from dbd.export.metadata import dumps
    from dbd.export.tflite_flatbuffer import embed_metadata, read_model, write_model
    from dbd.runtime.metadata import read_metadata

    if change is None:  # no "dbd" entry at all
        model = read_model(src.read_bytes())
        model.metadata = [
            m for m in model.metadata or [] if (m.name.decode() if isinstance(m.name, bytes) else m.name) != "dbd"
        ]
        dest.write_bytes(write_model(model))
    else:
        meta = read_metadata(src)
        change(meta)
        dest.write_bytes(embed_metadata(src.read_bytes(), dumps(meta)))
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_metadata", "zero_point", "input_size", "refine_radius"])
def test_page_refuses_a_file_without_metadata_or_with_metadata_that_disagrees_with_the_graph(
    case, browser, exports, photos, tmp_path
):
    changes = {
        "no_metadata": (None, "has no 'dbd' metadata"),
        "zero_point": (
            lambda m: m["input"]["quantization"].update(zero_point=-127),
            "the metadata says input quantization (1, -127) but the graph's tensor has (1, -128)",
        ),
        "input_size": (
            lambda m: (
                m["input"].update(size=[256, 256], shape=[1, 256, 256, 3]),
                m["preprocess"].update(input_size=[256, 256]),
            ),
            "the metadata says input shape [1,256,256,3] but the graph's tensor has [1,320,320,3]",
        ),
        "refine_radius": (
            lambda m: m["preprocess"].update(refine={**m["preprocess"].get("refine", {}), "radius": 2}),
            "the 'dbd' metadata's preprocess.refine.radius = 2 is not valid; expected a fraction of the map's shorter side in (0, 1]",
        ),
    }
    change, words = changes[case]
    models = tmp_path / "models"
    models.mkdir()
    _with_metadata(exports / "dbd_student_320_int8.tflite", models / "dbd_student_320_int8.tflite", change)
    shot = tmp_path / "refused.png"
    result = run_page(
        browser, ROOT, models, tmp_path / "page", "dbd_student_320_int8.tflite", photos[:1], screenshot=shot
    )
    assert result["state"] == "error" and not result["results"], result
    assert words in result["screen"]["error"] and result["screen"]["error"].startswith(
        "Refused dbd_student_320_int8.tflite"
    ), result["screen"]
    assert shot.is_file()


@pytest.mark.slow
def test_parity_check_fails_when_the_metadata_normalisation_drifts(browser, exports, photos, tmp_path):
    """Invisible in the graph (the page runs the file): 'external' normalisation on the folded graph
    feeds (x - mean) / std to a graph that expects pixels; only the parity with Python catches it."""
    models = tmp_path / "models"
    models.mkdir()
    model = _with_metadata(
        exports / "dbd_student_320_fp32.tflite",
        models / "dbd_student_320_fp32.tflite",
        lambda m: m["input"].update(normalization="external"),
    )
    result = run_page(browser, ROOT, models, tmp_path / "page", model.name, photos[:1])
    assert result["state"] == "ready", result["error"]
    with pytest.raises(AssertionError, match="input tensor: only .* of values within one step"):
        parity(exports / model.name, tmp_path / "page", result["results"][0], photos[0])


@pytest.mark.slow
def test_parity_check_fails_when_the_page_preprocessing_drifts(browser, exports, photos, tmp_path):
    """A copy of the page whose resize samples at pixel corners instead of half-pixel centres."""
    site = tmp_path / "site"
    shutil.copytree(WEB, site / "web_demo")
    (site / ".tools").symlink_to(ROOT / ".tools")
    resize_js = site / "web_demo" / "resize.js"
    source = resize_js.read_text()
    assert "const x = (d + 0.5) * scale - 0.5;" in source
    resize_js.write_text(source.replace("const x = (d + 0.5) * scale - 0.5;", "const x = d * scale;"))
    result = run_page(browser, site, exports, tmp_path / "page", "dbd_student_320_int8.tflite", photos[:2])
    assert result["state"] == "ready", result["error"]
    for row, photo in zip(result["results"], photos):
        with pytest.raises(AssertionError, match="input tensor: only") as failure:
            parity(exports / "dbd_student_320_int8.tflite", tmp_path / "page", row, photo)
        assert "differs from PreprocessSpec.postprocess" in str(failure.value)
        print(f"\ndrifted resize caught on {photo.name}: {failure.value}")
