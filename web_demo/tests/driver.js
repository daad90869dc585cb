// Drives the page in headless Chromium for tests/test_web.py:  node driver.js JOB.json
// JOB: {playwright: path of playwright-core, chromium, url, photos: [file, ...], styles: ['tint', 'heat'],
//       benchButton: bool, camera: bool (Chromium's fake camera), screenshot: path, out: folder, timeoutMs,
//       refineSpecs: [refine objects]: each photo's model output also refined by the page's refine.js
//       with these settings (NAME.refineK.map)}
// Feeds the photos through the page's own file picker, reads back what the page computed (decoded
// pixels, input tensor, model-size map, photo-size map, overlays as drawn on the canvas, the text on
// screen, the benchmark JSON) into OUT, and writes OUT/result.json. Never downloads a browser.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { chromium } = createRequire(import.meta.url)(job.playwright);
const timeout = job.timeoutMs ?? 120000;
const out = job.out;
fs.mkdirSync(out, { recursive: true });
const log = [];

// A fresh profile folder per run (Playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(path.join(out, 'profile'), {
  executablePath: job.chromium,
  headless: true,
  viewport: { width: 1000, height: 1100 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    ...(job.camera ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] : [])],
});
const result = { console: log, results: [] };
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.setDefaultTimeout(timeout);     // every wait and action: a slow, loaded machine is not a failure
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  // Nothing leaves 127.0.0.1.
  await page.route((url) => !['127.0.0.1'].includes(url.hostname), (route) => { log.push(`blocked ${route.request().url()}`); route.abort(); });
  await page.goto(job.url, { timeout });
  const settled = () => window.dbdDemo && ['ready', 'error'].includes(window.dbdDemo.state)
    && (window.dbdDemo.state === 'error' || !new URLSearchParams(location.search).get('bench') || window.dbdDemo.bench);
  await page.waitForFunction(settled, null, { timeout });
  const state = () => page.evaluate(() => ({
    state: dbdDemo.state, error: dbdDemo.error, backend: dbdDemo.backend, backendNote: dbdDemo.backendNote, model: dbdDemo.model,
    screen: {
      error: document.getElementById('error').textContent, model: document.getElementById('model-line').textContent,
      backend: document.getElementById('backend-line').textContent, stats: document.getElementById('stats').textContent,
    },
  }));
  Object.assign(result, await state());
  if (result.state === 'ready') {
    result.urlBench = await page.evaluate(() => dbdDemo.bench);
    for (const photo of job.photos) {
      const before = await page.evaluate(() => dbdDemo.processed ?? 0);
      await page.setInputFiles('#photo-input', photo);
      await page.waitForFunction((n) => (dbdDemo.processed ?? 0) > n || document.getElementById('error').textContent, before, { timeout });
      if (await page.evaluate((n) => (dbdDemo.processed ?? 0) <= n, before)) {
        throw new Error(`the page did not process ${photo}: ${await page.textContent('#error')}`);
      }
      const name = path.basename(photo).replace(/\.[^.]+$/, '');
      const row = await page.evaluate(() => {
        const r = dbdDemo.results.at(-1);
        const b64 = (a) => {
          const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
          let s = '';
          for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          return btoa(s);
        };
        return { name: r.name, width: r.width, height: r.height, inferenceMs: r.inferenceMs, inputDtype: dbdDemo.contract.inputDtype,
          rgba: b64(r.rgba), input: b64(r.input), prob: b64(r.prob), map: b64(r.map) };
      });
      for (const key of ['rgba', 'input', 'prob', 'map']) {
        fs.writeFileSync(path.join(out, `${name}.${key}`), Buffer.from(row[key], 'base64'));
        row[key] = `${name}.${key}`;
      }
      row.refined = [];
      for (const [k, spec] of (job.refineSpecs ?? []).entries()) {
        const data = await page.evaluate(async (s) => {
          const { refineMap } = await import(new URL('refine.js', location.href).href);
          const r = dbdDemo.results.at(-1), c = dbdDemo.contract;
          const map = refineMap(r.prob, c.width, c.height, r.rgba, r.width, r.height, s);
          const bytes = new Uint8Array(map.buffer);
          let text = '';
          for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          return btoa(text);
        }, spec);
        fs.writeFileSync(path.join(out, `${name}.refine${k}.map`), Buffer.from(data, 'base64'));
        row.refined.push({ spec, map: `${name}.refine${k}.map` });
      }
      row.overlays = {};
      for (const style of job.styles ?? []) {
        await page.selectOption('#overlay-style', style);
        const drawn = await page.evaluate(() => {
          const c = document.getElementById('view');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let s = '';
          for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode(...d.subarray(i, i + 0x8000));
          return { data: btoa(s), threshold: dbdDemo.threshold, fraction: dbdDemo.fraction, stats: document.getElementById('stats').textContent };
        });
        fs.writeFileSync(path.join(out, `${name}.${style}.rgba`), Buffer.from(drawn.data, 'base64'));
        row.overlays[style] = { file: `${name}.${style}.rgba`, threshold: drawn.threshold, fraction: drawn.fraction, stats: drawn.stats };
      }
      result.results.push(row);
    }
    if (job.benchButton) {
      await page.evaluate(() => { dbdDemo.bench = null; });
      await page.click('#bench-button');
      await page.waitForFunction(() => dbdDemo.bench, null, { timeout });
      result.buttonBench = JSON.parse(await page.inputValue('#bench-json'));
    }
    if (job.camera) {
      await page.click('#camera-button');
      await page.waitForFunction(() => dbdDemo.cameraFrames >= 3 || document.getElementById('error').textContent, null, { timeout });
      result.camera = await page.evaluate(() => ({
        frames: dbdDemo.cameraFrames, error: document.getElementById('error').textContent,
        stats: document.getElementById('stats').textContent, button: document.getElementById('camera-button').textContent,
        canvas: [document.getElementById('view').width, document.getElementById('view').height],
      }));
      await page.click('#camera-button');
    }
    Object.assign(result, await state());
  }
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
} catch (err) {
  result.driverError = String(err.stack ?? err);
} finally {
  await browser.close();
  fs.writeFileSync(path.join(out, 'result.json'), JSON.stringify(result, null, 1));
}
