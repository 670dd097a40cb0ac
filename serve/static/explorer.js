// The seed explorer: asks /v1/model what the generator takes, draws /v1/generate's npy answer on canvases.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

async function api(path, options = {}) {
  // A server started with --api-key answers 401 without it: ask once, keep it for this tab only.
  const call = () => {
    const key = sessionStorage.getItem("ganrt-api-key");
    const headers = { ...(options.headers || {}), ...(key ? { "X-API-Key": key } : {}) };
    return fetch(path, { ...options, headers });
  };
  let response = await call();
  if (response.status === 401) {
    const key = window.prompt("This server needs an API key:");
    if (key) {
      sessionStorage.setItem("ganrt-api-key", key);
      response = await call();
    }
  }
  return response;
}

function parseNpy(buffer) {
  // numpy's .npy format: magic, version, header length, a Python-dict header, then the raw array
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("the answer is not an .npy array");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  if (!header.includes("'|u1'")) throw new Error("expected uint8 images, got " + header);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
  return { shape, data: bytes.subarray(start + headerLength) };
}

function draw(images, seeds, labels) {
  const [n, h, w, c] = images.shape;
  const grid = $("grid");
  grid.replaceChildren();
  for (let i = 0; i < n; i++) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const base = i * h * w * c;
    for (let p = 0; p < h * w; p++) {
      const src = base + p * c;
      img.data[4 * p] = images.data[src];
      img.data[4 * p + 1] = images.data[c === 3 ? src + 1 : src];
      img.data[4 * p + 2] = images.data[c === 3 ? src + 2 : src];
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const figure = document.createElement("figure");
    figure.dataset.seed = String(seeds[i]);
    const caption = document.createElement("figcaption");
    caption.textContent = "seed " + seeds[i] + (labels ? " · label " + labels[i] : "");
    figure.append(canvas, caption);
    grid.append(figure);
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function generate() {
  showError("");
  const first = Number($("seed").value);
  const count = Math.min(Number($("count").value), model.max_seeds_per_request);
  if (!Number.isSafeInteger(first) || first < 0 || !(count >= 1)) {
    showError("the first seed must be a non-negative integer and images at least 1");
    return;
  }
  const seeds = Array.from({ length: count }, (_, i) => first + i);
  const body = { seeds, format: "npy" };
  let labels = null;
  if (model.spec.num_classes > 0 && $("label").value !== "random") {
    body.labels = Number($("label").value);
    labels = seeds.map(() => body.labels);
  }
  if (model.spec.has_truncation) body.truncation = Number($("truncation").value);
  $("generate").disabled = true;
  const t0 = performance.now();
  try {
    const response = await api("/v1/generate", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      throw new Error(response.status + ": " + problem.error);
    }
    const images = parseNpy(await response.arrayBuffer());
    const ms = performance.now() - t0;
    draw(images, seeds, labels);
    $("status").textContent = count + " images in " + ms.toFixed(1) + " ms (" +
      (response.headers.get("X-Ganrt-Variant") || model.variant) + ")";
    $("status").dataset.latencyMs = ms.toFixed(3);
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    $("generate").disabled = false;
  }
}

async function init() {
  try {
    const response = await api("/v1/model");
    if (!response.ok) throw new Error((await response.json()).error);
    model = await response.json();
  } catch (e) {
    showError("cannot read the model: " + (e.message || e));
    return;
  }
  const s = model.spec;
  $("model").textContent = model.name + " — " + s.arch + ", " + s.channels + "×" + s.height + "×" + s.width +
    (s.num_classes ? ", " + s.num_classes + " classes" : ", unconditional") + " — " + model.variant + " on " +
    model.device;
  $("count").max = String(Math.min(64, model.max_seeds_per_request));
  if (s.num_classes > 0) {
    for (let k = 0; k < s.num_classes; k++) $("label").add(new Option("class " + k, String(k)));
    $("label-row").hidden = false;
  }
  if (s.has_truncation) {
    $("truncation-row").hidden = false;
    $("truncation").addEventListener("input", () => {
      $("truncation-value").textContent = Number($("truncation").value).toFixed(2);
    });
  }
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
  $("next").addEventListener("click", () => {
    $("seed").value = String(Number($("seed").value) + Number($("count").value));
    generate();
  });
  document.body.dataset.ready = "true";
  generate();
}

init();
