// Latency statistics as dbd-bench computes them (numpy median and linear 90th percentile), and the
// in-browser benchmark: warm-up runs, then N timed runs of one input tensor.

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
