"""The emulated side of `dbd-bench --arch aarch64` (dbd.benchmarks.emulation): run ONE exported
model on inputs already encoded on x86, and save its raw outputs.

    qemu-aarch64 -cpu cortex-a76 -L SYSROOT SYSROOT/usr/bin/python3 arm_worker.py JOB.json

JOB.json: {"runtime": "tflite" | "ncnn", "model": PATH, "kernels": KERNELS, "inputs": NPY, "outputs": NPY,
"input_name", "output_name", "output_shape" (ncnn only)}. KERNELS: "xnnpack" (LiteRT's default
delegate) or "builtin" (LiteRT's builtin kernels, no default delegate) for tflite; "fp16-on" or
"fp16-off" (ncnn's fp16 storage, packing and arithmetic) for ncnn. One thread, one image per call.

It runs inside the arm64 sysroot of `make arm-tools`, so it imports only numpy and the runtime's
own aarch64 wheel: never dbd, torch or anything else the x86 side has. Preprocessing and scoring
happen on x86; this side is the model alone: input tensor in, raw output tensor out. Prints one
JSON line (runtime versions and the emulated CPU's features) on stdout.
"""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np


def tflite(job: dict, inputs: np.ndarray) -> tuple[list[np.ndarray], dict]:
    from ai_edge_litert import interpreter as litert

    if job["kernels"] == "xnnpack":
        resolver = litert.OpResolverType.AUTO  # builtin kernels with the default XNNPACK delegate
    elif job["kernels"] == "builtin":
        resolver = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    else:
        raise SystemExit(f"arm_worker: unknown tflite kernels {job['kernels']!r}")
    interpreter = litert.Interpreter(model_path=job["model"], num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    outputs = []
    for x in inputs:
        interpreter.set_tensor(inp, x[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out)[0].copy())
    return outputs, {}


def ncnn_run(job: dict, inputs: np.ndarray) -> tuple[list[np.ndarray], dict]:
    import ncnn

    if job["kernels"] not in ("fp16-on", "fp16-off"):
        raise SystemExit(f"arm_worker: unknown ncnn kernels {job['kernels']!r}")
    half = job["kernels"] == "fp16-on"
    net = ncnn.Net()
    opt = net.opt
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = half
    opt.use_bf16_storage = opt.use_bf16_packed = False
    opt.use_vulkan_compute = False
    opt.num_threads = 1
    model = job["model"]
    if net.load_param(f"{model}/model.param") or net.load_model(f"{model}/model.bin"):
        raise SystemExit(f"arm_worker: ncnn cannot load {model}")
    shape = tuple(job["output_shape"][1:])  # without the batch of 1
    outputs = []
    for x in inputs:
        extractor = net.create_extractor()
        extractor.input(job["input_name"], ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32)))
        ret, result = extractor.extract(job["output_name"])
        if ret != 0:
            raise SystemExit(f"arm_worker: ncnn extract returned {ret} on {model}")
        outputs.append(np.array(result, dtype=np.float32, copy=True).reshape(shape))
    return outputs, {"asimdhp": bool(ncnn.cpu_support_arm_asimdhp())}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: arm_worker.py JOB.json")
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    inputs = np.load(job["inputs"], mmap_mode="r")
    start = time.perf_counter()
    run = {"tflite": tflite, "ncnn": ncnn_run}[job["runtime"]]
    outputs, features = run(job, inputs)
    np.save(job["outputs"], np.stack(outputs))
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import version

        versions[job["runtime"]] = version("ai-edge-litert" if job["runtime"] == "tflite" else "ncnn")
    except Exception:  # noqa: BLE001 - a version is a note, never a failure
        pass
    report = {"machine": platform.machine(), "seconds": time.perf_counter() - start, **features, **versions}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
