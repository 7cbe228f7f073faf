// PEMT search page. Plain ES module, no build step, no network access beyond this server.
// Talks to the HTTP API in docs/ARCHITECTURE.md: POST embed/search/classify, GET info/readyz,
// GET clips/{id}/thumbnail and clips/{id}/media; a video longer than the server's synchronous
// limit is added as a background job (POST jobs, polled with GET jobs/{id}, DELETE to cancel). Paths are relative to the page, so the page
// also works behind a reverse proxy that serves the API under a prefix.

const KEY_STORAGE = "pemt.apiKey";
const MAX_K = 100; // the most results the page asks for (own windows are filtered out)

const $ = (id) => document.getElementById(id);
const el = {
  form: $("search-form"), file: $("file"), dropzone: $("dropzone"), fileChosen: $("file-chosen"),
  fileName: $("file-name"), fileDetails: $("file-details"), fileClear: $("file-clear"),
  fileHint: $("file-hint"), k: $("k"), store: $("store"), labelField: $("label-field"),
  label: $("label"), classify: $("classify"), submit: $("submit"), submitHint: $("submit-hint"),
  status: $("server-status"), infoCount: $("info-count"), infoBackend: $("info-backend"),
  infoModel: $("info-model"), infoNote: $("info-note"), infoRefresh: $("info-refresh"),
  settings: $("settings"), apiKey: $("api-key"), apiKeyToggle: $("api-key-toggle"),
  keyState: $("key-state"), results: $("results"), progress: $("progress"),
  progressStage: $("progress-stage"), progressValue: $("progress-value"),
  progressBar: $("progress-bar"), progressDetail: $("progress-detail"), cancel: $("cancel"),
  error: $("error"), errorTitle: $("error-title"), errorHint: $("error-hint"),
  errorDetail: $("error-detail"), errorMore: $("error-more"), summary: $("summary"), queryVideo: $("query-video"),
  queryName: $("query-name"), queryMeta: $("query-meta"), classification: $("classification"),
  classLabel: $("class-label"), classBars: $("class-bars"), classNote: $("class-note"),
  resultsCount: $("results-count"), empty: $("empty"), grid: $("grid"),
  template: $("card-template"),
};

const state = {
  file: null,
  fileUrl: null, // object URL of the chosen file (query preview)
  fileDuration: null,
  busy: false,
  cancel: null, // aborts the request in flight
  limits: {}, // from GET info, when the server reports them
  objectUrls: [], // thumbnails and previews of the current results, revoked on re-render
};

// ---------------------------------------------------------------- formatting

function clock(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function timeRange(start, end) {
  return `${clock(start)}-${clock(end)}`;
}

function bytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[i]}`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
}

function describe(value) {
  // /info fields may be plain strings or small objects; show something a person can read.
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "object") return String(value);
  const name = value.name ?? value.backend ?? value.variant ?? value.kind ?? value.id;
  const dim = value.embed_dim ?? value.dim;
  if (name) return dim ? `${name} · ${dim}-d` : String(name);
  return Object.entries(value).filter(([, v]) => typeof v !== "object")
    .map(([k, v]) => `${k}: ${v}`).join(", ") || "–";
}

function describeBackend(value) {
  // {"backend": "onnx", "providers": ["CPUExecutionProvider"], ...} -> "onnx · CPU"
  if (!value || typeof value !== "object") return describe(value);
  const name = value.backend ?? value.name ?? "–";
  const where = value.providers?.[0]?.replace(/ExecutionProvider$/, "") ?? value.url;
  return where ? `${name} · ${where}` : String(name);
}

function details(value) {
  // Tooltip text: the scalar fields of an /info object.
  if (!value || typeof value !== "object") return "";
  return Object.entries(value).filter(([, v]) => v !== null && typeof v !== "object" || Array.isArray(v))
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join("\n");
}

// ---------------------------------------------------------------- errors in plain words

const PLAIN = {
  not_media: ["This file isn't a video we can read.", "Choose a video file such as MP4, MOV, WebM or MKV."],
  unsupported_media_type: ["This file isn't a video we can read.", "Choose a video file such as MP4, MOV, WebM or MKV."],
  no_stream: ["This file has neither picture nor sound.", "Choose a video that has a picture or a soundtrack."],
  empty: ["This video is empty.", "It has no frames and no sound. Choose another file."],
  corrupt: ["This video file is damaged and can't be read.", "Export or download it again, or choose another file."],
  too_long: ["This video is too long.", "Trim it to {duration} or less and try again."],
  too_long_sync: ["This video is too long to search directly.", "Tick “Add this video to the index”: long videos are embedded in the background, then searched."],
  source_missing: ["The server lost this video before it was embedded.", "Add it again."],
  too_large: ["This file is too big to upload.", "Choose a file under {size}, or shorten the video."],
  payload_too_large: ["This file is too big to upload.", "Choose a file under {size}, or shorten the video."],
  resolution: ["This video's picture is too large.", "Scale it down (for example to 1080p) and try again."],
  timeout: ["Reading this video took too long.", "Try a shorter or smaller version of it."],
  missing_audio: ["This video has no sound, and this server needs it.", "Choose a video with a soundtrack."],
  missing_video: ["This file has no picture, and this server needs it.", "Choose a video, not an audio-only file."],
  not_found: ["That clip isn't in the index any more.", "It may have been deleted. Search again."],
  busy: ["The server is busy with other videos right now.", "Wait a few seconds and try again."],
  rate_limited: ["The server is busy right now.", "Wait a few seconds and try again."],
  invalid_request: ["Some of the options aren't valid.", "Check the number of results and the label, then try again."],
  invalid_id: ["That clip id isn't valid.", "Search again with a new upload."],
  no_signal: ["This video has no usable sound or picture to match on.", "Choose another video, or match on the other stream."],
  backend_error: ["The embedding model failed on this video.", "Try again in a minute. If it keeps happening, tell the administrator."],
  no_modality: ["This clip lacks the stream you chose to match on.", "Choose “Both”, or the stream the video has (sound or picture)."],
  invalid_metadata: ["The label can't be stored.", "Use a shorter, plain-text label."],
  internal: ["Something went wrong on the server.", "Try again. If it keeps happening, tell the administrator."],
  backend_unavailable: ["The embedding model isn't available right now.", "The server is running but its model backend is down. Try again in a minute, or ask the administrator."],
  not_ready: ["The server is still starting up.", "Try again in a moment."],
  storage_full: ["The server has no room to store this video.", "Try again later. If it keeps happening, tell the administrator: the server's disk is full."],
  upload_timeout: ["The upload was too slow and the server stopped waiting.", "Check your connection and try again."],
  unavailable: ["The server can't handle requests right now.", "Try again in a minute, or ask the administrator."],
  index_empty: ["The index is empty.", "Add some videos first: tick “Add this video to the index” and search."],
  no_labels: ["No clip in the index has a label yet.", "Add videos with a label to get predictions."],
};

const BY_STATUS = {
  400: ["The server couldn't use this request.", "Check the file and the options, then try again."],
  404: ["The server doesn't know this address.", "The page and the server may be different versions. Reload the page."],
  408: PLAIN.upload_timeout,
  413: PLAIN.too_large,
  415: PLAIN.not_media,
  422: ["Some of the options aren't valid.", "Check the number of results and the label, then try again."],
  429: PLAIN.rate_limited,
  500: ["Something went wrong on the server.", "Try again. If it keeps happening, tell the administrator."],
  502: ["The server can't be reached through the proxy.", "Try again in a minute, or ask the administrator."],
  503: PLAIN.unavailable,
  504: ["The server took too long to answer.", "Try a shorter video, or try again later."],
  507: PLAIN.storage_full,
};

class ApiError extends Error {
  constructor({ status = 0, code = "", message = "", title, hint }) {
    super(title || message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = message;
    [this.title, this.hint] = title ? [title, hint ?? ""] : plainWords(status, code);
  }
}

function plainWords(status, code) {
  if (status === 0) {
    return ["Can't reach the PEMT server.", "Check that the server is running and that this computer is connected, then try again."];
  }
  if (status === 401 || status === 403 || /api_key|unauthori[sz]ed|forbidden/.test(code)) {
    return readApiKey()
      ? ["The API key was not accepted.", "Check the key under “API key” on the left and try again."]
      : ["This server needs an API key.", "Enter it under “API key” on the left, then try again."];
  }
  const [title, hint] = PLAIN[code] ?? BY_STATUS[status] ?? BY_STATUS[Math.floor(status / 100) * 100] ?? BY_STATUS[400];
  const size = state.limits.max_bytes ? bytes(state.limits.max_bytes) : "the server's limit";
  const dur = state.limits.max_duration_s ? duration(state.limits.max_duration_s) : "the server's limit";
  return [title, hint.replace("{size}", size).replace("{duration}", dur)];
}

// ---------------------------------------------------------------- HTTP

function readApiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

function authHeaders() {
  const key = readApiKey();
  return key ? { "X-API-Key": key } : {};
}

function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

function clipPath(id, suffix) {
  return `clips/${encodeURIComponent(id)}/${suffix}`;
}

// One request with XMLHttpRequest (upload progress events; fetch has none). Resolves with the
// parsed JSON body, rejects with ApiError. `onUpload(fraction)` follows the upload;
// `onSent()` fires when the body is out and the server is working.
function request(method, path, { json, form, onUpload, onSent, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, apiUrl(path));
    xhr.responseType = "text";
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Accept", "application/json");
    let body = null;
    if (json !== undefined) {
      xhr.setRequestHeader("Content-Type", "application/json");
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    if (onUpload) xhr.upload.onprogress = (e) => e.lengthComputable && onUpload(e.loaded / e.total);
    if (onSent) xhr.upload.onload = () => onSent();
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) {
        if (data === null) reject(new ApiError({ status: 500, message: "The server's answer was not JSON." }));
        else resolve(data);
        return;
      }
      const err = (data && data.error) || {};
      const fallback = data && typeof data.detail === "string" ? data.detail : xhr.statusText;
      reject(new ApiError({ status: xhr.status, code: String(err.code || ""), message: String(err.message || fallback || "") }));
    };
    xhr.onerror = () => reject(new ApiError({ status: 0, message: "Network error" }));
    xhr.ontimeout = () => reject(new ApiError({ status: 504, message: "Timed out" }));
    xhr.onabort = () => reject(new DOMException("Cancelled", "AbortError"));
    if (signal) {
      if (signal.aborted) { xhr.abort(); return; }
      signal.addEventListener("abort", () => xhr.abort(), { once: true });
    }
    xhr.send(body);
  });
}

// GET a binary resource with the API key header and hand back an object URL (an <img> or
// <video> cannot send headers itself). Null when the server says it has none (404).
async function fetchObjectUrl(path) {
  const res = await fetch(apiUrl(path), { headers: authHeaders() });
  if (!res.ok) return null;
  const url = URL.createObjectURL(await res.blob());
  state.objectUrls.push(url);
  return url;
}

// Whether the server keeps the source video of an item: ask for its first two bytes.
async function mediaAvailable(path) {
  try {
    const res = await fetch(apiUrl(path), { headers: { ...authHeaders(), Range: "bytes=0-1" } });
    res.body?.cancel().catch(() => {});
    return res.ok;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- server status and index

async function refreshStatus() {
  let next = 30000;
  try {
    await request("GET", "readyz");
    setStatus("ok", "Ready");
  } catch (e) {
    if (e.status === 0) setStatus("down", "Server unreachable");
    else if (e.status === 401 || e.status === 403) setStatus("ok", "Online");
    else if (e.status === 503 && /backend/i.test(e.detail)) setStatus("warn", "Model backend down", e.detail);
    else setStatus("warn", e.status === 503 ? "Not ready" : `Problem (${e.status})`, e.detail);
    next = 8000;
  }
  setTimeout(refreshStatus, next);
}

function setStatus(kind, text, detail = "") {
  el.status.dataset.state = kind;
  el.status.querySelector(".server-status-text").textContent = text;
  el.status.title = detail || text;
}

async function refreshInfo() {
  el.infoNote.hidden = true;
  try {
    const info = await request("GET", "info");
    const count = info.count ?? info.index?.count;
    el.infoCount.textContent = Number.isFinite(count) ? count.toLocaleString() : describe(count);
    el.infoBackend.textContent = describeBackend(info.backend);
    el.infoBackend.title = details(info.backend);
    el.infoModel.textContent = describe(info.model);
    el.infoModel.title = details(info.model);
    const windowSeconds = Number(info.model?.window_seconds);
    const span = document.getElementById("window-seconds");
    if (span && windowSeconds > 0) span.textContent = String(Math.round(windowSeconds * 10) / 10);
    // limits sit under "config" (the server's public settings); take the names we know
    const src = { ...(info.config || {}), ...(info.limits || {}) };
    state.limits = {
      max_bytes: src.max_bytes ?? src.max_upload_bytes,
      max_duration_s: src.max_duration_s,
      max_k: src.max_k,
      sync_s: src.embed_max_duration_s, // longer uploads go through a background job
    };
    el.k.max = String(Math.min(50, state.limits.max_k || 50));
    updateLimitsHint();
  } catch (e) {
    for (const node of [el.infoCount, el.infoBackend, el.infoModel]) node.textContent = "–";
    el.infoNote.textContent = e.status === 401 || e.status === 403
      ? "Enter the API key to see the index."
      : e.status === 0 ? "The server can't be reached." : e.title;
    el.infoNote.hidden = false;
  }
}

function updateLimitsHint() {
  const parts = [];
  if (state.limits.max_duration_s) parts.push(`up to ${duration(state.limits.max_duration_s)}`);
  if (state.limits.max_bytes) parts.push(bytes(state.limits.max_bytes));
  el.fileHint.textContent = parts.length
    ? `MP4, MOV, WebM, MKV… ${parts.join(", ")}.`
    : "MP4, MOV, WebM, MKV… audio and picture are both used.";
}

// ---------------------------------------------------------------- choosing a file

function setFile(file) {
  if (state.busy) return;
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.file = file || null;
  state.fileUrl = null;
  state.fileDuration = null;
  hideError();
  el.dropzone.classList.toggle("has-file", Boolean(file));
  el.fileChosen.hidden = !file;
  if (file) {
    el.fileName.textContent = file.name;
    el.fileDetails.textContent = bytes(file.size);
    state.fileUrl = URL.createObjectURL(file);
    // Read the duration in the browser where it can (it cannot for every container).
    const probe = document.createElement("video");
    probe.preload = "metadata";
    probe.onloadedmetadata = () => {
      if (state.file !== file || !Number.isFinite(probe.duration)) return;
      state.fileDuration = probe.duration;
      el.fileDetails.textContent = `${bytes(file.size)} · ${clock(probe.duration)}`;
    };
    probe.src = state.fileUrl;
  } else {
    el.file.value = "";
  }
  updateSubmit();
}

function updateSubmit() {
  el.submit.disabled = state.busy || !state.file;
  el.submit.textContent = el.store.checked ? "Add & search" : "Search";
  el.submitHint.textContent = state.busy ? "Working…" : state.file ? "" : "Choose a video first.";
  el.submitHint.hidden = !el.submitHint.textContent;
}

function checkFileLocally(file, store) {
  if (file.size === 0) throw new ApiError({ title: "This file is empty.", hint: "Choose another video." });
  const { max_bytes: maxBytes, max_duration_s: maxDur } = state.limits;
  if (maxBytes && file.size > maxBytes) throw new ApiError({ status: 413, code: "too_large" });
  if (maxDur && state.fileDuration && state.fileDuration > maxDur + 0.5) throw new ApiError({ status: 422, code: "too_long" });
  if (!store && isLong()) throw new ApiError({ status: 413, code: "too_long_sync" });
}

// Longer than the server embeds while the browser waits: it goes through a background job.
function isLong() {
  return Boolean(state.limits.sync_s && state.fileDuration && state.fileDuration > state.limits.sync_s + 0.5);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("Cancelled", "AbortError")); }, { once: true });
  });
}

// Upload as a background job and follow it until it ends; resolves with the finished job.
// Cancelling (the Cancel button) cancels the job on the server too.
async function runJob(file, metadata, signal, onUpload) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("metadata", JSON.stringify(metadata));
  let job = await request("POST", "jobs", {
    form, signal, onUpload,
    onSent: () => showProgress("Queued: the server will embed it in the background…", null),
  });
  try {
    while (!["done", "failed", "cancelled"].includes(job.state)) {
      await sleep(1000, signal);
      job = await request("GET", `jobs/${encodeURIComponent(job.id)}`, { signal });
      const p = job.progress || {};
      const total = p.seconds_total ? ` of ${clock(p.seconds_total)}` : "";
      const windows = `${p.windows_done ?? 0}${p.windows_total ? ` of ${p.windows_total}` : ""} windows`;
      showProgress(
        job.state === "queued" ? "Queued: waiting for the server…" : "Embedding in the background…",
        job.state === "queued" ? null : Number(p.fraction) || 0,
        `${clock(p.seconds_done)}${total} · ${windows}`,
      );
    }
  } catch (e) {
    if (e?.name === "AbortError") {
      request("DELETE", `jobs/${encodeURIComponent(job.id)}`).catch(() => {}); // best effort
    }
    throw e;
  }
  if (job.state !== "done") {
    const err = job.error || {};
    throw new ApiError({ status: 422, code: String(err.code || job.state), message: String(err.message || `the job was ${job.state}`) });
  }
  return job;
}

// ---------------------------------------------------------------- progress, errors

function showProgress(stage, fraction, detail = "") {
  el.progress.hidden = false;
  el.empty.hidden = true;
  el.progressStage.textContent = stage;
  const indeterminate = fraction === null;
  el.progress.classList.toggle("indeterminate", indeterminate);
  if (indeterminate) {
    el.progressBar.style.width = "";
    el.progressBar.removeAttribute("aria-valuenow");
    el.progressValue.textContent = "";
  } else {
    const pct = Math.round(fraction * 100);
    el.progressBar.style.width = `${pct}%`;
    el.progressBar.setAttribute("aria-valuenow", String(pct));
    el.progressValue.textContent = `${pct}%`;
  }
  el.progressDetail.textContent = detail;
}

function hideProgress() {
  el.progress.hidden = true;
  el.empty.hidden = el.grid.children.length > 0;
}

function showError(err) {
  const e = err instanceof ApiError ? err : new ApiError({ status: 500, message: String(err?.message || err) });
  el.errorTitle.textContent = e.title;
  el.errorHint.textContent = e.hint;
  el.errorHint.hidden = !e.hint;
  // The server's own words, folded away, for whoever has to debug it.
  const detail = e.detail && e.detail !== e.title ? e.detail : "";
  el.errorDetail.textContent = detail ? `${e.status ? `HTTP ${e.status}` : ""}${e.code ? ` ${e.code}` : ""}: ${detail}`.trim() : "";
  el.errorMore.open = false;
  el.errorMore.hidden = !detail;
  el.error.hidden = false;
  const box = el.error.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) el.error.scrollIntoView({ block: "center" });
  if (e.status === 401 || e.status === 403) {
    el.settings.open = true;
    el.apiKey.focus();
  }
}

function hideError() {
  el.error.hidden = true;
}

// ---------------------------------------------------------------- the search

async function runSearch() {
  const file = state.file;
  if (!file || state.busy) return;
  const k = Math.min(50, Math.max(1, Math.round(Number(el.k.value) || 8)));
  el.k.value = String(k);
  const modality = el.form.elements.modality.value || "fused";
  const store = el.store.checked;
  const label = el.label.value.trim();
  const classify = el.classify.checked;

  hideError();
  try {
    checkFileLocally(file, store);
  } catch (e) {
    showError(e);
    return;
  }

  const abort = new AbortController();
  state.cancel = () => abort.abort();
  setBusy(true);
  const started = performance.now();
  const ticker = setInterval(() => {
    if (el.progress.classList.contains("indeterminate")) {
      el.progressDetail.textContent = `${((performance.now() - started) / 1000).toFixed(0)} s`;
    }
  }, 500);
  const uploading = (verb) => ({
    signal: abort.signal,
    onUpload: (f) => showProgress(`${verb} ${file.name}`, f, `${bytes(f * file.size)} of ${bytes(file.size)}`),
    onSent: () => showProgress("Processing: decoding and embedding the video…", null),
  });

  try {
    showProgress(`Uploading ${file.name}`, 0);
    let results;
    let queryId = null;
    let windows = null;
    let timings = null;
    if (store) {
      // Embed and store once, then query by the stored id (no second upload or decode).
      const metadata = { filename: file.name };
      if (label) metadata.label = label;
      let own = new Set();
      const asJob = async () => {
        const job = await runJob(file, metadata, abort.signal, uploading("Uploading").onUpload);
        windows = job.progress?.windows_done ?? null;
        queryId = job.clip_id; // a clip id query leaves out every window of the clip
      };
      if (isLong()) {
        await asJob();
      } else {
        const form = new FormData();
        form.append("file", file, file.name);
        form.append("store", "true");
        form.append("metadata", JSON.stringify(metadata));
        try {
          const embedded = await request("POST", "embed", { form, ...uploading("Uploading") });
          const items = embedded.items || [];
          if (!items.length) throw new ApiError({ title: "The server found nothing to index in this video.", hint: "Choose another file." });
          windows = items.length;
          timings = embedded.timings_ms;
          queryId = items[0].id;
          own = new Set(items.map((it) => it.id));
        } catch (e) {
          // the browser could not tell the length; the server says it is for a job
          if (!(e instanceof ApiError && e.status === 413 && e.code === "too_long" && state.limits.sync_s)) throw e;
          await asJob();
        }
      }
      showProgress("Searching the index…", null);
      const found = await request("POST", "search", {
        json: { id: queryId, k: Math.min(state.limits.max_k || MAX_K, k + own.size), modality }, signal: abort.signal,
      });
      results = (found.results || []).filter((r) => !own.has(r.id)).slice(0, k);
      refreshInfo();
    } else {
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("k", String(k));
      form.append("modality", modality);
      const found = await request("POST", "search", { form, ...uploading("Uploading") });
      results = found.results || [];
      timings = found.timings_ms;
    }
    const elapsed = (performance.now() - started) / 1000;
    renderSummary(file, { windows, timings, elapsed, stored: store });
    renderResults(results, modality);
    hideProgress();
    // One-column layout: the results sit below the form, bring them into view.
    if (window.matchMedia("(max-width: 860px)").matches) el.summary.scrollIntoView({ block: "start" });
    // classify votes in one space: "best" (search only) classifies by the fused vector
    const voteOn = modality === "best" ? "fused" : modality;
    if (classify) await runClassify({ file, queryId, k, modality: voteOn, signal: abort.signal });
    else el.classification.hidden = true;
  } catch (e) {
    hideProgress();
    if (e?.name === "AbortError") {
      showError(new ApiError({ title: "Search cancelled.", hint: "" }));
    } else {
      showError(e);
    }
  } finally {
    clearInterval(ticker);
    state.cancel = null;
    setBusy(false);
  }
}

async function runClassify({ file, queryId, k, modality, signal }) {
  el.classification.hidden = false;
  el.classLabel.textContent = "…";
  el.classBars.replaceChildren();
  el.classNote.hidden = false;
  el.classNote.textContent = "Comparing with labelled clips…";
  try {
    let out;
    if (queryId) {
      out = await request("POST", "classify", { json: { id: queryId, k, modality }, signal });
    } else {
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("k", String(k));
      form.append("modality", modality);
      out = await request("POST", "classify", { form, signal });
    }
    renderClassification(out);
  } catch (e) {
    if (e?.name === "AbortError") {
      el.classification.hidden = true;
      throw e;
    }
    el.classLabel.textContent = "No prediction";
    el.classNote.textContent = e.code === "no_labels" || e.code === "index_empty" ? PLAIN[e.code][0] : e.title;
  }
}

function setBusy(busy) {
  state.busy = busy;
  el.form.setAttribute("aria-busy", String(busy));
  el.file.disabled = busy;
  el.fileClear.disabled = busy;
  el.dropzone.classList.toggle("disabled", busy);
  el.cancel.hidden = !busy;
  updateSubmit();
}

// ---------------------------------------------------------------- rendering

function renderSummary(file, { windows, timings, elapsed, stored }) {
  el.summary.hidden = false;
  if (el.queryVideo.src !== state.fileUrl) el.queryVideo.src = state.fileUrl;
  el.queryName.textContent = file.name;
  const parts = [bytes(file.size)];
  if (state.fileDuration) parts.push(clock(state.fileDuration));
  if (windows) parts.push(`${windows} window${windows === 1 ? "" : "s"}${stored ? " added to the index" : ""}`);
  if (timings && Number.isFinite(timings.total)) {
    const t = ["decode", "model"].filter((key) => Number.isFinite(timings[key]))
      .map((key) => `${key} ${Math.round(timings[key])} ms`);
    parts.push(`server ${Math.round(timings.total)} ms${t.length ? ` (${t.join(", ")})` : ""}`);
  } else {
    parts.push(`${elapsed.toFixed(1)} s`);
  }
  el.queryMeta.textContent = parts.join(" · ");
}

function renderClassification(out) {
  const scores = Object.entries(out.scores || {}).sort((a, b) => b[1] - a[1]);
  if (!out.label && !scores.length) {
    el.classLabel.textContent = "No prediction";
    el.classNote.textContent = PLAIN.no_labels[0];
    return;
  }
  el.classLabel.textContent = out.label ?? scores[0][0];
  const max = Math.max(1e-9, ...scores.map(([, s]) => Math.abs(s)));
  const sum = scores.reduce((acc, [, s]) => acc + Math.max(0, s), 0);
  const rows = scores.slice(0, 6).map(([name, score]) => {
    const li = document.createElement("li");
    li.className = "class-bar";
    if (name === out.label) li.classList.add("top");
    const text = document.createElement("span");
    text.className = "class-name";
    text.textContent = name;
    const value = document.createElement("span");
    value.className = "class-score";
    // Scores that already sum to about 1 are shares: show percent. Otherwise the raw number.
    value.textContent = Math.abs(sum - 1) < 0.02 ? `${Math.round(score * 100)}%` : score.toFixed(2);
    const bar = document.createElement("span");
    bar.className = "class-track";
    const fill = document.createElement("span");
    fill.className = "class-fill";
    fill.style.width = `${Math.max(0, (score / max) * 100)}%`;
    bar.append(fill);
    li.append(text, value, bar);
    li.setAttribute("aria-label", `${name}: ${value.textContent}`);
    return li;
  });
  el.classBars.replaceChildren(...rows);
  const n = (out.neighbors || []).length;
  el.classNote.textContent = n ? `From the ${n} most similar labelled clip${n === 1 ? "" : "s"}.` : "";
  el.classNote.hidden = !n;
}

function clearResults() {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
  el.grid.replaceChildren();
}

// Metadata shown elsewhere on the card, or bookkeeping the server adds to every window.
const SHOWN_KEYS = new Set(["label", "filename", "title", "name", "clip_id", "clip", "window", "has_audio", "has_video"]);

// A modality as the page names it (a "best" hit says which stream matched).
const STREAM_NAMES = { fused: "sound and picture", audio: "sound", visual: "picture" };

function renderResults(results, modality) {
  clearResults();
  el.empty.hidden = results.length > 0;
  if (!results.length) {
    el.empty.querySelector(".empty-title").textContent = "No similar clips";
    el.empty.querySelector(".hint").textContent = "The index has nothing to compare with yet. Tick “Add this video to the index” to start filling it.";
  }
  const what = { ...STREAM_NAMES, best: "their best stream" }[modality] || modality;
  el.resultsCount.textContent = results.length ? `${results.length} closest by ${what}` : "";
  results.forEach((r, i) => el.grid.append(renderCard(r, i)));
}

function renderCard(r, i) {
  const card = el.template.content.firstElementChild.cloneNode(true);
  const md = r.metadata || {};
  const clipId = r.clip_id ?? md.clip_id ?? md.clip ?? String(r.id).split("#w")[0];
  const title = md.title ?? md.filename ?? md.name ?? clipId;
  const hasRange = Number.isFinite(r.start) && Number.isFinite(r.end);
  const range = hasRange ? timeRange(r.start, r.end) : "";
  const score = Number(r.score);

  card.dataset.id = r.id;
  card.querySelector(".rank").textContent = `#${i + 1}`;
  card.querySelector(".score-value").textContent = Number.isFinite(score) ? score.toFixed(3) : "–";
  card.querySelector(".meter-fill").style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  card.querySelector(".title").textContent = title;
  card.querySelector(".title").title = title;
  const matched = r.modality ? `matched on ${STREAM_NAMES[r.modality] || r.modality}` : null;
  card.querySelector(".sub").textContent = [clipId !== title ? clipId : null, range ? `window ${range}` : null, matched]
    .filter(Boolean).join(" · ");
  const rangeBadge = card.querySelector(".range");
  rangeBadge.textContent = range;
  rangeBadge.hidden = !range;

  const meta = card.querySelector(".meta");
  const entries = [];
  if (md.label !== undefined) entries.push(["label", md.label]);
  if (md.has_audio === false) entries.push(["stream", "no sound"]);
  if (md.has_video === false) entries.push(["stream", "no picture"]);
  for (const [key, value] of Object.entries(md)) if (!SHOWN_KEYS.has(key)) entries.push([key, value]);
  for (const [key, value] of entries.slice(0, 6)) {
    const row = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = key;
    dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    if (key === "label") row.className = "is-label";
    row.append(dt, dd);
    meta.append(row);
  }
  meta.hidden = entries.length === 0;

  const img = card.querySelector(".thumb");
  img.alt = `Frame from ${title}${range ? `, ${range}` : ""}`;
  // thumbnail_url null: the window has no picture (an audio-only clip).
  if (r.thumbnail_url === null) {
    showMissingThumb(card, "Sound only");
  } else {
    const thumbPath = r.thumbnail_url ? String(r.thumbnail_url).replace(/^\//, "") : clipPath(r.id, "thumbnail");
    fetchObjectUrl(thumbPath)
      .then((url) => {
        if (url) img.src = url;
        else showMissingThumb(card);
      })
      .catch(() => showMissingThumb(card));
  }
  img.addEventListener("error", () => showMissingThumb(card));

  const mediaPath = clipPath(r.id, "media");
  mediaAvailable(mediaPath).then((ok) => {
    if (!ok) return;
    const play = card.querySelector(".play");
    play.hidden = false;
    play.setAttribute("aria-label", `Play ${title}${range ? ` from ${range}` : ""}`);
    play.addEventListener("click", () => playPreview(card, mediaPath, r), { once: true });
  });
  return card;
}

function showMissingThumb(card, text = "No thumbnail") {
  card.querySelector(".thumb").hidden = true;
  const missing = card.querySelector(".thumb-missing");
  missing.textContent = text;
  missing.hidden = false;
}

async function playPreview(card, mediaPath, r) {
  const box = card.querySelector(".media");
  const play = card.querySelector(".play");
  play.disabled = true;
  play.classList.add("loading");
  // Without a key the browser streams the file itself and seeks by range requests; with a key
  // it has to be fetched with the header first.
  let src = readApiKey() ? await fetchObjectUrl(mediaPath).catch(() => null) : apiUrl(mediaPath);
  if (!src) {
    play.hidden = true;
    return;
  }
  const hasRange = Number.isFinite(r.start) && Number.isFinite(r.end);
  if (hasRange) src += `#t=${r.start},${r.end}`;
  const video = document.createElement("video");
  video.className = "preview";
  video.controls = true;
  video.playsInline = true;
  video.preload = "auto";
  video.setAttribute("aria-label", card.querySelector(".thumb").alt);
  video.poster = card.querySelector(".thumb").src || "";
  if (hasRange) {
    video.addEventListener("loadedmetadata", () => {
      if (video.currentTime < r.start - 0.25) video.currentTime = r.start;
    }, { once: true });
    video.addEventListener("timeupdate", () => {
      if (video.currentTime >= r.end && !video.paused) video.pause();
    });
  }
  video.addEventListener("error", () => {
    video.remove();
    play.hidden = true;
    card.querySelector(".thumb").hidden = false;
  }, { once: true });
  video.src = src;
  box.querySelector(".thumb").hidden = true;
  play.hidden = true;
  box.prepend(video);
  video.play().catch(() => {});
  video.focus();
}

// ---------------------------------------------------------------- wiring

function initApiKey() {
  const key = readApiKey();
  el.apiKey.value = key;
  const sync = () => {
    const has = Boolean(readApiKey());
    el.keyState.textContent = has ? "set" : "not set";
    el.keyState.classList.toggle("muted", !has);
  };
  sync();
  el.apiKey.addEventListener("input", () => {
    const value = el.apiKey.value.trim();
    try {
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
    } catch { /* storage off: the key still works for this page */ }
    sync();
  });
  el.apiKey.addEventListener("change", () => refreshInfo());
  el.apiKeyToggle.addEventListener("click", () => {
    const show = el.apiKey.type === "password";
    el.apiKey.type = show ? "text" : "password";
    el.apiKeyToggle.textContent = show ? "Hide" : "Show";
    el.apiKeyToggle.setAttribute("aria-pressed", String(show));
  });
}

function initDrop() {
  const zone = el.dropzone;
  let depth = 0;
  const hasFiles = (e) => Array.from(e.dataTransfer?.types || []).includes("Files");
  // Dropping anywhere on the page chooses the file (and never navigates away to it).
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    depth += 1;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = state.busy ? "none" : "copy";
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) setFile(file);
  });
}

function init() {
  initApiKey();
  initDrop();
  el.file.addEventListener("change", () => setFile(el.file.files[0]));
  el.fileClear.addEventListener("click", () => { setFile(null); el.file.focus(); });
  el.store.addEventListener("change", () => {
    el.labelField.hidden = !el.store.checked;
    updateSubmit();
  });
  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    runSearch();
  });
  el.cancel.addEventListener("click", () => state.cancel?.());
  el.infoRefresh.addEventListener("click", () => refreshInfo());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.cancel) state.cancel();
  });
  updateSubmit();
  refreshStatus();
  refreshInfo();
}

init();
