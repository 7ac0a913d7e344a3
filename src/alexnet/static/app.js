// The page of `alexnet serve`: pick or drop an image, POST it to /v1/predict, draw the top-5 as bars.
// Plain JS, no dependencies: the server's Content-Security-Policy allows nothing but this origin.
"use strict";

const TOPK = 5;
const $ = (id) => document.getElementById(id);

function show(el, on) { el.hidden = !on; }

function setError(message) {
  $("error").textContent = message || "";
  show($("error"), Boolean(message));
}

function formatList(values) {
  const short = (v) => {
    const s = Number(v).toPrecision(4);
    return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
  };
  return "(" + values.map(short).join(", ") + ")";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

async function loadModel() {
  const response = await fetch("/v1/model");
  if (!response.ok) throw new Error(await errorMessage(response));
  const m = await response.json();
  const p = m.preprocessing;
  $("model-summary").textContent = `${m.name} · ${m.description} · ${m.num_classes} classes`;
  const rows = [
    ["Name", m.name],
    ["Architecture", m.arch === "custom" ? m.description : `${m.description} (${m.arch})`],
    ["Classes", `${m.num_classes}: ${m.class_names.slice(0, 12).join(", ")}${m.num_classes > 12 ? ", …" : ""}`],
    ["Parameters", m.parameters.toLocaleString("en-US")],
    ["Preprocessing", `short side → ${p.resize_size}, centre crop ${p.input_size}×${p.input_size}, ` +
      `pixels × ${p.value_scale}/255, mean ${formatList(p.mean)}, std ${formatList(p.std)}`],
    ["Device", m.device],
    ["Precision", m.precision],
    ...provenanceRows(m.provenance),
  ];
  const dl = $("model");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.field = k.toLowerCase();
    dl.append(dt, dd);
  }
}

// Where the weights come from (the file's provenance; null for files that record none).
function provenanceRows(p) {
  if (!p) return [["Provenance", "none recorded in the weights file"]];
  const rows = [["Written", `${p.created || "?"} by alexnet ${p.alexnet_version || "?"}`]];
  if (p.parent) {
    rows.push(["Parent", p.parent.sha256 ? `${p.parent.weights} (sha256 ${p.parent.sha256.slice(0, 12)}…)` :
      p.parent.weights]);
  }
  if (p.data) rows.push(["Data", p.data]);
  if (p.epochs !== null && p.epochs !== undefined) rows.push(["Epochs", String(p.epochs)]);
  const m = p.metrics || {};
  const pct = (v) => `${(100 * v).toFixed(2)}%`;
  const figures = [];
  if (m.val_top1_accuracy !== null && m.val_top1_accuracy !== undefined) figures.push(`validation top-1 accuracy ${pct(m.val_top1_accuracy)}`);
  if (m.best_val_top1_error !== null && m.best_val_top1_error !== undefined) {
    figures.push(`best validation top-1 error ${pct(m.best_val_top1_error)} (epoch ${m.best_epoch})`);
  }
  if (figures.length) rows.push(["Metrics", figures.join(", ")]);
  return rows;
}

function renderPredictions(predictions) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of predictions) {
    const li = document.createElement("li");
    li.className = "prediction";
    li.dataset.index = String(p.index);
    li.dataset.prob = String(p.prob);
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.name;
    label.title = p.name;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = `${(100 * p.prob).toFixed(1)}%`;
    row.append(label, prob);
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, Math.min(100, 100 * p.prob)).toFixed(2)}%`;
    track.append(bar);
    li.append(row, track);
    list.append(li);
  }
}

let previewUrl = null;

async function classify(file) {
  if (!file) return;
  setError("");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("caption").textContent = file.name;
  $("predictions").replaceChildren();
  show($("result"), true);
  document.body.dataset.state = "busy";
  $("status").textContent = `Classifying ${file.name}…`;
  const form = new FormData();
  form.append("image", file, file.name);
  const tenCrop = $("ten-crop").checked;
  try {
    const t0 = performance.now();
    const response = await fetch(`/v1/predict?topk=${TOPK}&ten_crop=${tenCrop}`, { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    const r = body.results[0];
    renderPredictions(r.predictions);
    $("caption").textContent = `${r.file} · ${r.width}×${r.height}`;
    $("status").textContent = `Top-${r.predictions.length}${tenCrop ? " (10-crop)" : ""} in ` +
      `${Math.round(performance.now() - t0)} ms`;
    document.body.dataset.state = "done";
  } catch (e) {
    show($("result"), false);
    $("status").textContent = "";
    setError(e.message);
    document.body.dataset.state = "error";
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => classify(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const file = [...(e.dataTransfer ? e.dataTransfer.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) classify(file); else setError("Drop an image file.");
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  loadModel()
    .then(() => { document.body.dataset.model = "ready"; })
    .catch((e) => { $("model-summary").textContent = ""; setError(`Cannot load the model: ${e.message}`); });
}

document.addEventListener("DOMContentLoaded", setup);
