// samjax annotate: the page. Plain JavaScript, no build step, nothing loaded from other sites.
// Layers (all at the image's own resolution, zoomed and panned together by one CSS transform):
//   #image-layer the image, #overlay-layer accepted masks, #live-layer the current candidate, #prompt-layer
//   points and box (SVG). Masks arrive from the server as uncompressed RLE (decode) or COCO RLE strings (the
//   SA-1B document); with --browser-decode they are decoded here by onnxruntime-web from the image embedding.
"use strict";

const S = {
  token: null, config: null, images: [], current: null, doc: null, version: 0, w: 0, h: 0,
  prompt: { points: [], labels: [], box: null }, history: [], candidates: null, cand: 0,
  selected: null, replaces: null, overlay: true, acceptedHere: [], view: { z: 1, tx: 0, ty: 0 },
  decodeSeq: 0, decodeBusy: false, decodeAgain: false, decodes: 0, overlayMap: null, ort: null,
  prefillTimer: null, space: false,
};
window.samjaxState = S; // for tests and the curious

const $ = (id) => document.getElementById(id);
const viewport = $("viewport"), world = $("world");
const imageLayer = $("image-layer"), overlayLayer = $("overlay-layer"), liveLayer = $("live-layer");
const promptLayer = $("prompt-layer");

// ------------------------------------------------------------------------------------------------ server
function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (S.token) headers["X-Token"] = S.token;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
  }
  return fetch(path, { method: opts.method || "GET", headers, body: opts.body });
}

async function apiJSON(path, opts) {
  const r = await api(path, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { detail: r.statusText }; }
  if (!r.ok) {
    const err = new Error(detailText(body.detail) || r.statusText);
    err.status = r.status; err.body = body;
    throw err;
  }
  return body;
}

function detailText(d) {
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => (e.loc ? e.loc.join(".") + ": " : "") + e.msg).join("; ");
  return d ? JSON.stringify(d) : "";
}

const imagePath = (id) => "/api/images/" + encodeURIComponent(id);

function status(text) { $("status").textContent = text; }

function warn(text) {
  $("warning-text").textContent = text;
  $("warning").hidden = false;
}

// ------------------------------------------------------------------------------------------------- masks
// Uncompressed RLE (column-major runs, zeros first) -> Uint8Array (H*W, row-major), 1 inside.
function rleToMask(counts, h, w) {
  const m = new Uint8Array(h * w);
  let p = 0, v = 0;
  for (const n of counts) {
    if (v) {
      for (let q = p; q < p + n; q++) m[(q % h) * w + Math.floor(q / h)] = 1;
    }
    p += n; v ^= 1;
  }
  return m;
}

// COCO compressed RLE string -> run lengths (pycocotools' rleFrString, in exact arithmetic).
function cocoCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * Math.pow(32, k);
      more = (c & 0x20) !== 0; p++; k++;
      if (!more && (c & 0x10)) x -= Math.pow(32, k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function color(id) { // a stable, well-spread hue per mask id
  const hue = (id * 137.508) % 360;
  const c = (1 - Math.abs(2 * 0.55 - 1)) * 0.75, x = c * (1 - Math.abs(((hue / 60) % 2) - 1)), m = 0.55 - c / 2;
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x]
    : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  return [Math.round((r + m) * 255), Math.round((g + m) * 255), Math.round((b + m) * 255)];
}

function drawOverlay() {
  const ctx = overlayLayer.getContext("2d");
  ctx.clearRect(0, 0, S.w, S.h);
  S.overlayMap = new Int32Array(S.w * S.h).fill(-1);
  if (!S.doc) return;
  const img = ctx.createImageData(S.w, S.h), d = img.data;
  S.doc.annotations.forEach((a, i) => {
    const [h, w] = a.segmentation.size;
    if (h !== S.h || w !== S.w) return;
    // the mask within its box (bbox is the inclusive extent, XYWH), then fill + outline
    const x0 = Math.max(0, a.bbox[0]), y0 = Math.max(0, a.bbox[1]);
    const bw = Math.min(w - x0, a.bbox[2] + 1), bh = Math.min(h - y0, a.bbox[3] + 1);
    const local = new Uint8Array(bw * bh);
    let p = 0, v = 0;
    for (const n of cocoCounts(a.segmentation.counts)) {
      if (v) {
        for (let q = p; q < p + n; q++) {
          const x = Math.floor(q / h) - x0, y = (q % h) - y0;
          if (x >= 0 && y >= 0 && x < bw && y < bh) local[y * bw + x] = 1;
        }
      }
      p += n; v ^= 1;
    }
    const [r, g, b] = color(a.id);
    const model = a.source === "model", sel = a.id === S.selected;
    const at = (x, y) => x >= 0 && y >= 0 && x < bw && y < bh && local[y * bw + x] === 1;
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) {
        if (!local[y * bw + x]) continue;
        const k = (y + y0) * w + (x + x0);
        S.overlayMap[k] = i;
        const edge = !(at(x - 1, y) && at(x + 1, y) && at(x, y - 1) && at(x, y + 1));
        // people's masks solid, the model's hatched; every outline drawn, the selected mask's in white
        const stripe = ((x + x0 + y + y0) % 8) < 3;
        const alpha = edge ? 255 : sel ? 190 : model ? (stripe ? 170 : 45) : 120;
        const white = edge && sel;
        d[4 * k] = white ? 255 : r; d[4 * k + 1] = white ? 255 : g; d[4 * k + 2] = white ? 255 : b;
        d[4 * k + 3] = alpha;
      }
    }
  });
  ctx.putImageData(img, 0, 0);
  overlayLayer.style.visibility = S.overlay ? "visible" : "hidden";
}

function drawLive() {
  const ctx = liveLayer.getContext("2d");
  ctx.clearRect(0, 0, S.w, S.h);
  if (!S.candidates) { liveLayer.dataset.area = "0"; return; }
  const mask = S.candidates.masks[S.cand];
  const img = ctx.createImageData(S.w, S.h), d = img.data;
  let area = 0;
  for (let k = 0; k < mask.length; k++) {
    if (mask[k]) { d[4 * k] = 255; d[4 * k + 1] = 64; d[4 * k + 2] = 32; d[4 * k + 3] = 150; area++; }
  }
  ctx.putImageData(img, 0, 0);
  liveLayer.dataset.area = String(area);
}

function drawPrompt() {
  const z = S.view.z, r = 5 / z, sw = 1.5 / z;
  let s = "";
  const b = S.prompt.box;
  if (b) {
    s += `<rect x="${b[0]}" y="${b[1]}" width="${b[2] - b[0]}" height="${b[3] - b[1]}" fill="none" ` +
      `stroke="#ffb13b" stroke-width="${2 / z}" stroke-dasharray="${6 / z} ${4 / z}"/>`;
  }
  S.prompt.points.forEach(([x, y], i) => {
    const fg = S.prompt.labels[i] === 1;
    s += `<circle cx="${x}" cy="${y}" r="${r}" fill="${fg ? "#2ecc71" : "#e74c3c"}" stroke="#fff" stroke-width="${sw}"/>`;
  });
  if (S.drag && S.drag.box) {
    const [x0, y0, x1, y1] = S.drag.box;
    s += `<rect x="${Math.min(x0, x1)}" y="${Math.min(y0, y1)}" width="${Math.abs(x1 - x0)}" ` +
      `height="${Math.abs(y1 - y0)}" fill="none" stroke="#fff" stroke-width="${sw}" stroke-dasharray="${4 / z}"/>`;
  }
  promptLayer.innerHTML = s;
}

function renderCandidates() {
  const el = $("candidates");
  el.innerHTML = "";
  if (!S.candidates) { el.innerHTML = '<span class="muted">click the image</span>'; return; }
  S.candidates.scores.forEach((sc, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1}: ${sc.toFixed(3)}`;
    b.title = `candidate ${i + 1}, predicted IoU ${sc.toFixed(3)}, ${S.candidates.areas[i]} px`;
    b.className = i === S.cand ? "selected" : "";
    b.onclick = () => chooseCandidate(i);
    el.appendChild(b);
  });
}

function renderMasks() {
  const ul = $("masks");
  ul.innerHTML = "";
  const anns = S.doc ? S.doc.annotations : [];
  $("mask-count").textContent = anns.length ? `(${anns.length})` : "";
  for (const a of anns) {
    const li = document.createElement("li");
    const [r, g, b] = color(a.id);
    const who = a.source === "model" ? "model" : "person";
    li.innerHTML = `<span class="swatch" style="background:rgb(${r},${g},${b})"></span>` +
      `<span class="badge ${who}">${who === "model" ? "M" : "P"}</span>` +
      `<span>#${a.id} ${who === "model" ? "model" : escapeHtml(a.annotator || "person")}` +
      `${a.edited_from ? " (edited)" : ""}</span><span class="muted">${a.predicted_iou.toFixed(2)}</span>`;
    li.title = `${a.area} px, predicted IoU ${a.predicted_iou.toFixed(3)}, stability ${a.stability_score.toFixed(3)}` +
      (a.model ? `, model ${a.model}` : "");
    li.dataset.id = a.id;
    li.dataset.source = who;
    if (a.id === S.selected) li.className = "selected";
    li.onclick = () => select(a.id === S.selected ? null : a.id);
    ul.appendChild(li);
  }
  $("done").checked = !!(S.doc && S.doc.samjax && S.doc.samjax.done);
  $("editing").hidden = S.replaces === null;
  $("editing").textContent = S.replaces === null ? "" : `editing mask #${S.replaces}: accept replaces it`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function renderImages() {
  const ul = $("images");
  ul.innerHTML = "";
  let done = 0, masks = 0;
  for (const im of S.images) {
    done += im.done ? 1 : 0; masks += im.masks;
    const li = document.createElement("li");
    li.className = (im.id === S.current ? "current " : "") + (im.done ? "done" : "");
    li.dataset.id = im.id;
    li.innerHTML = `<span class="name"></span><span class="count">${im.masks}` +
      `${im.model_masks ? ` (${im.model_masks} M)` : ""}</span>`;
    li.querySelector(".name").textContent = im.id;
    li.title = `${im.width}x${im.height}, ${im.person_masks} by people, ${im.model_masks} by the model`;
    li.onclick = () => openImage(im.id);
    ul.appendChild(li);
  }
  $("progress").textContent = `${done} / ${S.images.length} images done, ${masks} masks`;
}

// -------------------------------------------------------------------------------------------------- view
function applyView() {
  const { z, tx, ty } = S.view;
  world.style.transform = `translate(${tx}px, ${ty}px) scale(${z})`;
  drawPrompt();
}

function fit() {
  if (!S.w) return;
  const vw = viewport.clientWidth, vh = viewport.clientHeight;
  const z = Math.min(vw / S.w, vh / S.h) * 0.96;
  S.view = { z, tx: (vw - S.w * z) / 2, ty: (vh - S.h * z) / 2 };
  applyView();
}

function actualSize() {
  const vw = viewport.clientWidth, vh = viewport.clientHeight;
  S.view = { z: 1, tx: Math.round((vw - S.w) / 2), ty: Math.round((vh - S.h) / 2) };
  applyView();
}

function zoomAt(factor, cx, cy) {
  const { z, tx, ty } = S.view;
  const nz = Math.min(64, Math.max(0.05, z * factor));
  S.view = { z: nz, tx: cx - (cx - tx) * (nz / z), ty: cy - (cy - ty) * (nz / z) };
  applyView();
}

function toImage(e) {
  const r = viewport.getBoundingClientRect();
  const x = (e.clientX - r.left - S.view.tx) / S.view.z, y = (e.clientY - r.top - S.view.ty) / S.view.z;
  return [Math.min(S.w, Math.max(0, x)), Math.min(S.h, Math.max(0, y)), x >= 0 && y >= 0 && x <= S.w && y <= S.h];
}

// ------------------------------------------------------------------------------------------------ prompt
function snapshot() {
  return { points: S.prompt.points.slice(), labels: S.prompt.labels.slice(), box: S.prompt.box && S.prompt.box.slice() };
}

function changePrompt(mutate) {
  S.history.push(snapshot());
  mutate(S.prompt);
  promptChanged();
}

function promptChanged() {
  drawPrompt();
  if (!S.prompt.points.length && !S.prompt.box) {
    S.candidates = null; S.decodeSeq++;
    drawLive(); renderCandidates();
    return;
  }
  requestDecode();
}

function clearPrompt() {
  S.prompt = { points: [], labels: [], box: null };
  S.history = []; S.replaces = null;
  promptChanged(); renderMasks();
}

async function requestDecode() {
  if (S.decodeBusy) { S.decodeAgain = true; return; }
  S.decodeBusy = true;
  try {
    do {
      S.decodeAgain = false;
      await decodeOnce();
    } while (S.decodeAgain);
  } finally {
    S.decodeBusy = false;
  }
  if (S.acceptPending) { S.acceptPending = false; accept(); }
}

async function decodeOnce() {
  const seq = ++S.decodeSeq, id = S.current, prompt = snapshot();
  if (!prompt.points.length && !prompt.box) return;
  const t0 = performance.now();
  let result;
  try {
    result = S.ort ? await browserDecode(prompt) : await serverDecode(id, prompt);
  } catch (e) {
    status(`decode failed: ${e.message}`);
    return;
  }
  if (seq !== S.decodeSeq || id !== S.current) return; // a newer prompt or another image
  S.candidates = result;
  S.cand = result.scores.indexOf(Math.max(...result.scores));
  S.decodes++;
  drawLive(); renderCandidates();
  liveLayer.dataset.decodes = String(S.decodes);
  status(`${S.ort ? "browser" : "server"} decode ${(performance.now() - t0).toFixed(0)} ms; ` +
    `candidate ${S.cand + 1} of ${result.scores.length}; Enter accepts`);
}

async function serverDecode(id, prompt) {
  const r = await apiJSON(imagePath(id) + "/decode", {
    method: "POST", json: { points: prompt.points, labels: prompt.labels, box: prompt.box, multimask: true },
  });
  const [h, w] = r.size;
  return { scores: r.scores, areas: r.masks.map((m) => m.area), masks: r.masks.map((m) => rleToMask(m.counts, h, w)) };
}

function chooseCandidate(i) {
  if (!S.candidates || i >= S.candidates.scores.length) return;
  S.cand = i;
  drawLive(); renderCandidates();
}

// ------------------------------------------------------------------------------------- in-browser decode
async function setupBrowserDecode() {
  await new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/ort/ort.wasm.min.js"; s.onload = resolve; s.onerror = () => reject(new Error("ort.wasm.min.js"));
    document.head.appendChild(s);
  });
  /* global ort */
  ort.env.wasm.wasmPaths = new URL("/ort/", location.href).href;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one is enough for the decoder
  const r = await api("/api/decoder.onnx");
  if (!r.ok) throw new Error(`decoder.onnx: ${r.status}`);
  const session = await ort.InferenceSession.create(new Uint8Array(await r.arrayBuffer()), { executionProviders: ["wasm"] });
  return { session, embedding: null, embeddingOf: null };
}

async function loadBrowserEmbedding(id) {
  const r = await api(imagePath(id) + "/embedding.bin");
  if (!r.ok) throw new Error(`embedding: ${r.status}`);
  const shape = r.headers.get("X-Shape").split(",").map(Number);
  S.ort.embedding = new ort.Tensor("float32", new Float32Array(await r.arrayBuffer()), shape);
  S.ort.embeddingOf = id;
}

async function browserDecode(prompt) {
  const cfg = S.config, sz = cfg.image_size, g = cfg.grid_size;
  if (S.ort.embeddingOf !== S.current) await loadBrowserEmbedding(S.current);
  // transforms.apply_coords: the resized frame (longest side image_size, official rounding)
  const scale = sz / Math.max(S.h, S.w);
  const nh = Math.floor(S.h * scale + 0.5), nw = Math.floor(S.w * scale + 0.5);
  const coords = [], labels = [];
  prompt.points.forEach(([x, y], i) => { coords.push(x * nw / S.w, y * nh / S.h); labels.push(prompt.labels[i]); });
  if (prompt.box) {
    const b = prompt.box;
    coords.push(b[0] * nw / S.w, b[1] * nh / S.h, b[2] * nw / S.w, b[3] * nh / S.h);
    labels.push(2, 3);
  } else {
    coords.push(0, 0); labels.push(-1); // the official padding point
  }
  const n = labels.length;
  const feeds = {
    image_embeddings: S.ort.embedding,
    point_coords: new ort.Tensor("float32", new Float32Array(coords), [1, n, 2]),
    point_labels: new ort.Tensor("float32", new Float32Array(labels), [1, n]),
    mask_input: new ort.Tensor("float32", new Float32Array(16 * g * g), [1, 1, 4 * g, 4 * g]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([0]), [1]),
    orig_im_size: new ort.Tensor("float32", new Float32Array([S.h, S.w]), [2]),
  };
  const out = await S.ort.session.run(feeds);
  const logits = out.masks.data, iou = out.iou_predictions.data, m = out.masks.dims[1], hw = S.h * S.w;
  const masks = [], scores = [], areas = [];
  for (let j = 1; j < m; j++) { // outputs 1.. are the multimask candidates (0 is the single-mask output)
    const mask = new Uint8Array(hw);
    let area = 0;
    for (let k = 0; k < hw; k++) if (logits[j * hw + k] > cfg.mask_threshold) { mask[k] = 1; area++; }
    masks.push(mask); scores.push(iou[j]); areas.push(area);
  }
  return { masks, scores, areas };
}

// ------------------------------------------------------------------------------------------ annotations
function setDoc(r) {
  S.doc = r.doc; S.version = r.version; S.prefill = r.prefill;
  if (S.selected !== null && !S.doc.annotations.some((a) => a.id === S.selected)) S.selected = null;
  drawOverlay(); renderMasks();
  document.body.dataset.version = String(S.version);
  if (r.warning) warn(r.warning);
}

async function write(path, opts) {
  try {
    const r = await apiJSON(path, opts);
    setDoc(r);
    refreshList();
    return r;
  } catch (e) {
    if (e.status === 409 && e.body && e.body.doc) {
      setDoc({ doc: e.body.doc, version: e.body.version, prefill: S.prefill });
      warn(e.message);
    } else {
      warn(e.message);
    }
    return null;
  }
}

async function accept() {
  if (S.decodeBusy) { S.acceptPending = true; return; } // accept what the latest prompt gives
  if (!S.candidates || !S.current) return;
  const p = snapshot();
  const r = await write(imagePath(S.current) + "/annotations", {
    method: "POST",
    json: { base_version: S.version, points: p.points, labels: p.labels, box: p.box, candidate: S.cand,
            multimask: true, replaces: S.replaces, annotator: annotator() },
  });
  if (r) {
    const mine = r.doc.annotations[r.doc.annotations.length - 1];
    S.acceptedHere.push(mine.id);
    clearPrompt();
    status(`accepted mask #${mine.id} (version ${r.version})`);
  }
}

async function deleteMask(id) {
  if (id === null || id === undefined || !S.current) return;
  const r = await write(imagePath(S.current) + `/annotations/${id}?base_version=${S.version}`, { method: "DELETE" });
  if (r) status(`deleted mask #${id}`);
}

async function clearAll() {
  if (!S.current || !S.doc || !S.doc.annotations.length) return;
  if (!confirm(`delete all ${S.doc.annotations.length} masks of ${S.current}?`)) return;
  await write(imagePath(S.current) + `/annotations?base_version=${S.version}`, { method: "DELETE" });
}

async function setDone(done) {
  if (!S.current) return;
  await write(imagePath(S.current) + "/done", { method: "PUT", json: { base_version: S.version, done } });
}

function undo() {
  if (S.history.length) {
    S.prompt = S.history.pop();
    promptChanged();
  } else if (S.acceptedHere.length) {
    deleteMask(S.acceptedHere.pop());
  }
}

function select(id) {
  S.selected = id;
  drawOverlay(); renderMasks();
}

function editSelected() {
  const a = S.doc && S.doc.annotations.find((x) => x.id === S.selected);
  if (!a) return;
  const pr = a.prompt || { points: a.point_coords, labels: a.point_coords.map(() => 1), box: null };
  S.history = [];
  S.prompt = { points: pr.points.map((p) => p.slice()), labels: pr.labels.slice(), box: pr.box ? pr.box.slice() : null };
  S.replaces = a.id;
  renderMasks(); promptChanged();
}

function annotator() {
  return ($("annotator").value || "").trim() || "anonymous";
}

// ------------------------------------------------------------------------------------------------ images
async function refreshList() {
  S.images = await apiJSON("/api/images");
  renderImages();
}

async function loadDoc(id) {
  const r = await apiJSON(imagePath(id));
  if (id === S.current) setDoc(r);
  clearTimeout(S.prefillTimer);
  if (r.prefill === "pending") {
    status("the automatic mask generator is working on this image...");
    S.prefillTimer = setTimeout(() => { if (id === S.current) loadDoc(id).then(refreshList); }, 1000);
  }
  return r;
}

async function openImage(id) {
  if (!id) return;
  S.current = id;
  document.body.dataset.ready = "0";
  S.candidates = null; S.selected = null; S.acceptedHere = [];
  S.prompt = { points: [], labels: [], box: null }; S.history = []; S.replaces = null;
  renderImages(); renderCandidates();
  status(`loading ${id}...`);
  const r = await api(imagePath(id) + "/image");
  if (!r.ok) { warn(`image ${id}: ${r.status}`); return; }
  const bitmap = await createImageBitmap(await r.blob());
  if (S.current !== id) return;
  S.w = bitmap.width; S.h = bitmap.height;
  for (const c of [imageLayer, overlayLayer, liveLayer]) { c.width = S.w; c.height = S.h; }
  promptLayer.setAttribute("width", S.w); promptLayer.setAttribute("height", S.h);
  promptLayer.setAttribute("viewBox", `0 0 ${S.w} ${S.h}`);
  imageLayer.getContext("2d").drawImage(bitmap, 0, 0);
  $("empty").hidden = true;
  fit(); drawLive(); drawPrompt();
  await loadDoc(id);
  status(`computing the embedding of ${id}...`);
  const t0 = performance.now();
  try {
    const e = await apiJSON(imagePath(id) + "/embedding", { method: "POST" });
    if (S.ort) await loadBrowserEmbedding(id);
    if (S.current !== id) return;
    status(`${id}: ${S.w}x${S.h}, embedding ${e.ready_before ? "was ready" : "computed"} in ` +
      `${(performance.now() - t0).toFixed(0)} ms${S.ort ? ", browser decode" : ""}; click an object`);
    document.body.dataset.ready = "1";
  } catch (err) {
    warn(`embedding of ${id} failed: ${err.message}`);
  }
}

function step(delta) {
  const i = S.images.findIndex((im) => im.id === S.current);
  const next = S.images[i + delta];
  if (next) openImage(next.id);
}

// ------------------------------------------------------------------------------------------------ events
viewport.addEventListener("contextmenu", (e) => e.preventDefault());

viewport.addEventListener("mousedown", (e) => {
  if (!S.w) return;
  viewport.focus();
  if (e.button === 1 || (e.button === 0 && S.space)) {
    S.pan = { x: e.clientX, y: e.clientY, tx: S.view.tx, ty: S.view.ty };
    viewport.classList.add("panning");
    e.preventDefault();
    return;
  }
  if (e.button === 2) {
    const [x, y, inside] = toImage(e);
    if (inside) changePrompt((p) => { p.points.push([x, y]); p.labels.push(0); });
    return;
  }
  if (e.button !== 0) return;
  const [x, y] = toImage(e);
  S.drag = { sx: e.clientX, sy: e.clientY, x, y, box: null, shift: e.shiftKey || e.altKey, ctrl: e.ctrlKey || e.metaKey };
});

window.addEventListener("mousemove", (e) => {
  if (S.pan) {
    S.view.tx = S.pan.tx + e.clientX - S.pan.x; S.view.ty = S.pan.ty + e.clientY - S.pan.y;
    applyView();
    return;
  }
  if (!S.drag) return;
  if (!S.drag.box && Math.hypot(e.clientX - S.drag.sx, e.clientY - S.drag.sy) < 5) return;
  const [x, y] = toImage(e);
  S.drag.box = [S.drag.x, S.drag.y, x, y];
  drawPrompt();
});

window.addEventListener("mouseup", (e) => {
  if (S.pan) { S.pan = null; viewport.classList.remove("panning"); return; }
  const d = S.drag;
  S.drag = null;
  if (!d) return;
  if (d.box) {
    const [x0, y0, x1, y1] = d.box;
    const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) changePrompt((p) => { p.box = box; });
    else drawPrompt();
    return;
  }
  const [x, y, inside] = toImage(e);
  if (!inside) return;
  if (d.ctrl) { // select the accepted mask under the cursor
    const k = Math.min(S.h - 1, Math.floor(y)) * S.w + Math.min(S.w - 1, Math.floor(x));
    const i = S.overlayMap ? S.overlayMap[k] : -1;
    select(i >= 0 ? S.doc.annotations[i].id : null);
    return;
  }
  changePrompt((p) => { p.points.push([x, y]); p.labels.push(d.shift ? 0 : 1); });
});

viewport.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = viewport.getBoundingClientRect();
  zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
}, { passive: false });

window.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement && e.target.type === "text") return;
  const k = e.key;
  if (k === " ") { S.space = true; e.preventDefault(); return; }
  if ((e.ctrlKey || e.metaKey) && (k === "z" || k === "Z")) { undo(); e.preventDefault(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const vw = viewport.clientWidth / 2, vh = viewport.clientHeight / 2;
  const actions = {
    Enter: accept, a: accept, z: undo, Escape: clearPrompt, c: clearPrompt,
    Delete: () => deleteMask(S.selected), Backspace: () => deleteMask(S.selected), x: () => deleteMask(S.selected),
    e: editSelected, n: () => step(1), ArrowRight: () => step(1), p: () => step(-1), ArrowLeft: () => step(-1),
    d: () => setDone(!(S.doc && S.doc.samjax.done)), o: () => { S.overlay = !S.overlay; $("overlay-toggle").checked = S.overlay; drawOverlay(); },
    f: fit, 0: actualSize, "+": () => zoomAt(1.25, vw, vh), "=": () => zoomAt(1.25, vw, vh), "-": () => zoomAt(0.8, vw, vh),
    1: () => chooseCandidate(0), 2: () => chooseCandidate(1), 3: () => chooseCandidate(2),
    "?": () => { $("help").hidden = !$("help").hidden; },
  };
  const act = actions[k] || (k.length === 1 ? actions[k.toLowerCase()] : undefined);
  if (act) { act(); e.preventDefault(); }
});
window.addEventListener("keyup", (e) => { if (e.key === " ") S.space = false; });
window.addEventListener("resize", () => { if (S.w) fit(); });

$("accept").onclick = accept;
$("undo").onclick = undo;
$("clear").onclick = clearPrompt;
$("delete").onclick = () => deleteMask(S.selected);
$("edit").onclick = editSelected;
$("clear-all").onclick = clearAll;
$("done").onchange = (e) => setDone(e.target.checked);
$("overlay-toggle").onchange = (e) => { S.overlay = e.target.checked; drawOverlay(); };
$("warning-close").onclick = () => { $("warning").hidden = true; };
$("annotator").value = localStorage.getItem("samjax.annotator") || "";
$("annotator").onchange = () => localStorage.setItem("samjax.annotator", $("annotator").value);
$("upload").onchange = async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  const form = new FormData();
  form.append("file", f, f.name);
  try {
    const r = await apiJSON("/api/images", { method: "POST", body: form });
    await refreshList();
    openImage(r.id);
  } catch (err) {
    warn(`upload failed: ${err.message}`);
  }
  e.target.value = "";
};

// ------------------------------------------------------------------------------------------------- start
(async function start() {
  const q = new URLSearchParams(location.search);
  S.token = q.get("token") || sessionStorage.getItem("samjax.token");
  if (S.token) sessionStorage.setItem("samjax.token", S.token);
  try {
    S.config = await apiJSON("/api/config");
  } catch (e) {
    warn(e.message);
    return;
  }
  if (S.config.browser_decode) {
    try {
      S.ort = await setupBrowserDecode();
    } catch (e) {
      S.ort = null;
      warn(`in-browser decoding unavailable (${e.message}); decoding on the server`);
    }
  }
  document.body.dataset.decoder = S.ort ? "browser" : "server";
  renderCandidates();
  await refreshList();
  const first = q.get("image") || (S.images.find((im) => !im.done) || S.images[0] || {}).id;
  if (first) await openImage(first);
})();
