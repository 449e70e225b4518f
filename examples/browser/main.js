// The page's UI. The work happens in worker.js (same bundle); this file only gathers the choices
// and shows what comes back. document.body.dataset.state is idle | running | done | error;
// dataset.stepsSeen and dataset.validSeen count the live training and validation loss updates,
// and window.webqloraRun holds this run's losses as numbers (test/browser/chromium.test.ts reads
// them).
import { DEMO_PROMPTS, lossCurveSvg, VERSION } from '../../dist/browser/webqlora.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = new URL('../../assets/stories260K.gguf', location.href).href;

for (const [param, id] of [['backend', 'backendChoice'], ['steps', 'steps'], ['batch', 'batch'], ['seqlen', 'seqLen'], ['lr', 'lr'], ['evalevery', 'evalEvery'], ['lorar', 'loraR'], ['loraalpha', 'loraAlpha']]) {
  if (params.has(param)) $(id).value = params.get(param);
}
for (const [param, id] of [['dora', 'dora'], ['packing', 'packing']]) {
  if (params.has(param)) $(id).checked = params.get(param) === '1';
}
$('prompts').value = DEMO_PROMPTS.join('\n');
document.title = `webqlora ${VERSION} — QLoRA fine-tuning in the browser`;

let worker = null;
let losses = [];
let validLosses = [];

const setState = (s) => {
  document.body.dataset.state = s;
  $('run').disabled = s === 'running';
  $('stop').style.display = s === 'running' ? '' : 'none';
};
const log = (line) => { $('log').textContent += line + '\n'; };
const showError = (message) => {
  $('error').textContent = `Error: ${message}`;
  setState('error');
};

/** Seconds as "42 s", "3 min 5 s", "1 h 2 min". */
function duration(s) {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - 60 * m)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const size = (bytes) => (bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`);

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

const drawChart = () => { $('chart').innerHTML = lossCurveSvg(losses, validLosses, 'training and validation loss'); };

function onMessage(ev) {
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
    case 'data':
      $('data-info').textContent = m.lines.join(' · ');
      for (const l of m.lines) log(l);
      break;
    case 'status':
      $('eta').textContent = m.text;
      break;
    case 'step': {
      losses.push({ step: m.step, loss: m.loss });
      document.body.dataset.stepsSeen = String(losses.length);
      $('loss').textContent = `step ${m.step}/${m.total} | loss ${m.loss.toFixed(4)} | grad norm ${m.gradNorm.toFixed(3)} | ${m.tokensPerS.toFixed(0)} tokens/s`;
      $('eta').textContent = m.step < m.total ? `${duration(m.elapsed)} elapsed, ETA ${duration(m.eta)}` : `${duration(m.elapsed)} elapsed`;
      drawChart();
      break;
    }
    case 'valid':
      validLosses.push({ step: m.step, loss: m.loss });
      document.body.dataset.validSeen = String(validLosses.length);
      $('valid-loss').textContent = `validation ${m.loss.toFixed(4)} at step ${m.step} (perplexity ${m.perplexity.toFixed(2)})`;
      drawChart();
      break;
    case 'done': {
      const res = $('results');
      res.replaceChildren();
      m.prompts.forEach((p, i) => {
        const h = document.createElement('h3');
        h.textContent = `Prompt “${p}”`;
        res.append(h, genBlock([['before', 'before', m.before[i]], ['after', 'after', m.after[i]]]));
      });
      if (m.noGenerationWhy) res.append(Object.assign(document.createElement('p'), { textContent: m.noGenerationWhy }));
      showDownloads(m.files);
      $('eta').textContent = `done in ${duration(m.seconds)}`;
      log(`loss ${m.firstLoss.toFixed(3)} → ${m.lastLoss.toFixed(3)} in ${losses.length} steps` +
        (validLosses.length ? `, validation ${validLosses[0].loss.toFixed(3)} → ${validLosses.at(-1).loss.toFixed(3)}` : '') + `, ${m.seconds.toFixed(1)} s`);
      $('try').style.display = m.canGenerate ? 'block' : 'none';
      setState('done');
      break;
    }
    case 'generated':
      $('tryOut').prepend(genBlock([['prompt', 'prompt', m.prompt], ['before', 'before', m.before], ['after', 'after', m.after]]));
      $('gen').disabled = false;
      break;
    case 'error':
      $('gen').disabled = false;
      if ($('backend').textContent === 'starting…') $('backend').textContent = 'did not start';
      showError(m.message);
      break;
  }
}

/** A fresh worker: at load, and after Stop (a step in WASM cannot be interrupted; the worker can). */
function startWorker() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = onMessage;
  worker.onerror = (e) => showError(`the worker failed to start: ${e.message || 'see the console'}`);
}
startWorker();

/**
 * The model as the worker takes it: the bundled default, one file (.gguf), or a set of files
 * keyed by their path in the folder (an HF model directory, picked as a folder or file by file).
 */
function modelChoice() {
  const dir = [...$('modelDir').files];
  if (dir.length) {
    // webkitRelativePath is "<folder>/<path inside it>"
    const top = (dir[0].webkitRelativePath || dir[0].name).split('/')[0];
    return { kind: 'files', name: top, files: dir.map((f) => ({ path: f.webkitRelativePath ? f.webkitRelativePath.split('/').slice(1).join('/') : f.name, file: f })) };
  }
  const picked = [...$('model').files];
  if (picked.length === 1 && !/\.(json|safetensors)$/i.test(picked[0].name)) return { kind: 'file', file: picked[0] };
  if (picked.length) return { kind: 'files', name: 'the picked model files', files: picked.map((f) => ({ path: f.name, file: f })) };
  return { kind: 'url', url: DEFAULT_MODEL };
}

function describeModelChoice() {
  const m = modelChoice();
  if (m.kind === 'url') return null;
  if (m.kind === 'file') return `${m.file.name} (${size(m.file.size)})`;
  const bytes = m.files.reduce((n, f) => n + f.file.size, 0);
  const top = m.files.filter((f) => !f.path.includes('/')).map((f) => f.path).sort();
  return `${m.name}: ${top.join(', ')} (${size(bytes)})`;
}

const DEFAULT_HINTS = Object.fromEntries(['modelName', 'tokenizerName', 'dataName', 'validName'].map((id) => [id, $(id).innerHTML]));
function showChoice(id, text) {
  if (text === null) {
    $(id).innerHTML = DEFAULT_HINTS[id];
    $(id).classList.remove('chosen');
  } else {
    $(id).textContent = text;
    $(id).classList.add('chosen');
  }
}
const fileList = (input) => [...input.files].map((f) => `${f.name} (${size(f.size)})`).join(', ') || null;

$('model').addEventListener('change', () => { $('modelDir').value = ''; showChoice('modelName', describeModelChoice()); });
$('modelDir').addEventListener('change', () => { $('model').value = ''; showChoice('modelName', describeModelChoice()); });
$('tokenizer').addEventListener('change', () => showChoice('tokenizerName', fileList($('tokenizer'))));
$('data').addEventListener('change', () => showChoice('dataName', fileList($('data'))));
$('valid').addEventListener('change', () => showChoice('validName', fileList($('valid'))));
$('reset').addEventListener('click', () => {
  for (const id of ['model', 'modelDir', 'tokenizer', 'data', 'valid']) $(id).value = '';
  for (const id of ['modelName', 'tokenizerName', 'dataName', 'validName']) showChoice(id, null);
  $('format').value = 'auto';
  $('prompts').value = DEMO_PROMPTS.join('\n');
});

const intField = (id, dflt, min) => Math.max(min, Math.floor(Number($(id).value) || dflt));

function run() {
  const lr = Number($('lr').value);
  const msg = {
    type: 'run',
    backend: $('backendChoice').value,
    model: modelChoice(),
    tokenizer: [...$('tokenizer').files],
    data: $('data').files[0] ?? null,
    valid: $('valid').files[0] ?? null,
    format: $('format').value,
    trainOnPrompt: $('trainOnPrompt').checked,
    steps: intField('steps', 80, 1),
    batchSize: intField('batch', 8, 1),
    seqLen: intField('seqLen', 256, 2),
    lr: Number.isFinite(lr) && lr >= 0 ? lr : 3e-3,
    evalEvery: intField('evalEvery', 10, 1),
    loraR: intField('loraR', 16, 1),
    loraAlpha: Number.isFinite(Number($('loraAlpha').value)) && Number($('loraAlpha').value) >= 0 ? Number($('loraAlpha').value) : 32,
    dora: $('dora').checked,
    packing: $('packing').checked,
    prompts: $('prompts').value.split('\n').map((p) => p.trim()).filter(Boolean),
  };
  losses = [];
  validLosses = [];
  window.webqloraRun = { losses, validLosses };
  document.body.dataset.stepsSeen = '0';
  document.body.dataset.validSeen = '0';
  for (const id of ['error', 'data-info', 'loss', 'valid-loss', 'eta', 'chart', 'results', 'downloads', 'tryOut']) $(id).replaceChildren();
  $('try').style.display = 'none';
  $('backend').textContent = 'starting…';
  $('backend').className = '';
  setState('running');
  worker.postMessage(msg);
}

$('run').addEventListener('click', run);
$('stop').addEventListener('click', () => {
  worker.terminate();
  startWorker();
  $('eta').textContent = `stopped after ${losses.length} steps (the adapter is lost with the worker)`;
  $('try').style.display = 'none';
  setState('idle');
});
$('gen').addEventListener('click', () => {
  $('gen').disabled = true;
  worker.postMessage({ type: 'generate', prompt: $('prompt').value });
});
if (params.get('autorun') === '1') run();
