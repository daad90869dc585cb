// LiteRT.js (npm @litertjs/core) behind one small interface: open a .tflite file's bytes on
// WebGPU where the browser has it, else on WASM (XNNPACK on the CPU), and run one input tensor.
//
// LiteRT.js's Tensor class takes float32, int32 and uint8 arrays only, so an int8 file (dbd's
// camera-native export: int8 in, int8 out) runs through the runtime's own Wasm bindings
// (LiteRt.liteRtWasm: loadModel, compileModel, LiteRtTensorBuffer), on the CPU.
import {
  getDefaultEnvironment, getGlobalLiteRt, getWebGpuDevice, isWebGPUSupported, loadAndCompile, loadLiteRt, Tensor,
} from '@litertjs/core';

const HIGH_LEVEL_DTYPES = new Set(['float32', 'uint8']);
let loading = null;

/** Loads the LiteRT.js Wasm runtime from `wasmDir` once (it also tries to create a WebGPU device). */
export function loadRuntime(wasmDir) {
  loading ??= loadLiteRt(wasmDir);
  return loading;
}

/** Why WebGPU is not used here, in words, or null when a WebGPU device is ready. */
function webGpuUnavailable() {
  if (!globalThis.isSecureContext) return 'WebGPU needs a secure page (https:// or localhost)';
  if (!isWebGPUSupported()) return 'this browser has no WebGPU';
  if (!getWebGpuDevice()) return 'WebGPU has no usable adapter here';
  return null;
}

/**
 * Compiles the model. `prefer`: 'auto' (WebGPU, else WASM), 'webgpu' or 'wasm'.
 * Returns {backend: 'webgpu' | 'wasm', note, threads, run(typedArray) -> Promise<typedArray>, delete()}.
 */
export async function openModel(bytes, contract, prefer = 'auto') {
  const lowLevel = !HIGH_LEVEL_DTYPES.has(contract.inputDtype) || !HIGH_LEVEL_DTYPES.has(contract.outputDtype);
  const threads = getGlobalLiteRt().liteRtWasm.getThreadCount();
  if (lowLevel) {
    const note = `${contract.inputDtype} I/O: LiteRT.js's Tensor API takes float32/int32/uint8 only, `
      + 'so this file runs through its Wasm bindings on the CPU (WASM, XNNPACK)';
    return { backend: 'wasm', note, threads, ...(await openWasmBindings(bytes, contract)) };
  }
  let note = prefer === 'wasm' ? 'WASM asked for (?backend=wasm)' : webGpuUnavailable();
  if (!note) {
    try {
      const model = await openTensorApi(bytes, contract, 'webgpu');
      await model.run(new (model.inputType)(contract.inputShape.reduce((a, b) => a * b)));   // fails here, not on a photo
      if (model.accelerator === 'webgpu') {
        return { backend: 'webgpu', note: model.full ? 'the whole graph on WebGPU' : 'WebGPU, some ops on WASM', threads, ...model };
      }
      note = 'LiteRT.js could not put this graph on WebGPU and fell back';
      model.delete();
    } catch (err) {
      note = `WebGPU failed (${String(err.message ?? err).split('\n')[0].slice(0, 160)})`;
    }
  }
  if (prefer === 'webgpu') throw new Error(`WebGPU asked for (?backend=webgpu) but ${note}`);
  return { backend: 'wasm', note: `WASM (XNNPACK on the CPU): ${note}`, threads, ...(await openTensorApi(bytes, contract, 'wasm')) };
}

/** The documented path: loadAndCompile + Tensor. */
async function openTensorApi(bytes, contract, accelerator) {
  const compiled = await loadAndCompile(bytes, { accelerator });
  const input = compiled.getInputDetails()[0];
  const inputType = { float32: Float32Array, uint8: Uint8Array }[input.dtype];
  return {
    accelerator: compiled.options.accelerator,
    full: compiled.isFullyAccelerated,
    inputType,
    async run(x) {
      const tensor = new Tensor(x, contract.inputShape);
      try {
        const [out] = await compiled.run(tensor);
        const host = out.accelerator === 'wasm' ? out : await out.moveTo('wasm');
        try { return host.toTypedArray(); } finally { host.delete(); }
      } finally {
        tensor.delete();
      }
    },
    delete() { compiled.delete(); },
  };
}

/** int8 files: the same runtime, one level down (model, compiled model, host tensor buffers). */
async function openWasmBindings(bytes, contract) {
  const wasm = getGlobalLiteRt().liteRtWasm;
  const env = getDefaultEnvironment().liteRtEnvironment;
  const ptr = wasm._malloc(bytes.byteLength);
  wasm.HEAPU8.set(bytes, ptr);
  const model = wasm.loadModel(env, ptr, bytes.byteLength);
  const compiled = await wasm.compileModel(env, model, {
    accelerator: 'wasm', cpuOptions: { numThreads: wasm.getThreadCount() }, gpuOptions: {}, webNNOptions: {},
  });
  const inType = model.getInputTensorType(0, 0);
  const requirements = compiled.getInputBufferRequirements(0, 0);
  const buffer = wasm.LiteRtTensorBuffer.createManaged(env, wasm.LiteRtTensorBufferType.HOST_MEMORY, inType, inType.bytes());
  wasm.checkTensorBufferCompatible(buffer, inType, requirements);
  requirements.delete();
  inType.delete();
  const OutType = { int8: Int8Array, uint8: Uint8Array, float32: Float32Array }[contract.outputDtype];
  const { READ, WRITE } = wasm.LiteRtTensorBufferLockMode;
  return {
    async run(x) {
      const bytesIn = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
      if (bytesIn.length !== buffer.size()) throw new RangeError(`input of ${bytesIn.length} bytes, the model takes ${buffer.size()}`);
      wasm.HEAPU8.set(bytesIn, buffer.lock(WRITE));
      buffer.unlock();
      const outputs = await compiled.run(0, [buffer]);
      try {
        const out = outputs[0];
        const p = out.lock(READ);
        const copy = wasm.HEAPU8.slice(p, p + out.size());
        out.unlock();
        return new OutType(copy.buffer);
      } finally {
        for (const out of outputs) out.delete();
      }
    },
    delete() { buffer.delete(); compiled.delete(); model.delete(); wasm._free(ptr); },
  };
}
