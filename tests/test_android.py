"""The Android demo (android_demo/): its pure-Kotlin core, compiled and unit-tested on the host JVM,
reproduces the Python runtime on real photos, and the exported .tflite keeps the contract the app
relies on. CI fails when either drifts; the drift tests below prove that it does.

What runs here (no Android SDK, emulator or Maven access on these machines):
  * kotlinc (npm `kotlin-compiler`, installed into .tools/ by `make android-tools`) compiles
    android_demo/core/src/{main,test} in ONE invocation into a jar, cached under .tools/ by the
    sources' hash; JUnit 4 (Debian `junit4`) runs every *Test class of it on the JVM;
  * Python writes golden vectors from real photos (hifst F1, a CUHK image, crops of it) and a real
    int8 export: ARGB pixels -> the resized floats and the input tensor bytes the runtime feeds
    (PreprocessSpec.resize_image + encode_input with the file's metadata), the output tensor ->
    P(blur), the map at the photo's size, the tint and heat overlays (runtime.overlay.overlay);
    and the refinement (runtime.refine.refine_map, the contract's last step): the model's raw map,
    the photo, the settings and the refined map, for every photo and for CUHK ground-truth maps;
  * the Kotlin GoldenParityTest reproduces them (tolerances, and why, in its docstring) and writes
    its own tensors and maps back; Python feeds the Kotlin tensors to the LiteRT interpreter;
  * the exported file's contract (one subgraph, builtin ops only, I/O shapes, dtypes, quantisation)
    is checked from Python and, independently, by the Kotlin core's flatbuffer reader.

The toolchain missing is the only reason to skip, and only outside CI (`CI` set: fail instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "android_demo"
CORE_SOURCES = [ANDROID / "core" / "src" / "main" / "kotlin", ANDROID / "core" / "src" / "test" / "kotlin"]
TOOLS = ROOT / ".tools"
JAVA_SHARE = Path("/usr/share/java")
# Compile as the Gradle build does (Kotlin 2.2 in gradle/libs.versions.toml, JVM 17), with the newer kotlinc.
KOTLINC_FLAGS = ["-jvm-target", "17", "-language-version", "2.2", "-api-version", "2.2"]
JVM_OPTS = ["-Xss4m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
MODEL_H, MODEL_W = 64, 96  # non-square on purpose: a transposed H/W cannot pass
INSTALL_HINT = "run `make android-tools` (kotlinc 2.4.20 from npm into .tools/, JUnit 4 from the Debian junit4 package)"
# kotlinc compiles take minutes on these 2-core machines: the whole module runs with the slow
# end-to-end tests (CI's `make test`), not in `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


# ---- toolchain ---------------------------------------------------------------------------------


def _kotlinc() -> Path | None:
    local = TOOLS / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc"
    if local.is_file():
        return local
    found = shutil.which("kotlinc")
    return Path(found) if found else None


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


@pytest.fixture(scope="session")
def toolchain() -> dict[str, Path]:
    kotlinc = _kotlinc()
    java = shutil.which("java")
    stdlib = _first(kotlinc.resolve().parent.parent / "lib" / "kotlin-stdlib.jar") if kotlinc else None
    junit = _first(JAVA_SHARE / "junit4.jar")
    hamcrest = _first(JAVA_SHARE / "hamcrest-core.jar", JAVA_SHARE / "hamcrest.jar")
    missing = [
        name
        for name, found in (
            ("kotlinc", kotlinc),
            ("java", java),
            ("kotlin-stdlib.jar", stdlib),
            ("junit4.jar", junit),
            ("hamcrest", hamcrest),
        )
        if not found
    ]
    if missing:
        message = f"Kotlin/JUnit toolchain missing ({', '.join(missing)}): {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message + " -- CI must not skip the Android checks")
        pytest.skip(message)
    return {"kotlinc": kotlinc, "java": Path(java), "stdlib": stdlib, "junit": junit, "hamcrest": hamcrest}


def _sources() -> list[Path]:
    return sorted(p for root in CORE_SOURCES for p in root.rglob("*.kt"))


@pytest.fixture(scope="session")
def core_jar(toolchain) -> Path:
    """The core module and its JUnit tests, compiled by one kotlinc run; cached by content hash."""
    kotlinc = toolchain["kotlinc"]
    digest = hashlib.sha256()
    version = kotlinc.resolve().parent.parent / "build.txt"
    digest.update(version.read_bytes() if version.is_file() else str(kotlinc).encode())
    digest.update(" ".join(KOTLINC_FLAGS).encode())
    for path in _sources():
        digest.update(path.relative_to(ANDROID).as_posix().encode() + b"\0" + path.read_bytes())
    cache = TOOLS / "android-core"
    jar = cache / f"core-{digest.hexdigest()[:20]}.jar"
    if jar.is_file():
        return jar
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{jar.name}.{os.getpid()}.tmp.jar"
    env = {**os.environ, "JAVA_OPTS": os.environ.get("JAVA_OPTS", "-Xmx1g " + " ".join(JVM_OPTS))}
    cmd = [
        "nice",
        "-n",
        "19",
        str(kotlinc),
        *KOTLINC_FLAGS,
        "-cp",
        f"{toolchain['junit']}:{toolchain['hamcrest']}",
        "-d",
        str(tmp),
        *map(str, CORE_SOURCES),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        pytest.fail(
            f"kotlinc failed on android_demo/core (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    tmp.replace(jar)
    for stale in cache.glob("core-*.jar"):  # jars of older sources
        if stale != jar:
            stale.unlink(missing_ok=True)
    print(f"\nkotlinc: android_demo/core main+test compiled in {time.perf_counter() - start:.1f} s -> {jar}")
    if proc.stderr.strip():
        print(proc.stderr[-3000:])  # warnings
    return jar


def _test_classes(jar: Path) -> list[str]:
    with zipfile.ZipFile(jar) as z:
        names = [
            n[: -len(".class")].replace("/", ".")
            for n in z.namelist()
            if re.fullmatch(r"com/dbd/core/\w+Test\.class", n)
        ]
    return sorted(names)


def run_junit(toolchain, jar: Path, classes: list[str], props: dict[str, str]) -> subprocess.CompletedProcess:
    cp = ":".join(str(p) for p in (jar, toolchain["stdlib"], toolchain["junit"], toolchain["hamcrest"]))
    cmd = [
        "nice",
        "-n",
        "19",
        str(toolchain["java"]),
        *JVM_OPTS,
        *(f"-D{k}={v}" for k, v in props.items()),
        "-cp",
        cp,
        "org.junit.runner.JUnitCore",
        *classes,
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


# ---- a real export and the golden vectors --------------------------------------------------------


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory, data_root) -> Path:
    """A randomly initialised student exported by dbd-export: camera-native int8 TFLite, 64x96."""
    import torch

    from dbd.export.cli import main
    from dbd.models import create_model
    from dbd.models.checkpoint import save_checkpoint
    from dbd.runtime.spec import PreprocessSpec

    torch.manual_seed(0)
    model = create_model("dbd_student")
    folder = tmp_path_factory.mktemp("android_export")
    ckpt = folder / "student.safetensors"
    save_checkpoint(
        ckpt,
        model,
        {
            "preprocess": PreprocessSpec.for_model(model, (MODEL_H, MODEL_W)).to_dict(),
            "training": {"data": "test fixture: random initialisation", "command": "pytest"},
            "metrics": {},
        },
    )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            [
                "--format",
                "tflite",
                "--precision",
                "int8",
                "--weights",
                str(ckpt),
                "--imgsz",
                f"{MODEL_H}x{MODEL_W}",
                "--calib",
                "cuhk",
                "--calib-n",
                "4",
                "--parity-n",
                "4",
                "--out",
                str(folder),
            ]
        )
    files = sorted(folder.glob("*_int8.tflite"))
    assert code == 0 and len(files) == 1, out.getvalue() + err.getvalue()
    return files[0]


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(interpreter, tensor: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], tensor)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def _argb(image: np.ndarray) -> bytes:
    rgb = image.astype(np.uint32)
    return (0xFF000000 | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]).astype("<u4").tobytes()


@pytest.fixture(scope="session")
def golden(int8_model, tmp_path_factory, data_root) -> Path:
    """Golden vectors from the Python runtime, as the Kotlin GoldenParityTest reads them."""
    import cv2

    from dbd.runtime.imageio import read_image
    from dbd.runtime.metadata import decode_output, encode_input, read_metadata
    from dbd.runtime.overlay import overlay
    from dbd.runtime.refine import RefineSpec, refine_map
    from dbd.runtime.spec import PreprocessSpec

    meta = read_metadata(int8_model)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    interpreter = _interpreter(int8_model)
    folder = tmp_path_factory.mktemp("android_golden")
    f1 = read_image(data_root / "photos" / "hifst_moreimages_F" / "F1.png")
    cuhk = read_image(data_root / "CUHK" / "images" / "out_of_focus0001.jpg")
    h, w = spec.input_size
    photos = {
        "F1": f1,  # 244x207 -> 96x64
        "cuhk_0001": cuhk,  # 640x480 -> 96x64
        "cuhk_crop_2x": np.ascontiguousarray(cuhk[100 : 100 + 2 * h, 200 : 200 + 2 * w]),  # exactly twice the model
        "cuhk_crop_same": np.ascontiguousarray(cuhk[50 : 50 + h, 60 : 60 + w]),  # the model's size: no resize
        "F1_crop_small": np.ascontiguousarray(f1[90:103, 110:130]),  # 20x13: upscaled
    }
    cases = []
    refine_cases = []

    def add_refine_case(name: str, image: np.ndarray, prob: np.ndarray, refine: RefineSpec, from_model: bool):
        """The model's raw map (float32 at its size), the photo, the settings and refine_map's output."""
        refined = spec.postprocess(prob, image) if from_model else refine_map(prob, image, refine)
        assert refined.dtype == np.float32 and refined.shape == image.shape[:2], (name, refined.dtype, refined.shape)
        files = {"argb": _argb(image), "prob": prob.astype("<f4").tobytes(), "refined": refined.astype("<f4").tobytes()}
        entry = {
            "name": name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "prob_width": int(prob.shape[1]),
            "prob_height": int(prob.shape[0]),
            "refine": refine.to_dict(),
            # true: Kotlin takes the settings from the model's own metadata (Postprocessor(ModelSpec)).
            "from_model": from_model,
        }
        for key, data in files.items():
            (folder / f"{name}.{key}").write_bytes(data)
            entry[key] = f"{name}.{key}"
        refine_cases.append(entry)

    def add_case(name: str, image: np.ndarray, raw_out: np.ndarray, threshold: float | None, tensor=None, unit=None):
        prob = decode_output(meta, raw_out)[0]
        # The bilinear map (refinement "none"): the resize kernel's parity, bit-exact on x86 + IPP.
        photo = refine_map(prob, image, RefineSpec.none())
        add_refine_case(f"{name}.model", image, prob, spec.refine, from_model=True)  # what the app draws
        # A threshold that splits the map (a random model's P is nearly constant), exactly a float32.
        t = float(np.float32(np.median(photo))) if threshold is None else threshold
        files = {
            "argb": _argb(image),
            "output": raw_out.tobytes(),
            "prob": prob.astype("<f4").tobytes(),
            "photo": photo.astype("<f4").tobytes(),
            "heat": overlay(image, photo, "heat", t).tobytes(),
            "tint": overlay(image, photo, "tint", t).tobytes(),
        }
        if tensor is not None:
            files["input"] = tensor.tobytes()
            files["resized"] = unit.astype("<f4").tobytes()
        entry = {"name": name, "width": int(image.shape[1]), "height": int(image.shape[0]), "threshold": t}
        for key, data in files.items():
            (folder / f"{name}.{key}").write_bytes(data)
            entry[key] = f"{name}.{key}"
        cases.append(entry)

    for name, image in photos.items():
        unit = spec.resize_image(image.astype(np.float32) / np.float32(spec.pixel_scale))  # Predictor._model_input
        tensor = encode_input(meta, unit)
        add_case(name, image, run_tflite(interpreter, tensor), None, tensor, unit)
    # Every int8 output level once (and the whole JET table), drawn over F1.
    ramp = (np.arange(h * w) % 256 - 128).astype(np.int8).reshape(meta["output"]["shape"])
    add_case("ramp", f1, ramp, 0.5)

    # The refinement on maps with real structure (a random model's map is nearly flat): CUHK's ground
    # truth softened at the 320x320 of the shipped model, and a disc over F1.
    def soft_mask(stem: str) -> np.ndarray:
        mask = cv2.imread(str(data_root / "CUHK" / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(mask.astype(np.float32) / 255, (320, 320), interpolation=cv2.INTER_AREA)
        return np.clip(cv2.GaussianBlur(small, (0, 0), 3.0), 0.02, 0.98).astype(np.float32)

    cuhk3 = read_image(data_root / "CUHK" / "images" / "out_of_focus0003.jpg")
    yy, xx = np.mgrid[0:320, 0:320]
    disc = (1 / (1 + np.exp((np.hypot(yy - 150, xx - 170) - 90) / 12))).astype(np.float32)
    for name, image, prob, refine in (
        ("cuhk_0001.gt320", cuhk, soft_mask("out_of_focus0001"), RefineSpec()),  # 480x640, the default settings
        ("cuhk_0003.gt320", cuhk3, soft_mask("out_of_focus0003"), RefineSpec(grid=256)),  # 295x640: grid 256x555
        # working size 360x480, grid 128x171
        (
            "cuhk_0001.gt320.max_side",
            cuhk,
            soft_mask("out_of_focus0001"),
            RefineSpec(max_side=480, grid=128, radius=0.06, eps=1e-2),
        ),
        ("F1.disc320.full_grid", f1, disc, RefineSpec(grid=0)),  # 244x207: the grid is the photo
        ("cuhk_0001.gt320.none", cuhk, soft_mask("out_of_focus0001"), RefineSpec.none()),  # bilinear
    ):
        add_refine_case(name, image, prob, refine, from_model=False)
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0, :, ::-1]
    (folder / "jet.rgb").write_bytes(np.ascontiguousarray(jet).tobytes())
    (folder / "manifest.json").write_text(
        json.dumps({"model": str(int8_model), "jet": "jet.rgb", "cases": cases, "refine_cases": refine_cases}, indent=1)
    )
    return folder


@pytest.fixture(scope="session")
def kotlin_run(toolchain, core_jar, golden, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, float]:
    """Every JUnit class of the core, once, with the golden vectors; Kotlin's results land in `out`."""
    out = tmp_path_factory.mktemp("android_kotlin_out")
    start = time.perf_counter()
    proc = run_junit(
        toolchain,
        core_jar,
        _test_classes(core_jar),
        {"dbd.golden": str(golden), "dbd.out": str(out), "dbd.requireGolden": "true"},
    )
    return proc, out, time.perf_counter() - start


# ---- the tests ---------------------------------------------------------------------------------


def test_kotlin_core_compiles_and_its_jvm_tests_pass(kotlin_run, core_jar):
    proc, _, seconds = kotlin_run
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"Kotlin core tests failed:\n{output[-8000:]}"
    match = re.search(r"^OK \((\d+) tests?\)", proc.stdout, re.M)
    assert match, output[-3000:]
    classes = _test_classes(core_jar)
    assert "com.dbd.core.GoldenParityTest" in classes and len(classes) >= 8, classes
    assert int(match.group(1)) >= 20
    print(f"\nJUnit: {match.group(0)} in {len(classes)} classes, {seconds:.1f} s")


def test_kotlin_matches_the_python_runtime_on_real_photos(kotlin_run, golden):
    """The figures GoldenParityTest measured, re-checked from Python on the files Kotlin wrote."""
    import cv2

    proc, out, _ = kotlin_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads((out / "kotlin_parity.json").read_text())
    manifest = json.loads((golden / "manifest.json").read_text())
    rows = {r["name"]: r for r in report["cases"]}
    assert set(rows) == {c["name"] for c in manifest["cases"]}
    for case in manifest["cases"]:
        name = case["name"]
        photo_py = np.frombuffer((golden / case["photo"]).read_bytes(), "<f4")
        photo_kt = np.frombuffer((out / f"{name}.kotlin_photo.f32").read_bytes(), "<f4")
        assert np.abs(photo_kt - photo_py).max() <= 1e-5, name
        for style in ("heat", "tint"):
            py = np.frombuffer((golden / case[style]).read_bytes(), np.uint8)
            kt = np.frombuffer((out / f"{name}.kotlin_{style}.rgb").read_bytes(), np.uint8)
            assert py.shape == kt.shape
            assert rows[name][f"{style}_from_python_map_differing"] == 0, (name, style)
        if "input" in case:
            py = np.frombuffer((golden / case["input"]).read_bytes(), np.int8).astype(int)
            kt = np.frombuffer((out / f"{name}.kotlin_input.bin").read_bytes(), np.int8).astype(int)
            assert py.shape == kt.shape and np.abs(py - kt).max() <= 1, name
            assert rows[name]["input_differing"] == int((py != kt).sum())
    # On x86 with IPP (the opencv-python wheels) the reproduction is bit-exact for every downscale
    # and same-size photo: the resized floats, hence the int8 tensor, hence the maps and overlays.
    if cv2.ipp.useIPP() and platform.machine().lower() in ("x86_64", "amd64"):
        for name in ("F1", "cuhk_0001", "cuhk_crop_2x", "cuhk_crop_same"):
            row = rows[name]
            assert row["resized_differing"] == 0 and row["input_differing"] == 0, row
            assert row["photo_differing"] == 0 and row["heat_differing"] == 0 and row["tint_differing"] == 0, row
    summary = "; ".join(
        f"{r['name']} {r['size']}: input {r.get('input_differing', '-')}/{r.get('input_values', '-')} "
        f"differ (max step {r.get('input_max_step', '-')}), resized max|Δ| {r.get('resized_max_abs', '-')}, "
        f"map max|Δ| {r['photo_max_abs']}, heat/tint px differ {r['heat_differing']}/{r['tint_differing']}"
        for r in report["cases"]
    )
    print(f"\nparity ({report['model']}): {summary}")


REFINE_MAX_ABS = (
    1e-4  # on P(blur); measured: a few 1e-7 (float resizes, apply and exp; numpy's float32 exp is not Java's)
)
REFINE_SAME_DECISIONS = 0.999  # share of pixels on the same side of 0.5; measured: all of them


def test_kotlin_refinement_matches_python_refine_map_on_real_photos(kotlin_run, golden):
    """Refine.kt against refine_map from the same inputs (the model's raw map, the photo, the settings):
    max |Δ| <= 1e-4 on P(blur) and >= 99.9 % of the decisions at 0.5 identical, on the photos of every
    golden case (settings from the model's metadata, through Postprocessor(ModelSpec)) and on CUHK ground
    truth maps at 320x320, covering a subsampled non-square grid, a working size and a full-size grid."""
    import cv2

    from dbd.runtime.refine import RefineSpec, grid_size, working_size

    proc, out, _ = kotlin_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    manifest = json.loads((golden / "manifest.json").read_text())
    kotlin = json.loads((out / "kotlin_refine.json").read_text())
    # A refine block may leave fields out: both runtimes then take the same defaults.
    assert kotlin["defaults"] == RefineSpec().to_dict(), "Kotlin's RefineSpec() defaults differ from Python's"
    rows = {r["name"]: r for r in kotlin["cases"]}
    assert set(rows) == {c["name"] for c in manifest["refine_cases"]}
    assert {f"{c['name']}.model" for c in manifest["cases"]} <= set(rows)  # every golden photo, refined
    kinds = set()
    for case in manifest["refine_cases"]:
        name = case["name"]
        py = np.frombuffer((golden / case["refined"]).read_bytes(), "<f4")
        kt = np.frombuffer((out / f"{name}.kotlin_refined.f32").read_bytes(), "<f4")
        assert kt.shape == py.shape == (case["width"] * case["height"],), name
        max_abs = float(np.abs(kt.astype(np.float64) - py).max())
        same = float(np.mean((kt >= 0.5) == (py >= 0.5)))
        assert max_abs <= REFINE_MAX_ABS and same >= REFINE_SAME_DECISIONS, (name, max_abs, same, rows[name])
        assert rows[name]["max_abs"] == pytest.approx(max_abs, abs=1e-9), name  # Kotlin measured the same
        assert rows[name]["via"] == ("metadata" if case["from_model"] else "case"), name
        spec = RefineSpec(**case["refine"])
        if not spec.enabled:
            kinds.add("bilinear")
            if cv2.ipp.useIPP() and platform.machine().lower() in ("x86_64", "amd64"):
                assert max_abs == 0, name  # the one-channel upscale is bit-exact against cv2 + IPP
            continue
        hw = (case["height"], case["width"])
        work = working_size(hw, spec.max_side)
        grid = grid_size(work, spec.grid)
        kinds.add("working size" if work != hw else "photo size")
        kinds.add("full grid" if grid == work else "subsampled grid")
        if grid != work and min(hw) > 256 and hw[0] != hw[1]:
            kinds.add("subsampled grid of a non-square photo > 256 px")
        if min(hw) <= 256 and grid == work:
            kinds.add("small photo, full grid")
        if (case["prob_height"], case["prob_width"]) == (320, 320):
            kinds.add("320x320 map")
    assert {
        "bilinear",
        "working size",
        "subsampled grid of a non-square photo > 256 px",
        "small photo, full grid",
        "320x320 map",
    } <= kinds, kinds
    print(
        "\nrefinement parity (Kotlin vs refine_map): "
        + "; ".join(
            f"{r['name']} {r['size']} from {r['map']} [{r['refine']}]: max|Δ| {r['max_abs']:.2e}, "
            f"{r['decisions_differing']}/{r['pixels']} decisions differ, {r['ms']:.0f} ms"
            for r in rows.values()
        )
    )


def test_litert_runs_the_kotlin_preprocessed_tensors(kotlin_run, golden, int8_model):
    """Kotlin writes the tensor bytes; the TFLite interpreter runs them; the map is the Python-fed one."""
    from dbd.runtime.metadata import decode_output, read_metadata

    proc, out, _ = kotlin_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    meta = read_metadata(int8_model)
    interpreter = _interpreter(int8_model)
    inp = interpreter.get_input_details()[0]
    checked = 0
    for case in json.loads((golden / "manifest.json").read_text())["cases"]:
        if "input" not in case:
            continue
        tensor = np.frombuffer((out / f"{case['name']}.kotlin_input.bin").read_bytes(), inp["dtype"]).reshape(
            inp["shape"]
        )
        prob_kt = decode_output(meta, run_tflite(interpreter, tensor))[0]
        prob_py = np.frombuffer((golden / case["prob"]).read_bytes(), "<f4").reshape(prob_kt.shape)
        # Identical tensors give identical maps; a ±1 input step may move an output by a step or two.
        assert np.abs(prob_kt - prob_py).max() <= 2 / 256, case["name"]
        checked += 1
    assert checked == 5


DRIFTS = {
    # name: (what is perturbed, words the failing Kotlin run must print)
    "golden_input_tensor": (
        "F1's expected input tensor, one value moved by 3 quantisation steps",
        ["F1: input tensor differs"],
    ),
    "golden_jet": ("one entry of cv2's JET table", ["JET colour map differs"]),
    "metadata_zero_point": ("the metadata's input zero point, -128 -> -127", ["input zero point -127", "-128"]),
    "metadata_input_size": (
        "the metadata's input size, 64x96 -> 96x96 (shape kept consistent)",
        ["input shape [1, 96, 96, 3]", "[1, 64, 96, 3]"],
    ),
    "metadata_output_scale": ("the metadata's output scale, 1/256 -> 1/255", ["output quantization"]),
    # The refinement: its settings from the manifest and from the model's metadata.
    "golden_refine_eps": (
        "the eps of one refinement case, the default -> 1e-2",
        ["cuhk_0001.gt320: refined map differs from Python's refine_map"],
    ),
    "metadata_refine_method": (
        "the metadata's refine method, guided -> none (the app would draw the bilinear map)",
        ["ramp.model: refined map differs from Python's refine_map"],
    ),
    # Invisible in the graph: only the parity with Python's tensors catches it.
    "metadata_normalization": (
        "the metadata's normalisation, folded -> external (mean/std applied twice)",
        ["F1: input tensor differs", "cuhk_0001: input tensor differs"],
    ),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_ci_fails_when_kotlin_preprocessing_or_the_model_contract_drifts(
    drift, toolchain, core_jar, golden, int8_model, tmp_path
):
    from dbd.export.metadata import dumps
    from dbd.export.tflite_flatbuffer import embed_metadata
    from dbd.runtime.metadata import read_metadata

    bad = tmp_path / "golden"
    shutil.copytree(golden, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    if drift == "golden_input_tensor":
        target = bad / next(c["input"] for c in manifest["cases"] if c["name"] == "F1")
        data = bytearray(target.read_bytes())
        value = data[100] - 256 if data[100] > 127 else data[100]  # the int8 value
        data[100] = (value + 3 if value <= 124 else value - 3) & 0xFF
        target.write_bytes(bytes(data))
    elif drift == "golden_refine_eps":
        case = next(c for c in manifest["refine_cases"] if c["name"] == "cuhk_0001.gt320")
        case["refine"]["eps"] = 1e-2
        (bad / "manifest.json").write_text(json.dumps(manifest))
    elif drift == "golden_jet":
        data = bytearray((bad / "jet.rgb").read_bytes())
        data[3 * 200 + 1] ^= 0x10
        (bad / "jet.rgb").write_bytes(bytes(data))
    else:
        meta = read_metadata(int8_model)
        if drift == "metadata_zero_point":
            meta["input"]["quantization"]["zero_point"] = -127
        elif drift == "metadata_input_size":
            meta["input"]["size"] = [96, 96]
            meta["input"]["shape"] = [1, 96, 96, 3]
            meta["preprocess"]["input_size"] = [96, 96]
        elif drift == "metadata_normalization":
            meta["input"]["normalization"] = "external"
        elif drift == "metadata_refine_method":
            assert meta["preprocess"]["refine"]["method"] == "guided", meta["preprocess"]
            meta["preprocess"]["refine"]["method"] = "none"
        else:
            meta["output"]["quantization"]["scale"] = 1 / 255
        model = bad / "model.tflite"
        model.write_bytes(embed_metadata(int8_model.read_bytes(), dumps(meta)))
        manifest["model"] = str(model)
        (bad / "manifest.json").write_text(json.dumps(manifest))
    proc = run_junit(
        toolchain,
        core_jar,
        ["com.dbd.core.GoldenParityTest"],
        {"dbd.golden": str(bad), "dbd.out": str(tmp_path / "out"), "dbd.requireGolden": "true"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"Kotlin tests passed although {DRIFTS[drift][0]} drifted:\n{output[-3000:]}"
    for words in DRIFTS[drift][1]:
        assert words in output, f"the failure does not name the mismatch ({words!r}):\n{output[-3000:]}"


def _contract_models() -> list[Path]:
    shipped = ROOT / "exports" / "dbd_student_320_int8.tflite"  # what the app's Gradle task copies by default
    return [shipped] if shipped.is_file() else []


@pytest.mark.parametrize("which", ["fresh_export"] + [p.name for p in _contract_models()])
def test_exported_tflite_keeps_the_contract_the_app_relies_on(which, int8_model, kotlin_run):
    """One subgraph, builtin ops only, camera-native int8 I/O with the app's quantisation, a signature,
    metadata that agrees with the graph, and the same contract read by the Kotlin core."""
    from dbd.export import tflite_flatbuffer
    from dbd.runtime.metadata import read_metadata

    path = int8_model if which == "fresh_export" else ROOT / "exports" / which
    data = path.read_bytes()
    model = tflite_flatbuffer.read_model(data)
    assert len(model.subgraphs) == 1
    counts, custom, transposes = tflite_flatbuffer.op_histogram(data)
    assert not custom, f"custom/Flex ops would crash the phone's builtin runtime: {custom}"
    assert not [k for k in counts if k.startswith(("CUSTOM", "BUILTIN_"))], counts
    tflite_flatbuffer.check_ops(path, data)  # also: no NCHW<->NHWC layout transposes
    meta = read_metadata(path)
    h, w = meta["input"]["size"]
    interpreter = _interpreter(path)
    (inp,) = interpreter.get_input_details()
    (outp,) = interpreter.get_output_details()
    assert list(inp["shape"]) == [1, h, w, 3] == meta["input"]["shape"] and inp["dtype"] == np.int8
    assert list(outp["shape"]) == [1, h, w, 1] == meta["output"]["shape"] and outp["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128) and meta["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}
    assert outp["quantization"] == (1 / 256, -128)
    assert (
        meta["output"]["quantization"]["zero_point"] == -128
        and abs(meta["output"]["quantization"]["scale"] - 1 / 256) < 1e-12
    )
    assert (meta["input"]["layout"], meta["input"]["normalization"], meta["input"]["color_order"]) == (
        "NHWC",
        "folded",
        "RGB",
    )
    assert (meta["output"]["meaning"], meta["output"]["blur_value"]) == ("blur_probability", 1)
    # A photo runs: P(blur) in [0, 1] out of pixels - 128 in.
    pixels = np.random.default_rng(0).integers(0, 256, (1, h, w, 3))
    raw = run_tflite(interpreter, (pixels - 128).astype(np.int8))
    prob = (raw.astype(np.float32) + 128) / 256
    assert prob.shape == (1, h, w, 1) and 0 <= prob.min() and prob.max() <= 1
    runner = _interpreter(path).get_signature_runner("serving_default")
    assert len(runner.get_input_details()) == 1 and len(runner.get_output_details()) == 1
    if which == "fresh_export":
        # The Kotlin core read the same contract out of the flatbuffer (ModelSpec.toString()).
        _, out, _ = kotlin_run
        kotlin_view = json.loads((out / "kotlin_parity.json").read_text())["model"]
        q_in, q_out = meta["input"]["quantization"], meta["output"]["quantization"]
        assert kotlin_view == (
            f"dbd_student int8 tflite: input int8 [1, {h}, {w}, 3] NHWC q({q_in['scale']}, {q_in['zero_point']}), "
            f"output int8 [1, {h}, {w}, 1] q({q_out['scale']}, {q_out['zero_point']})"
        )


# ---- the real Android platform: kotlinc -no-jdk against android-23's android.jar -----------------------

# Debian bullseye's libandroid-23-java 6.0.1+r72-6 (`make android-platform`: apt-get download through
# a private sources list, extracted into .tools/). API 23 is below the app's minSdk 24: a stricter check.
ANDROID_JAR = TOOLS / "android-23" / "com.android.android-23.jar"
APP_SOURCES = ANDROID / "app" / "src" / "main" / "java"
PLATFORM_IMPORTS = re.compile(r"(android|java|javax|kotlin|com\.dbd\.core)\.")


@pytest.fixture(scope="session")
def android_jar(toolchain) -> Path:
    if not ANDROID_JAR.is_file():
        pytest.skip(
            f"Android platform jar missing: {ANDROID_JAR.relative_to(ROOT)} (com.android.android-23.jar from "
            f"Debian bullseye's libandroid-23-java 6.0.1+r72-6); run `make android-platform` where the Debian "
            f"archive is reachable"
        )
    return ANDROID_JAR


def kotlinc_android(
    toolchain, android_jar: Path, sources: list[Path], dest: Path, classpath=()
) -> subprocess.CompletedProcess:
    """kotlinc with no JDK on the classpath: java.* and android.* resolve from the platform jar only."""
    env = {**os.environ, "JAVA_OPTS": os.environ.get("JAVA_OPTS", "-Xmx1g " + " ".join(JVM_OPTS))}
    cp = ":".join(str(p) for p in (android_jar, *classpath))
    cmd = [
        "nice",
        "-n",
        "19",
        str(toolchain["kotlinc"]),
        "-no-jdk",
        *KOTLINC_FLAGS,
        "-classpath",
        cp,
        "-d",
        str(dest),
        *map(str, sources),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def android_core_jar(toolchain, android_jar) -> Path:
    """core/src/main compiled against android-23 alone; cached under .tools/ by the sources' hash."""
    digest = hashlib.sha256(f"{android_jar.stat().st_size} {' '.join(KOTLINC_FLAGS)}".encode())
    main = CORE_SOURCES[0]
    for path in sorted(main.rglob("*.kt")):
        digest.update(path.relative_to(ANDROID).as_posix().encode() + b"\0" + path.read_bytes())
    cache = TOOLS / "android-core"
    jar = cache / f"android23-core-{digest.hexdigest()[:20]}.jar"  # not core-*.jar: core_jar prunes those
    if jar.is_file():
        return jar
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{jar.name}.{os.getpid()}.tmp.jar"
    start = time.perf_counter()
    proc = kotlinc_android(toolchain, android_jar, [main], tmp)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        pytest.fail(
            f"android_demo/core does not compile against the Android API 23 platform jar "
            f"(kotlinc -no-jdk, exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    tmp.replace(jar)
    for stale in cache.glob("android23-core-*.jar"):
        if stale != jar:
            stale.unlink(missing_ok=True)
    print(f"\nkotlinc -no-jdk: android_demo/core against {android_jar.name} in {time.perf_counter() - start:.1f} s")
    return jar


def _platform_only_app_files() -> tuple[list[Path], dict[str, str]]:
    """:app files whose imports are all android.*, java(x).*, kotlin.* or the core; the others with
    the first import that keeps them out (AndroidX, CameraX, LiteRT, coroutines need Google's Maven)."""
    chosen, excluded = [], {}
    for path in sorted(APP_SOURCES.rglob("*.kt")):
        imports = re.findall(r"^import\s+([\w.]+)", path.read_text(), re.M)
        other = [i for i in imports if not PLATFORM_IMPORTS.match(i)]
        if other:
            excluded[path.name] = other[0]
        else:
            chosen.append(path)
    return chosen, excluded


def test_core_compiles_against_the_android_23_platform_jar(android_core_jar):
    """The core calls only Java APIs that Android (API 23, below minSdk 24) has."""
    import zipfile as zf

    with zf.ZipFile(android_core_jar) as z:
        classes = [n for n in z.namelist() if n.startswith("com/dbd/core/") and n.endswith(".class")]
    assert {
        "com/dbd/core/ModelSpec.class",
        "com/dbd/core/Preprocessor.class",
        "com/dbd/core/Bilinear.class",
        "com/dbd/core/Overlay.class",
        "com/dbd/core/FloatMath.class",
    } <= set(classes)


def test_app_files_using_only_android_and_core_compile_against_the_platform_jar(
    toolchain, android_jar, android_core_jar, tmp_path
):
    chosen, excluded = _platform_only_app_files()
    assert "OverlayView.kt" in [p.name for p in chosen], (chosen, excluded)
    for path in chosen:
        proc = kotlinc_android(toolchain, android_jar, [path], tmp_path / f"{path.stem}.jar", [android_core_jar])
        assert proc.returncode == 0, (
            f"{path.name} does not compile against android-23 + core:\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    print(
        f"\ncompiled against android-23 + core: {[p.name for p in chosen]}; not compiled here "
        f"(first dependency outside the platform): {excluded}"
    )


def test_platform_jar_compile_fails_on_a_java_api_that_android_23_lacks(toolchain, android_jar, tmp_path):
    """Math.fma(Float...) is in every JDK since 9 but on Android only from API 33 (why FloatMath.fma
    exists): a core that calls it compiles for the JVM tests and must fail here."""
    drift = tmp_path / "Drift.kt"
    drift.write_text(
        "package com.dbd.core\n\ninternal fun fusedLerp(a: Float, b: Float, w: Float): Float = Math.fma(b - a, w, a)\n"
    )
    proc = kotlinc_android(toolchain, android_jar, [CORE_SOURCES[0], drift], tmp_path / "drift.jar")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"kotlinc accepted Math.fma against android-23:\n{output[-3000:]}"
    assert "Drift.kt" in output and "fma" in output, output[-3000:]


def test_gradle_project_is_complete_and_the_app_takes_its_contract_from_the_model():
    """What a reviewer checks by eye, checked by CI: the project can be opened and built by a current
    Android toolchain (the build itself needs the SDK and Maven, which CI here has not)."""
    for rel in (
        "settings.gradle.kts",
        "build.gradle.kts",
        "gradle.properties",
        "gradle/libs.versions.toml",
        "gradle/wrapper/gradle-wrapper.properties",
        "app/build.gradle.kts",
        "app/proguard-rules.pro",
        "app/src/main/AndroidManifest.xml",
        "core/build.gradle.kts",
        "README.md",
    ):
        assert (ANDROID / rel).is_file(), f"android_demo/{rel} is missing"
    settings = (ANDROID / "settings.gradle.kts").read_text()
    assert 'include(":app", ":core")' in settings and "google()" in settings and "mavenCentral()" in settings
    versions = tomllib.loads((ANDROID / "gradle/libs.versions.toml").read_text())
    for key in (
        "agp",
        "kotlin",
        "camerax",
        "litert",
        "coreKtx",
        "appcompat",
        "material",
        "lifecycle",
        "navigation",
        "junit",
    ):
        assert re.fullmatch(r"\d+(\.\d+)+(-[\w.]+)?", versions["versions"][key]), f"{key} is not pinned"
    libraries = {v["module"] for v in versions["libraries"].values()}
    assert {
        "com.google.ai.edge.litert:litert",
        "androidx.camera:camera-camera2",
        "androidx.camera:camera-lifecycle",
        "androidx.camera:camera-view",
    } <= libraries
    wrapper = (ANDROID / "gradle/wrapper/gradle-wrapper.properties").read_text()
    assert re.search(
        r"distributionUrl=https\\://services\.gradle\.org/distributions/gradle-\d+\.\d+(\.\d+)?-bin\.zip", wrapper
    )
    app = (ANDROID / "app/build.gradle.kts").read_text()
    assert "minSdk = 24" in app and 'noCompress += "tflite"' in app
    assert "../exports/dbd_student_320_int8.tflite" in app and "dbd.model" in app and 'project(":core")' in app
    manifest = (ANDROID / "app/src/main/AndroidManifest.xml").read_text()
    assert "android.permission.CAMERA" in manifest and 'android:required="false"' in manifest
    core_build = (ANDROID / "core/build.gradle.kts").read_text()
    assert "kotlin.jvm" in core_build and "com.android" not in core_build
    # The core is pure Kotlin: no android.* anywhere in it.
    for path in _sources():
        assert not re.search(r"^import android(x)?\.", path.read_text(), re.M), f"{path} imports Android"
    # The app feeds the model from its metadata: no normalisation constants, sizes or zero points typed in.
    app_sources = list((ANDROID / "app/src/main").rglob("*.kt"))
    assert len(app_sources) >= 6
    for path in app_sources:
        text = path.read_text()
        assert not re.search(r"0\.485|0\.229|0\.456|(?<![\w.])-?128\b|\b320\b|/ ?255f?\b", text), (
            f"{path.name} hard-codes preprocessing"
        )
    assert (ROOT / ".gitignore").read_text().splitlines().count(".tools/") == 1
