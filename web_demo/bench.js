// Latency statistics as dbd-bench computes them (numpy median and linear 90th percentile), and the
// in-browser benchmark: warm-up runs, then N timed runs of one input tensor; and the cost of the
// contract's last step (the refinement, refine.js) at three photo sizes.

/** numpy.percentile(values, q) with linear interpolation. */
export function percentile(values, q) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q / 100;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export const median = (values) => percentile(values, 50);

/** Runs `runOnce` (async) warmup + runs times; returns the timed runs' milliseconds. */
export async function timeRuns(runOnce, { warmup = 10, runs = 50, onProgress = () => {} } = {}) {
  for (let i = 0; i < warmup; i++) {
    await runOnce();
    onProgress(`warm-up ${i + 1}/${warmup}`);
  }
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await runOnce();
    times.push(performance.now() - start);
    if (i % 5 === 4) onProgress(`run ${i + 1}/${runs}`);
  }
  return times;
}

/** The benchmark's summary: median/p90/mean/min in ms and FPS (= 1000 / median, as dbd-bench). */
export function summarize(times) {
  const med = median(times);
  const round = (x) => Math.round(x * 100) / 100;
  return {
    runs: times.length,
    median_ms: round(med),
    p90_ms: round(percentile(times, 90)),
    mean_ms: round(times.reduce((a, b) => a + b, 0) / times.length),
    min_ms: round(Math.min(...times)),
    fps: round(1000 / med),
  };
}

/** The photo sizes (width, height) the benchmark times the refinement at: VGA-ish, 1080p, 12 MP. */
export const REFINE_SIZES = [[640, 427], [1920, 1080], [4000, 3000]];

/** A deterministic synthetic photo (RGBA bytes): smooth gradients with a sharp-edged square. */
export function syntheticPhoto(width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let y = 0, i = 0; y < height; y++) {
    for (let x = 0; x < width; x++, i += 4) {
      const inside = x > width / 4 && x < width / 2 && y > height / 4 && y < (3 * height) / 4;
      rgba[i] = (255 * x) / width;
      rgba[i + 1] = inside ? 230 : (255 * y) / height;
      rgba[i + 2] = ((x ^ y) & 63) * 4;
      rgba[i + 3] = 255;
    }
  }
  return rgba;
}

/**
 * The refinement's cost: `refineOnce(rgba, width, height)` (synchronous, on this thread, as the
 * page runs it) timed `runs` times at each size after one warm-up at the first; returns
 * [{size: 'WxH', width, height, median_ms, times_ms}]. Yields to the page between runs.
 */
export async function timeRefine(refineOnce, { sizes = REFINE_SIZES, runs = 3, onProgress = () => {} } = {}) {
  const rows = [];
  const pause = () => new Promise((resolve) => setTimeout(resolve, 0));
  for (const [k, [width, height]] of sizes.entries()) {
    let rgba = syntheticPhoto(width, height);
    if (k === 0) refineOnce(rgba, width, height);
    const times = [];
    for (let i = 0; i < runs; i++) {
      onProgress(`refinement ${width}x${height}: run ${i + 1}/${runs}`);
      await pause();
      const start = performance.now();
      refineOnce(rgba, width, height);
      times.push(performance.now() - start);
    }
    rgba = null;
    const round = (x) => Math.round(x * 100) / 100;
    rows.push({ size: `${width}x${height}`, width, height, median_ms: round(median(times)), times_ms: times.map(round) });
  }
  return rows;
}
