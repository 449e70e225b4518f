// The demo page's UI. The work happens in worker.js (same bundle); this file only shows it.
// document.body.dataset.state is idle | running | done | error, and dataset.stepsSeen counts
// the live loss updates (test/browser/chromium.test.ts reads both).
import { lossCurveSvg, VERSION } from '../../dist/browser/webqlora.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = new URL('../../assets/stories260K.gguf', location.href).href;

if (params.has('backend')) $('backendChoice').value = params.get('backend');
if (params.has('steps')) $('steps').value = params.get('steps');
document.title = `webqlora ${VERSION} — QLoRA fine-tuning in the browser`;

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let losses = [];

const setState = (s) => { document.body.dataset.state = s; $('run').disabled = s === 'running'; };
const log = (line) => { $('log').textContent += line + '\n'; };
const showError = (message) => {
  $('error').textContent = `Error: ${message}`;
  setState('error');
};

function genBlock(rows) {
  const div = document.createElement('div');
  div.className = 'gen';
  for (const [tag, cls, text] of rows) {
    const t = document.createElement('span');
    t.className = 'tag';
    t.textContent = tag;
    const v = document.createElement('span');
    v.className = cls;
    v.textContent = text;
    div.append(t, v);
  }
  return div;
}

function showDownloads(files) {
  const box = $('downloads');
  box.replaceChildren(document.createTextNode('Trained adapter (PEFT format): '));
  for (const f of files) {
    const type = f.name.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([f.bytes], { type }));
    a.download = f.name;
    a.dataset.bytes = String(f.bytes.byteLength);
    a.textContent = `${f.name} (${(f.bytes.byteLength / 1024).toFixed(1)} KiB)`;
    box.append(a);
  }
  box.append(document.createTextNode(' — save both in one folder; PEFT loads it with PeftModel.from_pretrained(base_model, folder).'));
}

worker.onmessage = (ev) => {
  const m = ev.data;
  switch (m.type) {
    case 'env': {
      const gpu = !m.hasGpu ? 'no WebGPU in this browser' : m.adapter ? `WebGPU adapter: ${m.adapter.vendor || '?'} / ${m.adapter.architecture || '?'}` : `navigator.gpu present, no adapter${m.adapterError ? ` (${m.adapterError})` : ''}`;
      $('env').textContent = `webqlora ${m.version}; ${gpu}; ${m.crossOriginIsolated ? 'cross-origin isolated' : 'not cross-origin isolated (serve with COOP/COEP, see serve.mjs)'}`;
      break;
    }
    case 'backend':
      $('backend').textContent = m.text;
      $('backend').className = m.warn ? 'warn' : '';
      break;
    case 'log':
      log(m.line);
      break;
    case 'step': {
      losses.push({ step: m.step, loss: m.loss });
      document.body.dataset.stepsSeen = String(losses.length);
      $('loss').textContent = `step ${m.step}/${m.total} | loss ${m.loss.toFixed(4)} | grad norm ${m.gradNorm.toFixed(3)} | ${m.tokensPerS.toFixed(0)} tokens/s`;
      $('chart').innerHTML = lossCurveSvg(losses, [], 'training loss');
      break;
    }
    case 'done': {
      const res = $('results');
      res.replaceChildren();
      m.prompts.forEach((p, i) => {
        const h = document.createElement('h3');
        h.textContent = `Prompt “${p}”`;
        res.append(h, genBlock([['before', 'before', m.before[i]], ['after', 'after', m.after[i]]]));
      });
      showDownloads(m.files);
      log(`loss ${m.firstLoss.toFixed(3)} → ${m.lastLoss.toFixed(3)} in ${losses.length} steps, ${m.seconds.toFixed(1)} s`);
      $('try').style.display = 'block';
      setState('done');
      break;
    }
    case 'generated':
      $('tryOut').prepend(genBlock([['prompt', 'prompt', m.prompt], ['before', 'before', m.before], ['after', 'after', m.after]]));
      $('gen').disabled = false;
      break;
    case 'error':
      $('gen').disabled = false;
      showError(m.message);
      break;
  }
};
worker.onerror = (e) => showError(`the worker failed to start: ${e.message || 'see the console'}`);

$('model').addEventListener('change', () => {
  const f = $('model').files[0];
  $('modelName').textContent = f ? `${f.name} (${(f.size / 2 ** 20).toFixed(1)} MiB, read in slices, never whole)` : 'default: assets/stories260K.gguf';
});

function run() {
  const steps = Math.max(1, Math.floor(Number($('steps').value) || 80));
  losses = [];
  document.body.dataset.stepsSeen = '0';
  for (const id of ['error', 'loss', 'chart', 'results', 'downloads', 'tryOut']) $(id).replaceChildren();
  $('try').style.display = 'none';
  $('backend').textContent = 'starting…';
  setState('running');
  worker.postMessage({ type: 'run', modelUrl: DEFAULT_MODEL, modelFile: $('model').files[0] ?? null, backend: $('backendChoice').value, steps });
}

$('run').addEventListener('click', run);
$('gen').addEventListener('click', () => {
  $('gen').disabled = true;
  worker.postMessage({ type: 'generate', prompt: $('prompt').value });
});
if (params.get('autorun') === '1') run();
