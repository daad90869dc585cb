// The model's contract, read from the .tflite itself: the "dbd" JSON document dbd-export embeds in
// the flatbuffer's Model.metadata (dbd.runtime.metadata.read_metadata), checked against the
// graph's own input/output tensors; then the tensor encoding and decoding it prescribes
// (encode_input / decode_output), in float32 arithmetic like numpy's, and the refinement that
// brings the map back to the photo (preprocess.refine, refine.js).

import { BILINEAR, REFINE_DEFAULTS } from './refine.js';

export class ContractError extends Error {}

const METADATA_FORMAT = 'dbd-export/1';
const REQUIRED = ['format', 'model', 'file', 'input', 'output', 'preprocess', 'source_checkpoint'];
const REQUIRED_INPUT = ['name', 'shape', 'layout', 'dtype', 'color_order', 'size', 'normalization', 'mean', 'std',
  'pixel_scale', 'quantization'];
const REQUIRED_OUTPUT = ['name', 'shape', 'layout', 'dtype', 'quantization', 'meaning'];
// schema.fbs TensorType values the page can feed.
const TENSOR_TYPES = { 0: 'float32', 3: 'uint8', 9: 'int8' };
const TYPED = { float32: Float32Array, uint8: Uint8Array, int8: Int8Array };
const RANGE = { uint8: [0, 255], int8: [-128, 127] };

// ---- flatbuffers: just enough of schema.fbs (Model, SubGraph, Tensor, Buffer, Metadata) --------

class Flatbuffer {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u32(pos) { this.check(pos, 4); return this.view.getUint32(pos, true); }
  check(pos, n) { if (pos < 0 || pos + n > this.bytes.length) throw new RangeError('offset past the end'); }
  table(pos) { return pos + this.u32(pos); }
  /** Absolute position of field `index` of the table at `table`, or null when absent. */
  field(table, index) {
    this.check(table, 4);
    const vtable = table - this.view.getInt32(table, true);
    this.check(vtable, 4);
    const size = this.view.getUint16(vtable, true);
    if (4 + 2 * index >= size) return null;
    const offset = this.view.getUint16(vtable + 4 + 2 * index, true);
    return offset ? table + offset : null;
  }
  /** [start, length] of a vector field ([0, 0] when absent). */
  vector(table, index) {
    const pos = this.field(table, index);
    if (pos === null) return [0, 0];
    const vec = pos + this.u32(pos);
    return [vec + 4, this.u32(vec)];
  }
  string(table, index) {
    const [start, length] = this.vector(table, index);
    this.check(start, length);
    return new TextDecoder().decode(this.bytes.subarray(start, start + length));
  }
  tableAt(vectorStart, i) { return this.table(vectorStart + 4 * i); }
  scalar(table, index, read, fallback) { const pos = this.field(table, index); return pos === null ? fallback : read(pos); }
}

function tensorInfo(fb, tensors, index) {
  const t = fb.tableAt(tensors, index);
  const [shapeStart, rank] = fb.vector(t, 0);
  const shape = Array.from({ length: rank }, (_, i) => fb.view.getInt32(shapeStart + 4 * i, true));
  const type = fb.scalar(t, 1, (p) => fb.view.getInt8(p), 0);
  const info = { name: fb.string(t, 3), shape, dtype: TENSOR_TYPES[type] ?? `TensorType ${type}`, quantization: null };
  const q = fb.field(t, 4);
  if (q !== null) {
    const qt = fb.table(q);
    const [scales, nScale] = fb.vector(qt, 2);
    const [zeros, nZero] = fb.vector(qt, 3);
    if (nScale === 1 && nZero === 1) {
      info.quantization = { scale: fb.view.getFloat32(scales, true), zero_point: Number(fb.view.getBigInt64(zeros, true)) };
    }
  }
  return info;
}

/**
 * Everything the page needs from a .tflite file's bytes: the "dbd" metadata document and the
 * graph's input and output tensors (name, shape, dtype, quantisation). Throws ContractError with
 * the reason a file cannot be used.
 */
export function readTflite(bytes) {
  if (bytes.length < 8 || new TextDecoder().decode(bytes.subarray(4, 8)) !== 'TFL3') {
    throw new ContractError('not a TFLite model (no TFL3 flatbuffer identifier): pick a .tflite written by dbd-export');
  }
  const fb = new Flatbuffer(bytes);
  try {
    const model = fb.table(0);
    const [subgraphs, nSub] = fb.vector(model, 2);
    const [buffers, nBuf] = fb.vector(model, 4);
    const [metadata, nMeta] = fb.vector(model, 6);
    let text = null;
    for (let i = 0; i < nMeta && text === null; i++) {
      const entry = fb.tableAt(metadata, i);
      if (fb.string(entry, 0) !== 'dbd') continue;
      const index = fb.scalar(entry, 1, (p) => fb.u32(p), 0);
      if (index >= nBuf) throw new RangeError('metadata buffer index out of range');
      const buffer = fb.tableAt(buffers, index);
      const [start, length] = fb.vector(buffer, 0);
      if (length) {
        fb.check(start, length);
        text = new TextDecoder().decode(bytes.subarray(start, start + length));
      } else {                      // large models keep buffers after the flatbuffer: offset / size
        const offset = fb.scalar(buffer, 1, (p) => Number(fb.view.getBigUint64(p, true)), 0);
        const size = fb.scalar(buffer, 2, (p) => Number(fb.view.getBigUint64(p, true)), 0);
        if (offset <= 1 || offset + size > bytes.length) throw new RangeError('empty metadata buffer');
        text = new TextDecoder().decode(bytes.subarray(offset, offset + size));
      }
    }
    if (text === null) {
      throw new ContractError("this file has no 'dbd' metadata: it was not written by dbd-export, so its input size, "
        + 'normalisation, quantisation and output meaning are unknown (export the model with dbd-export)');
    }
    let doc;
    try { doc = JSON.parse(text); } catch { throw new ContractError("the file's 'dbd' metadata is not JSON; re-export it"); }
    if (nSub !== 1) throw new ContractError(`the graph has ${nSub} subgraphs; dbd files have one`);
    const graph = fb.tableAt(subgraphs, 0);
    const [tensors] = fb.vector(graph, 0);
    const [inputs, nIn] = fb.vector(graph, 1);
    const [outputs, nOut] = fb.vector(graph, 2);
    if (nIn !== 1 || nOut !== 1) throw new ContractError(`the graph has ${nIn} inputs and ${nOut} outputs; the page feeds one image and reads one map`);
    return {
      meta: doc,
      input: tensorInfo(fb, tensors, fb.u32(inputs)),
      output: tensorInfo(fb, tensors, fb.u32(outputs)),
    };
  } catch (err) {
    if (err instanceof ContractError) throw err;
    throw new ContractError(`the file is truncated or not a valid .tflite (${err.message}); re-export it with dbd-export`);
  }
}

// ---- the contract -----------------------------------------------------------------------------

// preprocess.refine (dbd.runtime.refine.RefineSpec): the last step, map -> photo's resolution.
// Keys left out take RefineSpec's defaults; no `refine` at all (files exported before it existed)
// means a plain bilinear resize.
const REFINE_CHECKS = {
  method: [(v) => ['guided', 'none'].includes(v), 'one of guided, none'],
  guide: [(v) => v === 'rgb', 'one of rgb'],
  radius: [(v) => isReal(v) && v > 0 && v <= 1, "a fraction of the map's shorter side in (0, 1]"],
  eps: [(v) => isReal(v) && v > 0 && v <= 10, 'a positive number up to 10'],
  clip: [(v) => isReal(v) && v > 0 && v < 0.5, 'a probability in (0, 0.5)'],
  grid: [(v) => Number.isInteger(v) && (v === 0 || (v >= 8 && v <= 65536)), '0 or 8..65536'],
  max_side: [(v) => Number.isInteger(v) && (v === 0 || (v >= 16 && v <= 65536)), '0 or 16..65536'],
};
const isReal = (v) => typeof v === 'number' && Number.isFinite(v);

/** The `refine` object of a preprocess document, validated, with defaults filled in. */
export function refineOf(pre) {
  if (!pre || !('refine' in pre)) return { ...BILINEAR };
  const r = pre.refine;
  if (!r || typeof r !== 'object' || Array.isArray(r)) {
    throw new ContractError(`the 'dbd' metadata's preprocess.refine is ${JSON.stringify(r)}, not a JSON object; re-export it`);
  }
  const unknown = Object.keys(r).filter((k) => !(k in REFINE_CHECKS)).sort();
  if (unknown.length) {
    throw new ContractError(`the 'dbd' metadata's preprocess.refine has unknown keys ${unknown.join(', ')}: `
      + 'it was written by a newer dbd than this page');
  }
  const spec = { ...REFINE_DEFAULTS, ...r };
  for (const [key, [ok, expected]] of Object.entries(REFINE_CHECKS)) {
    if (!ok(spec[key])) {
      throw new ContractError(`the 'dbd' metadata's preprocess.refine.${key} = ${JSON.stringify(spec[key])} is not valid; `
        + `expected ${expected}`);
    }
  }
  return spec;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const qText = (q) => (q ? `(${q.scale}, ${q.zero_point})` : 'none');
const closeQ = (a, b) => (!a && !b) || (a && b && a.zero_point === b.zero_point
  && Math.abs(a.scale - b.scale) <= 1e-6 * Math.abs(b.scale));

/**
 * The contract the page applies, from the metadata; refuses metadata that is incomplete, asks for
 * something the page does not do, or disagrees with the graph's tensors (shape, dtype, quantisation).
 */
export function contractOf({ meta, input, output }) {
  if (!meta || typeof meta !== 'object' || meta.format !== METADATA_FORMAT) {
    throw new ContractError(`the 'dbd' metadata has format ${JSON.stringify(meta?.format)}; this page reads '${METADATA_FORMAT}'`);
  }
  const missing = [...REQUIRED.filter((k) => !(k in meta)),
    ...REQUIRED_INPUT.filter((k) => !(k in (meta.input ?? {}))).map((k) => `input.${k}`),
    ...REQUIRED_OUTPUT.filter((k) => !(k in (meta.output ?? {}))).map((k) => `output.${k}`)];
  if (missing.length) throw new ContractError(`the 'dbd' metadata is incomplete (missing ${missing.slice(0, 3).join(', ')}); re-export it`);
  const mi = meta.input, mo = meta.output, pre = meta.preprocess;
  const refuse = (what) => { throw new ContractError(`${what}: the page cannot feed this file as it asks`); };
  if (mi.color_order !== 'RGB') refuse(`colour order ${mi.color_order}`);
  if (pre.resize !== 'bilinear') refuse(`resize '${pre.resize}'`);
  if (!['NHWC', 'NCHW'].includes(mi.layout)) refuse(`input layout ${mi.layout}`);
  if (!['folded', 'external'].includes(mi.normalization)) refuse(`normalisation '${mi.normalization}'`);
  if (!TYPED[mi.dtype] || !TYPED[mo.dtype]) refuse(`dtypes ${mi.dtype} -> ${mo.dtype}`);
  if (mo.meaning !== 'blur_probability') refuse(`output meaning '${mo.meaning}'`);
  const [h, w] = mi.size;
  if (!same(pre.input_size, mi.size)) refuse(`preprocess size ${JSON.stringify(pre.input_size)} vs input size ${JSON.stringify(mi.size)}`);
  const inShape = mi.layout === 'NHWC' ? [1, h, w, 3] : [1, 3, h, w];
  const outShape = mo.layout === 'NCHW' ? [1, 1, h, w] : [1, h, w, 1];
  const mismatch = (what, declared, actual) => {
    throw new ContractError(`the metadata says ${what} ${declared} but the graph's tensor has ${actual}: `
      + 'the file was altered after export; re-export it with dbd-export');
  };
  if (!same(mi.shape, inShape)) mismatch('input shape', JSON.stringify(mi.shape), `size ${h}x${w} ${mi.layout}`);
  if (!same(input.shape, inShape)) mismatch('input shape', JSON.stringify(inShape), JSON.stringify(input.shape));
  if (!same(output.shape, outShape) || !same(mo.shape, outShape)) mismatch('output shape', JSON.stringify(mo.shape), JSON.stringify(output.shape));
  if (input.dtype !== mi.dtype) mismatch('input dtype', mi.dtype, input.dtype);
  if (output.dtype !== mo.dtype) mismatch('output dtype', mo.dtype, output.dtype);
  if (!closeQ(mi.quantization, input.quantization)) mismatch('input quantization', qText(mi.quantization), qText(input.quantization));
  if (!closeQ(mo.quantization, output.quantization)) mismatch('output quantization', qText(mo.quantization), qText(output.quantization));
  const refine = refineOf(pre);
  return {
    refine, height: h, width: w, inputShape: inShape, outputShape: outShape, layout: mi.layout, outputLayout: mo.layout,
    inputDtype: mi.dtype, outputDtype: mo.dtype, folded: mi.normalization === 'folded',
    pixelScale: mi.pixel_scale, mean: mi.mean, std: mi.std,
    inputQ: mi.quantization, outputQ: mo.quantization, blurValue: mo.blur_value ?? 1,
    model: meta.model?.arch ?? 'model', precision: meta.file?.precision ?? mi.dtype,
    inputName: input.name, outputName: output.name,
  };
}

/** numpy.round / cvRound on a float: nearest integer, ties to even. */
export function rint(x) {
  const f = Math.floor(x), d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * encode_input: RGB float32 in [0, 1] at the model size (H * W * 3, interleaved) -> the input
 * tensor's typed array in the file's layout and dtype.
 */
export function encodeInput(c, unitRgb) {
  const { height: h, width: w } = c;
  if (unitRgb.length !== h * w * 3) throw new RangeError(`expected ${w}x${h} RGB values, got ${unitRgb.length}`);
  const out = new TYPED[c.inputDtype](h * w * 3);
  const f = Math.fround;
  const scale = f(c.pixelScale), mean = c.mean.map(f), std = c.std.map(f);
  const q = c.inputQ, range = RANGE[c.inputDtype];
  const qScale = q ? f(q.scale) : 1, qZero = q ? q.zero_point : 0;
  for (let i = 0; i < h * w; i++) {
    for (let ch = 0; ch < 3; ch++) {
      const x = unitRgb[3 * i + ch];
      let v = c.folded ? f(x * scale) : f(f(x - mean[ch]) / std[ch]);
      if (q) v = Math.min(range[1], Math.max(range[0], rint(f(f(v / qScale) + qZero))));
      out[c.layout === 'NHWC' ? 3 * i + ch : ch * h * w + i] = v;
    }
  }
  return out;
}

/** decode_output: the raw output typed array -> float32 P(blur) at the model size (H * W). */
export function decodeOutput(c, raw) {
  const n = c.height * c.width;
  if (raw.length !== n) throw new RangeError(`expected ${n} output values, got ${raw.length}`);
  const f = Math.fround, q = c.outputQ;
  const scale = q ? f(q.scale) : 1, zero = q ? q.zero_point : 0;
  const prob = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = q ? f(f(raw[i] - zero) * scale) : raw[i];
    prob[i] = c.blurValue === 1 ? p : f(1 - p);
  }
  return prob;
}

export const typedArrayFor = (dtype) => TYPED[dtype];
