// The playground's shell: API calls (key, timing, the API's own error messages), model discovery from
// /v1/models, one panel module per served task (panels/<task>.js), the live /metrics panel.
// Plain ES modules served by the gateway; nothing comes from another host.

const KEY_STORE = "playground.apiKey";

// The panel registry, in page order: [task, title]. A panel is shown when /v1/models lists a model
// whose `task` is the key; its module is panels/<task>.js and exports mount(section, models) (the
// served models of that task). Adding a task (text classification, image translation, ...) is one
// line here plus that module; a served task without a panel is named in the status line, not hidden.
export const PANELS = [
  ["classification", "Classify"],
  ["segmentation", "Segment"],
  ["super_resolution", "Super-resolve"],
  ["anomaly", "Anomaly"],
  ["denoising", "Denoise"],
  ["sampling", "Sample"],
  ["text_generation", "Generate text"],
  ["chat", "Chat"],
  ["translation", "Translate"],
  ["text_classification", "Classify text"],
];

export class ApiError extends Error {
  constructor(status, code, message, info = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.info = info;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function answerInfo(res, t0) {
  return {
    status: res.status,
    ms: performance.now() - t0,
    requestId: res.headers.get("x-request-id") || "",
    model: res.headers.get("x-model") || "",
    version: res.headers.get("x-model-version") || "",
  };
}

// The API's own sentence for a failed answer: {"error": {"message"}} (task and OpenAI routes alike).
async function errorOf(res, info) {
  let code = "http_" + res.status;
  let message = "";
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    const err = body.error ?? body;
    if (typeof err === "string") message = err;
    else {
      message = err.message ?? (typeof body.detail === "string" ? body.detail : "");
      code = err.code ?? err.type ?? code;
    }
  } catch {
    message = text.slice(0, 300);
  }
  message = message || res.statusText || "request failed";
  const retry = res.headers.get("retry-after");
  const tail = retry && !/retry/i.test(message) ? ` Retry in ${retry} s.` : "";
  return new ApiError(res.status, code, `${res.status} ${res.statusText || code}: ${message}${tail}`, info);
}

// fetch() with the key, timing and the request id; throws ApiError with the API's message on 4xx/5xx.
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const h = new Headers(headers);
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  const t0 = performance.now();
  let res;
  try {
    res = await fetch(path, { method, body, headers: h, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `The gateway did not answer (${e.message}).`);
  }
  const info = answerInfo(res, t0);
  if (!res.ok) throw await errorOf(res, info);
  return { res, info };
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") Object.assign(node.style, v); // CSSOM: the CSP refuses style="" attributes
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

let uid = 0;
export const newId = (prefix) => `${prefix}-${++uid}`;

// A labelled control: <label>text <control></label>.
export function field(text, control) {
  return el("label", {}, text, " ", control);
}

// Model + version picker over the served models of one task. `version` is "" for the default (the
// model's traffic split, else the newest READY version).
export function picker(models) {
  const model = el("select", { "data-role": "model" });
  const version = el("select", { "data-role": "version" });
  for (const m of models) model.append(el("option", { value: m.name, text: m.name }));
  const fill = () => {
    const m = models.find((x) => x.name === model.value) || models[0];
    version.replaceChildren(el("option", { value: "", text: "default" }));
    for (const v of m?.versions ?? [m?.version]) if (v) version.append(el("option", { value: v, text: `v${v}` }));
  };
  model.addEventListener("change", fill);
  fill();
  const node = el("div", { class: "row" }, field("Model", model), field("Version", version));
  return {
    node,
    get model() {
      return model.value;
    },
    get version() {
      return version.value;
    },
    get info() {
      return models.find((x) => x.name === model.value);
    },
    query(extra = {}) {
      const q = new URLSearchParams({ model: model.value, ...extra });
      if (version.value) q.set("version", version.value);
      return q.toString();
    },
  };
}

// The line around every answer: model, version, latency, request id; errors as the API's sentence.
export function answerArea() {
  const meta = el("p", { class: "meta", "data-role": "meta", "aria-live": "polite" });
  const error = el("p", { class: "error", "data-role": "error", role: "alert" });
  return {
    nodes: [meta, error],
    show(info, extra = {}) {
      error.textContent = "";
      const model = extra.model || info.model;
      const version = extra.version || info.version;
      const parts = [];
      if (model) parts.push(`model ${model}`);
      if (version) parts.push(`version ${version}`);
      parts.push(extra.latency ?? `${Math.round(extra.ms ?? info.ms)} ms`);
      if (extra.note) parts.push(extra.note);
      if (info.requestId) parts.push(`request id ${info.requestId}`);
      meta.textContent = parts.join(" · ");
    },
    fail(err) {
      if (err instanceof ApiError) {
        error.textContent = err.message;
        if (err.info?.requestId) meta.textContent = `request id ${err.info.requestId}`;
      } else {
        error.textContent = String(err.message || err);
      }
    },
    clear() {
      meta.textContent = "";
      error.textContent = "";
    },
  };
}

// File picker + drag and drop onto the zone; onFile(Blob, name).
export function dropzone(label, onFile, accept = "image/*") {
  const id = newId("file");
  const input = el("input", { type: "file", id, accept, "data-role": "file" });
  const zone = el(
    "div",
    { class: "drop", "data-role": "drop" },
    el("label", { for: id }, label, " "),
    input,
    el("div", { class: "hint", text: "or drop a file here" }),
  );
  input.addEventListener("change", () => input.files[0] && onFile(input.files[0], input.files[0].name));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer?.files?.[0];
    if (f) onFile(f, f.name);
  });
  return zone;
}

// Example buttons: [{name, url}] -> onPick(Blob, name). Thumbnails are data: URLs built locally.
export function exampleButtons(examples, onPick) {
  const row = el("div", { class: "examples", role: "group", "aria-label": "Example inputs" });
  for (const ex of examples) {
    row.append(
      el(
        "button",
        {
          type: "button",
          title: ex.name,
          "aria-label": `Example: ${ex.name}`,
          "data-example": ex.name,
          onclick: () => onPick(dataUrlBlob(ex.url), ex.name),
        },
        el("img", { src: ex.url, alt: "" }),
      ),
    );
  }
  return row;
}

// Text example buttons: [{name, text}] -> onPick(text, example); the button reads as the text itself.
export function textExamples(examples, onPick, label = (ex) => ex.text) {
  return el(
    "div",
    { class: "examples text", role: "group", "aria-label": "Example inputs" },
    examples.map((ex) =>
      el("button", { type: "button", class: "secondary", "data-example": ex.name, text: label(ex), onclick: () => onPick(ex.text, ex) }),
    ),
  );
}

// data: URL -> Blob without fetch() (the CSP's connect-src is the gateway only).
export function dataUrlBlob(url) {
  const [head, data] = url.split(",", 2);
  const type = /data:([^;,]+)/.exec(head)?.[1] || "application/octet-stream";
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

export function formFile(blob, name = "image.png") {
  const fd = new FormData();
  fd.append("file", blob, name);
  return fd;
}

export const b64png = (b64) => `data:image/png;base64,${b64}`;

// Horizontal bars for label/score pairs (top-k, class fractions).
export function bars(rows, fmt = (v) => `${(100 * v).toFixed(1)}%`) {
  return el(
    "ul",
    { class: "bars", "data-role": "bars" },
    rows.map((r) =>
      el(
        "li",
        { "data-label": r.label },
        el("span", { class: "label" }, r.swatch ? el("span", { class: "swatch", style: { background: r.swatch } }) : null, r.label),
        el(
          "span",
          { class: "track", role: "img", "aria-label": `${r.label}: ${fmt(r.value)}` },
          el("span", { class: "fill", style: { width: `${Math.max(0, Math.min(1, r.value)) * 100}%` } }),
        ),
        el("span", { class: "num", text: fmt(r.value) }),
      ),
    ),
  );
}

// ---- live panel: requests/s and p50/p99 over the last poll window, parsed from /metrics ----

function parseMetrics(text) {
  let total = 0;
  const buckets = new Map(); // le -> cumulative count, summed over routes/models
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith("gateway_request")) continue;
    if (line.includes('route="/playground')) continue; // the page's own files are not traffic
    const sp = line.lastIndexOf(" ");
    const value = Number(line.slice(sp + 1));
    if (line.startsWith("gateway_requests_total{")) total += value;
    else if (line.startsWith("gateway_request_duration_seconds_bucket{")) {
      const le = /le="([^"]+)"/.exec(line)?.[1];
      if (le) buckets.set(le, (buckets.get(le) || 0) + value);
    }
  }
  const les = [...buckets.keys()].sort((a, b) => Number(a) - Number(b));
  return { total, buckets: les.map((le) => [Number(le), buckets.get(le)]) };
}

function quantile(q, buckets) {
  const n = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (n <= 0) return null;
  const rank = q * n;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe; // in the +Inf bucket: the last finite bound
      const inBucket = count - prevCount;
      return inBucket > 0 ? prevLe + ((le - prevLe) * (rank - prevCount)) / inBucket : le;
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

const fmtSeconds = (s) => (s === null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

async function pollMetrics(prev) {
  try {
    const res = await fetch("/metrics");
    if (!res.ok) return prev;
    const now = { t: performance.now(), ...parseMetrics(await res.text()) };
    if (prev) {
      const dt = (now.t - prev.t) / 1000;
      const rps = Math.max(0, now.total - prev.total) / dt;
      // latency quantiles of the window's requests; the whole history when the window had none
      const window = now.buckets.map(([le, c], i) => [le, c - (prev.buckets[i]?.[1] ?? 0)]);
      const use = window.length && window[window.length - 1][1] > 0 ? window : now.buckets;
      document.getElementById("live-rps").textContent = rps.toFixed(1);
      document.getElementById("live-p50").textContent = fmtSeconds(quantile(0.5, use));
      document.getElementById("live-p99").textContent = fmtSeconds(quantile(0.99, use));
    }
    return now;
  } catch {
    return prev;
  }
}

function startLive() {
  let prev = null;
  const tick = async () => {
    prev = await pollMetrics(prev);
    setTimeout(tick, 2000);
  };
  tick();
}

// ---- discovery and panels ----

async function hasChat() {
  try {
    const res = await fetch("/openapi.json");
    return res.ok && "/v1/chat/completions" in ((await res.json()).paths || {});
  } catch {
    return false;
  }
}

async function discover() {
  const status = document.getElementById("discovery");
  const main = document.getElementById("panels");
  const nav = document.getElementById("nav");
  let models;
  try {
    const { res } = await api("/v1/models");
    models = (await res.json()).models || [];
  } catch (err) {
    status.textContent = `Could not list the served models: ${err.message}`;
    status.className = "error";
    if (err.status === 401) document.getElementById("api-key").focus();
    return;
  }
  const byTask = new Map();
  for (const m of models) byTask.set(m.task, [...(byTask.get(m.task) || []), m]);
  if (byTask.has("text_generation") && (await hasChat())) byTask.set("chat", byTask.get("text_generation"));
  const known = new Set(PANELS.map(([t]) => t));
  const shown = PANELS.filter(([task]) => byTask.has(task));
  status.textContent = `${models.length} models served; ${shown.length} panels.`;
  const others = [...byTask.keys()].filter((t) => !known.has(t));
  if (others.length) status.textContent += ` Served without a panel yet: ${others.join(", ")}.`;
  for (const [task, title] of shown) {
    const id = `panel-${task}`;
    nav.append(el("a", { href: `#${id}`, text: title }));
    const section = el(
      "section",
      { class: "panel", id, "data-task": task, "aria-labelledby": `${id}-h` },
      el("h2", { id: `${id}-h`, text: title }),
    );
    main.append(section);
    try {
      const mod = await import(`./panels/${task}.js`);
      mod.mount(section, byTask.get(task));
    } catch (err) {
      section.append(el("p", { class: "error", text: `This panel failed to load: ${err.message}` }));
    }
  }
  document.body.dataset.ready = "true"; // the browser tests wait for this
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

function setupKey() {
  const input = document.getElementById("api-key");
  input.value = apiKey();
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value.trim()) sessionStorage.setItem(KEY_STORE, input.value.trim());
    else sessionStorage.removeItem(KEY_STORE);
    location.reload(); // rediscover with the key
  });
}

setupKey();
startLive();
discover();
