// The page: load a .tflite and its contract, feed photos or camera frames through the contract,
// draw the blur map, time the inferences, benchmark. State for automation: window.dbdDemo.
import { ContractError, contractOf, decodeOutput, encodeInput, readTflite } from './contract.js';
import { resizeRgba } from './resize.js';
import { REFINE_DEFAULTS, describeRefine, refineMap } from './refine.js';
import { blurredFraction, drawOverlay } from './overlay.js';
import { median, summarize, timeRefine, timeRuns } from './bench.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = '../exports/dbd_student_320_int8.tflite';
const MAX_SIDE = 4096;          // larger photos are scaled down by the browser before anything else
const LATENCY_WINDOW = 20;
const KEEP_RESULTS = 8;         // photos that stay selectable (with their maps) in the list

const demo = window.dbdDemo = { state: 'loading', error: null, contract: null, backend: null, results: [], bench: null };
let engine = null, model = null, contract = null, modelInfo = null;
let current = null;             // {name, rgba, width, height, input, prob, map, ...} on screen
const latencies = [];
let busy = Promise.resolve();   // one inference at a time (camera, photos and benchmark share the model)

function runModel(x) {
  const run = busy.then(() => model.run(x));
  busy = run.catch(() => {});
  return run;
}

function fail(message) {
  demo.state = 'error';
  demo.error = message;
  $('error').textContent = message;
  $('error').style.display = 'block';
  $('photo-input').disabled = $('camera-button').disabled = $('bench-button').disabled = true;
}

// ---- the model ------------------------------------------------------------------------------

async function loadModel(bytes, name) {
  demo.state = 'loading';
  $('error').style.display = 'none';
  $('model-line').textContent = `loading ${name}…`;
  model?.delete();
  model = contract = null;
  let parsed;
  try {
    parsed = readTflite(bytes);
    contract = contractOf(parsed);
  } catch (err) {
    if (err instanceof ContractError) return fail(`Refused ${name}: ${err.message}.`);
    throw err;
  }
  const { meta } = parsed;
  model = await engine.openModel(bytes, contract, params.get('backend') ?? 'auto');
  modelInfo = {
    file: name, bytes: bytes.byteLength, arch: contract.model, precision: contract.precision,
    input: `${contract.inputDtype} [${contract.inputShape}] ${contract.layout}`, size: [contract.height, contract.width],
    normalization: meta.input.normalization, quantization: contract.inputQ, dbd_version: meta.dbd_version,
    source_sha256: meta.source_checkpoint?.sha256 ?? null, refine: contract.refine,
  };
  Object.assign(demo, { contract, backend: model.backend, backendNote: model.note, model: modelInfo, results: [] });
  $('model-line').textContent = `${name}: ${contract.model} ${contract.precision}, ${(bytes.byteLength / 1e6).toFixed(2)} MB, `
    + `input ${modelInfo.input} (${meta.input.normalization} normalisation${contract.inputQ ? `, q(${contract.inputQ.scale}, ${contract.inputQ.zero_point})` : ''}), `
    + `output P(blur) ${contract.outputDtype}, back to the photo by ${describeRefine(contract.refine)}; from the file's own dbd metadata`;
  $('backend-line').textContent = `Runs on ${model.backend.toUpperCase()} · ${model.note} · ${model.threads} thread(s)`;
  latencies.length = 0;
  $('photo-input').disabled = $('bench-button').disabled = false;
  $('camera-button').disabled = !navigator.mediaDevices?.getUserMedia;
  if ($('camera-button').disabled) $('camera-button').title = 'the camera needs a secure page (https:// or localhost)';
  demo.state = 'ready';
}

async function loadModelFromUrl(url) {
  const response = await fetch(url).catch((err) => ({ ok: false, statusText: err.message }));
  if (!response.ok) {
    return fail(`No model at ${url} (${response.status ?? ''} ${response.statusText}): export one with `
      + '`.venv/bin/dbd-export --format tflite` in the repository, or pick a .tflite file above.');
  }
  await loadModel(new Uint8Array(await response.arrayBuffer()), decodeURIComponent(url.split('/').pop()));
}

// ---- one image --------------------------------------------------------------------------------

/** The preprocessing contract, the model and the postprocessing on RGBA pixels. */
async function analyse(rgba, width, height) {
  const c = contract;
  const t0 = performance.now();
  const input = encodeInput(c, resizeRgba(rgba, width, height, c.width, c.height, c.pixelScale));
  const t1 = performance.now();
  const raw = await runModel(input);
  const t2 = performance.now();
  const prob = decodeOutput(c, raw);
  const map = refineMap(prob, c.width, c.height, rgba, width, height, c.refine);   // the contract's last step
  const t3 = performance.now();
  latencies.push(t2 - t1);
  if (latencies.length > LATENCY_WINDOW) latencies.shift();
  return { rgba, width, height, input, prob, map, inferenceMs: t2 - t1, preMs: t1 - t0, postMs: t3 - t2 };
}

function render() {
  if (!current) return;
  const threshold = Number($('threshold').value);
  const style = $('overlay-style').value;
  const canvas = $('view');
  if (canvas.width !== current.width || canvas.height !== current.height) {
    canvas.width = current.width;
    canvas.height = current.height;
  }
  const overlay = drawOverlay(style, current.rgba, current.map, threshold);
  canvas.getContext('2d').putImageData(new ImageData(overlay, current.width, current.height), 0, 0);
  current.fraction = blurredFraction(current.map, threshold);
  Object.assign(demo, { style, threshold, fraction: current.fraction });
  $('threshold-value').textContent = threshold.toFixed(2);
  $('fraction').textContent = `${(100 * current.fraction).toFixed(1)} %`;
  $('latency').textContent = `${median(latencies).toFixed(1)} ms`;
  $('latency-note').textContent = `(median of the last ${latencies.length} on ${model.backend.toUpperCase()}; `
    + `pre ${current.preMs.toFixed(0)} ms, ${contract.refine.method === 'none' ? 'resize back' : 'refinement'} ${current.postMs.toFixed(0)} ms)`;
  demo.latencyMedianMs = median(latencies);
}

function pixelsOf(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

async function openPhoto(file) {
  // Upright like the Python runtime (EXIF orientation applied), pixels as stored (no colour
  // management, as PIL reads them).
  const options = { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' };
  let bitmap = await createImageBitmap(file, options);
  let note = '';
  const side = Math.max(bitmap.width, bitmap.height);
  if (side > MAX_SIDE) {
    const k = MAX_SIDE / side;
    const [w, h] = [Math.round(bitmap.width * k), Math.round(bitmap.height * k)];
    note = ` (scaled down from ${bitmap.width}x${bitmap.height} by the browser)`;
    bitmap.close();
    bitmap = await createImageBitmap(file, { ...options, resizeWidth: w, resizeHeight: h, resizeQuality: 'high' });
  }
  const { width, height } = bitmap;
  const rgba = pixelsOf(bitmap, width, height);
  bitmap.close();
  return { rgba, width, height, note };
}

async function showPhotos(files) {
  for (const file of files) {
    try {
      const { rgba, width, height, note } = await openPhoto(file);
      current = { name: file.name + note, ...(await analyse(rgba, width, height)) };
    } catch (err) {
      $('error').textContent = `Could not read ${file.name}: ${err.message ?? err}`;
      $('error').style.display = 'block';
      continue;
    }
    demo.results.push(current);
    demo.processed = (demo.processed ?? 0) + 1;
    if (demo.results.length > KEEP_RESULTS) demo.results.shift();      // photos are large: keep the last few
    $('result-list').replaceChildren(...demo.results.map((r, i) => new Option(`${r.name} (${r.width}x${r.height})`, i)));
    $('result-list').value = demo.results.length - 1;
    $('result-list').hidden = demo.results.length < 2;
    render();
  }
}

// ---- camera -----------------------------------------------------------------------------------

let stream = null;

async function toggleCamera() {
  if (stream) {
    stream.getTracks().forEach((t) => t.stop());
    stream = null;
    $('camera-button').textContent = 'Start camera';
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment', width: { ideal: 640 }, height: { ideal: 480 } } });
  } catch (err) {
    $('error').textContent = `Camera unavailable: ${err.message}`;
    $('error').style.display = 'block';
    return;
  }
  const video = $('video');
  video.srcObject = stream;
  await video.play();
  $('camera-button').textContent = 'Stop camera';
  while (stream && model) {
    const { videoWidth: w, videoHeight: h } = video;
    if (w && h) {
      current = { name: `camera ${w}x${h}`, ...(await analyse(pixelsOf(video, w, h), w, h)) };
      render();
      demo.cameraFrames = (demo.cameraFrames ?? 0) + 1;
    }
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}

// ---- benchmark --------------------------------------------------------------------------------

function benchInput() {
  if (current) return current.input;
  // No photo yet: a fixed pseudo-random image (latency does not depend on the content).
  let seed = 12345;
  const rgba = new Uint8ClampedArray(contract.width * contract.height * 4).map(() => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
  return encodeInput(contract, resizeRgba(rgba, contract.width, contract.height, contract.width, contract.height, contract.pixelScale));
}

async function runBenchmark(runs, warmup) {
  $('bench-button').disabled = true;
  const input = benchInput();
  const onProgress = (s) => { $('bench-status').textContent = s; };
  const times = await timeRuns(() => runModel(input), { warmup, runs, onProgress });
  // The contract's last step at three photo sizes, on this thread: the file's refinement, or the
  // default guided filter when the file asks for a plain resize (its cost is then the resize's).
  const refineSpec = contract.refine.method === 'none' ? REFINE_DEFAULTS : contract.refine;
  const prob = new Float32Array(contract.width * contract.height).map((_, i) => ((i % contract.width) / contract.width));
  const refineRows = await timeRefine(
    (rgba, w, h) => refineMap(prob, contract.width, contract.height, rgba, w, h, refineSpec),
    { runs: Number(params.get('refine_runs') || 3), onProgress },
  );
  const core = await fetch(`${window.LITERT_CORE}package.json`).then((r) => r.json()).catch(() => ({}));
  const result = {
    tool: 'dbd web_demo benchmark', model: modelInfo, backend: model.backend, backend_note: model.note,
    threads: model.threads, litert_js: core.version ?? 'unknown', warmup, ...summarize(times),
    input: current ? current.name : 'synthetic', user_agent: navigator.userAgent,
    hardware_concurrency: navigator.hardwareConcurrency ?? null, device_memory_gb: navigator.deviceMemory ?? null,
    date: new Date().toISOString(), times_ms: times.map((t) => Math.round(t * 100) / 100),
    refine: { spec: refineSpec, of_this_file: refineSpec === contract.refine, sizes: refineRows },
  };
  demo.bench = result;
  const rows = [['backend', `${result.backend.toUpperCase()} (${result.threads} thread(s))`], ['median', `${result.median_ms} ms`],
    ['p90', `${result.p90_ms} ms`], ['FPS', result.fps], ['runs', `${warmup} warm-up + ${runs} timed`],
    ...refineRows.map((r) => [`refinement ${r.size}`, `${r.median_ms} ms (median of ${r.times_ms.length}; `
      + `${result.refine.of_this_file ? "this file's" : 'default; this file asks for bilinear'} ${describeRefine(refineSpec)})`]),
    ['device', result.user_agent]];
  $('bench-table').replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.append(Object.assign(document.createElement('td'), { textContent: k }), Object.assign(document.createElement('td'), { textContent: v }));
    return tr;
  }));
  $('bench-json').value = JSON.stringify(result, null, 1);
  $('bench-json').hidden = $('bench-copy').hidden = false;
  $('bench-status').textContent = 'done';
  $('bench-button').disabled = false;
}

async function copyJson() {
  const text = $('bench-json').value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    $('bench-json').select();
    document.execCommand('copy');           // pages served over plain http have no clipboard API
  }
  $('bench-status').textContent = 'JSON copied';
}

// ---- start ------------------------------------------------------------------------------------

async function start() {
  if (params.get('overlay')) $('overlay-style').value = params.get('overlay');
  if (params.get('threshold')) $('threshold').value = params.get('threshold');
  $('overlay-style').onchange = $('threshold').oninput = render;
  $('result-list').onchange = () => { current = demo.results[Number($('result-list').value)]; render(); };
  $('photo-input').onchange = (e) => showPhotos([...e.target.files]).finally(() => { e.target.value = ''; });
  $('camera-button').onclick = toggleCamera;
  $('bench-copy').onclick = copyJson;
  $('bench-button').onclick = () => runBenchmark(Number(params.get('bench') || 50), Number(params.get('warmup') || 10));
  $('model-input').onchange = async (e) => {
    const file = e.target.files[0];
    if (file) await loadModel(new Uint8Array(await file.arrayBuffer()), file.name).catch((err) => fail(`Could not run ${file.name}: ${err.message ?? err}`));
  };
  try {
    engine = await import('./engine.js');
    await engine.loadRuntime(`${window.LITERT_CORE}wasm/`);
  } catch (err) {
    return fail(`LiteRT.js did not load from ${window.LITERT_CORE} (${err.message ?? err}). Serving from the repository? `
      + 'Run `make web-tools` first (it installs @litertjs/core into .tools/web), or open the page with ?litert=cdn.');
  }
  try {
    await loadModelFromUrl(params.get('model') ?? DEFAULT_MODEL);
  } catch (err) {
    return fail(`Could not run the model: ${err.message ?? err}`);
  }
  if (demo.state === 'ready' && params.get('bench')) await runBenchmark(Number(params.get('bench')), Number(params.get('warmup') || 10));
}

start();
