// pixelmine web UI: plain JavaScript over the HTTP API, no build step, no network beyond this server.
// Every value from the workspace is inserted as text (never as HTML).
"use strict";

const state = { token: null, facets: null, gallery: { offset: 0, limit: 60 }, review: { kind: null, offset: 0, selected: 0 } };
const view = document.getElementById("view");
const PAGE = 60;

// ---------- helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const short = (id) => (id || "").slice(0, 10);
const pct = (p) => (p === null || p === undefined ? "–" : (100 * p).toFixed(1) + " %");
const thumb = (id, size = 256) => `/images/${id}/thumbnail?size=${size}`;

function notify(message, error = false) {
  const box = document.getElementById("notice");
  const msg = h("div", { class: "msg" + (error ? " error" : "") }, message);
  box.append(msg);
  setTimeout(() => msg.remove(), error ? 8000 : 3500);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.write) {
    if (!state.token) { askToken(); throw new Error("set the token first (the one pixelmine serve printed)"); }
    headers["Authorization"] = "Bearer " + state.token;
  }
  let body = options.body;
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(options.json); }
  const response = await fetch(path, { method: options.method || "GET", headers, body });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const err = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    err.status = response.status;
    if (response.status === 401 || response.status === 403) askToken();
    throw err;
  }
  return data;
}

function emptyBox(message, command) {
  return h("div", { class: "empty" }, message, command ? [" ", h("code", {}, command)] : null);
}

function errorBox(err) {
  return h("div", { class: "empty", role: "alert" }, err.message);
}

// ---------- token ----------
function loadToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    localStorage.setItem("pixelmine-token", state.token);
    history.replaceState(null, "", location.pathname + "#/gallery");
  } else {
    state.token = localStorage.getItem("pixelmine-token");
  }
}
function askToken() {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-input").value = state.token || "";
  if (!dialog.open) dialog.showModal();
}
document.getElementById("token-button").addEventListener("click", askToken);
document.getElementById("token-form").addEventListener("submit", (event) => {
  if (event.submitter && event.submitter.value === "save") {
    state.token = document.getElementById("token-input").value.trim() || null;
    if (state.token) localStorage.setItem("pixelmine-token", state.token); else localStorage.removeItem("pixelmine-token");
    notify(state.token ? "token saved" : "token removed");
  }
});

// ---------- corrections (shared by detail, review) ----------
async function correct(imageId, action, label) {
  const json = { action };
  if (action === "relabel") json.label = label;
  const result = await api(`/labels/${imageId}`, { method: "POST", json, write: true });
  const what = action === "ignore" ? "excluded from training" : action === "accept" ? `label '${result.effective_label}' confirmed` : `relabelled '${result.effective_label}'`;
  notify(`${short(imageId)}: ${what}`);
  state.facets = null;
  return result;
}

function labelInput(id, value, placeholder) {
  const labels = (state.facets && state.facets.labels) || [];
  return [h("input", { id, list: id + "-list", value: value || "", placeholder: placeholder || "new label", "aria-label": "new label", size: 14 }),
          h("datalist", { id: id + "-list" }, labels.map((l) => h("option", { value: l })))];
}

// ---------- detail dialog ----------
function tagsText(tags) {
  if (!tags || !tags.items || !tags.items.length) return h("span", { class: "muted" }, (tags && tags.note) || "none");
  return `${tags.items.map((t) => `${t.label} ${t.probability.toFixed(2)}`).join(" · ")} (${tags.backbone})`;
}

function predictionText(p) {
  if (!p || !p.label) return h("span", { class: "muted" }, (p && (p.note || p.error)) || "no model");
  return [`${p.label} ${p.probability.toFixed(2)} by ${p.model}`,
    p.uncertain ? h("span", { class: "badge bad" }, "uncertain") : null,
    p.uncertain && p.reason ? h("span", { class: "muted" }, ` ${p.reason}`) : null];
}

async function openDetail(imageId) {
  const dialog = document.getElementById("detail");
  const body = document.getElementById("detail-body");
  body.replaceChildren(h("p", { class: "muted" }, "loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    await ensureFacets();
    const item = await api(`/images/${imageId}`);
    const labelBox = h("dd", { id: "detail-label" }, item.label ?? "(none)");
    const relabel = async (action) => {
      try {
        const value = document.getElementById("detail-new-label").value;
        const result = await correct(imageId, action, value);
        labelBox.textContent = result.ignored ? "(ignored: excluded from training)" : result.effective_label ?? "(none)";
        history.replaceChildren(...correctionRows([{ ...result }].concat(item.corrections)));
        item.corrections.unshift(result);
      } catch (err) { notify(err.message, true); }
    };
    const history = h("tbody", {}, correctionRows(item.corrections));
    body.replaceChildren(h("div", { class: "detail" },
      h("div", {}, item.status === "ok" ? [h("img", { id: "detail-image", src: thumb(imageId, 512), alt: `image ${short(imageId)}` }),
        item.prediction && item.prediction.label ? explainToggle(imageId) : null]
        : h("div", { class: "thumb no-thumb" }, `${item.status}: no preview`)),
      h("div", {},
        h("h2", { id: "detail-title" }, `Image ${short(imageId)}`),
        h("dl", { class: "kv" },
          h("dt", {}, "label"), labelBox,
          item.correction ? [h("dt", {}, "original label"), h("dd", {}, item.original_label ?? "(none)")] : null,
          h("dt", {}, "split"), h("dd", {}, item.split ?? "–"),
          h("dt", {}, "status"), h("dd", {}, item.status, item.error ? ` — ${item.error}` : ""),
          h("dt", {}, "size"), h("dd", {}, `${item.width}×${item.height} ${item.format} ${item.mode}, ${(item.size / 1024).toFixed(1)} KiB`),
          h("dt", {}, "paths"), h("dd", {}, item.paths.map((p) => h("div", {}, p.path, p.present ? "" : " (missing)"))),
          h("dt", {}, "findings"), h("dd", {}, item.findings.length ? item.findings.map((f) =>
            h("div", {}, h("span", { class: "badge" + (f.is_issue ? " bad" : "") }, f.kind), ` score ${f.score.toFixed(3)} `,
              f.details && f.details.reason ? h("span", { class: "muted" }, f.details.reason) : "")) : "none"),
          h("dt", {}, "tags"), h("dd", { id: "detail-tags" }, tagsText(item.tags)),
          h("dt", {}, "prediction"), h("dd", { id: "detail-prediction" }, predictionText(item.prediction))),
        h("div", { class: "relabel" }, labelInput("detail-new-label", ""),
          h("button", { class: "primary", type: "button", id: "detail-relabel", onclick: () => relabel("relabel") }, "Relabel"),
          h("button", { type: "button", onclick: () => relabel("accept") }, "Accept label"),
          h("button", { type: "button", class: "danger", onclick: () => relabel("ignore") }, "Ignore")),
        h("h2", {}, "Corrections"),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "when"), h("th", {}, "action"), h("th", {}, "from"), h("th", {}, "to"))), history))));
    document.getElementById("detail-new-label").focus();
  } catch (err) { body.replaceChildren(errorBox(err)); }
}
// Where the served model looks: the photo, its class map, or why this class rather than the runner-up.
function explainToggle(imageId) {
  const note = h("div", { class: "muted", id: "detail-explain-note" }, "");
  const select = h("select", { id: "detail-view", "aria-label": "what the picture shows" },
    h("option", { value: "photo" }, "photo"), h("option", { value: "class" }, "where the model looks"),
    h("option", { value: "contrastive" }, "why not the runner-up"));
  select.onchange = async () => {
    const img = document.getElementById("detail-image");
    if (select.value === "photo") { img.src = thumb(imageId, 512); note.textContent = ""; return; }
    note.textContent = "explaining…";
    try {
      const info = await api(`/images/${imageId}/explanation`);
      const contrastive = select.value === "contrastive";
      await new Promise((resolve, reject) => {
        img.onload = resolve; img.onerror = () => reject(new Error("the overlay could not be drawn"));
        img.src = `/images/${imageId}/explanation?format=png${contrastive ? "&contrastive=true" : ""}`;
      });
      note.textContent = `${info.method} map of ${info.label} (${(info.probability * 100).toFixed(0)}%)` +
        (contrastive && info.runner_up ? ` rather than ${info.runner_up}` : "") + "; red = strongest evidence";
    } catch (err) { note.textContent = err.message; select.value = "photo"; img.src = thumb(imageId, 512); }
  };
  return h("div", { class: "explain-toggle" }, h("label", {}, "show ", select), note);
}
function correctionRows(rows) {
  if (!rows.length) return [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "none yet"))];
  return rows.map((c) => h("tr", { class: "correction" }, h("td", {}, (c.created_at || "").replace("T", " ").slice(0, 19)),
    h("td", {}, c.action), h("td", {}, c.old_label ?? "–"), h("td", {}, c.new_label ?? "–")));
}

function tile(item, caption) {
  const id = item.id || item.image_id;
  // Images that cannot be decoded have no thumbnail: show their status instead of a broken image.
  const picture = item.status && item.status !== "ok"
    ? h("div", { class: "thumb no-thumb", role: "img", "aria-label": `image ${short(id)}: ${item.status}` }, item.status.replaceAll("_", " "))
    : h("img", { src: thumb(id), alt: `image ${short(id)}`, loading: "lazy", width: 150, height: 150 });
  return h("button", { class: "tile", type: "button", dataset: { id }, title: "open (Enter)", onclick: () => openDetail(id) },
    picture, h("span", { class: "cap" }, caption));
}

async function ensureFacets() {
  if (!state.facets) state.facets = await api("/facets");
  return state.facets;
}

// ---------- gallery ----------
async function renderGallery(params, turn) {
  const facets = await ensureFacets();
  const filters = ["label", "split", "status", "finding", "cluster"];
  const options = { label: facets.labels, split: facets.splits, status: facets.statuses, finding: facets.findings, cluster: facets.clusters };
  const offset = Number(params.get("offset") || 0);
  const query = new URLSearchParams({ limit: PAGE, offset });
  for (const name of filters) if (params.get(name)) query.set(name, params.get(name));
  const data = await api("/images?" + query);
  const apply = () => {
    const next = new URLSearchParams();
    for (const name of filters) { const value = document.getElementById("filter-" + name).value; if (value) next.set(name, value); }
    location.hash = "#/gallery?" + next;
  };
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    filters.map((name) => h("label", {}, name,
      h("select", { id: "filter-" + name, name, onchange: apply },
        h("option", { value: "" }, "any"),
        (options[name] || []).map((v) => h("option", { value: v, selected: params.get(name) === String(v) }, v))))));
  const page = (delta) => { const next = new URLSearchParams(params); next.set("offset", Math.max(0, offset + delta)); location.hash = "#/gallery?" + next; };
  const pager = (where) => h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0, onclick: () => page(-PAGE), "aria-label": "previous page" }, "← Previous"),
    h("span", { class: "count", id: where === "top" ? "gallery-count" : null }, data.total ? `${offset + 1}–${offset + data.items.length} of ${data.total.toLocaleString()}` : "no images match"),
    h("button", { type: "button", disabled: offset + PAGE >= data.total, onclick: () => page(PAGE), "aria-label": "next page" }, "Next →"));
  const grid = h("div", { class: "grid", id: "gallery-grid" }, data.items.map((item) =>
    tile(item, [h("b", {}, item.label ?? "(unlabelled)"), " ",
      item.correction ? h("span", { class: "badge good" }, item.correction) : "",
      item.status !== "ok" ? h("span", { class: "badge bad" }, item.status) : "", item.split ? h("span", { class: "badge" }, item.split) : ""])));
  show(turn, h("h1", {}, "Gallery"), form, pager("top"), data.total ? grid : emptyBox("No images match these filters.", null),
    ...(data.items.length > 20 ? [pager("bottom")] : []));
}

// ---------- duplicates ----------
async function renderDuplicates(params, turn) {
  const offset = Number(params.get("offset") || 0);
  const data = await api(`/duplicates?limit=20&offset=${offset}`);
  if (!data.total) {
    show(turn, h("h1", {}, "Duplicate groups"), emptyBox("No duplicate groups yet. Find them with", "pixelmine discover"));
    return;
  }
  const groups = data.items.map((group, n) => h("section", { class: "group", "aria-label": `group ${offset + n + 1}` },
    h("h2", {}, `Group ${offset + n + 1}: ${group.images.length} images `, h("span", { class: "badge" + (group.kind === "exact_duplicate" ? " warn" : "") }, group.kind.replaceAll("_", " "))),
    h("div", { class: "row" }, group.images.map((img) => h("figure", {},
      h("button", { class: "tile", type: "button", onclick: () => openDetail(img.image_id), dataset: { id: img.image_id } },
        h("img", { src: thumb(img.image_id), alt: `image ${short(img.image_id)}`, loading: "lazy" })),
      h("figcaption", {}, h("b", {}, img.label ?? ""), img.keeper ? h("span", { class: "badge good" }, "keep") : "",
        " ", img.path ? img.path.split("/").slice(-2).join("/") : img.reason || "")))))) ;
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0, onclick: () => (location.hash = `#/duplicates?offset=${Math.max(0, offset - 20)}`) }, "← Previous"),
    h("span", {}, `groups ${offset + 1}–${offset + data.items.length} of ${data.total}`),
    h("button", { type: "button", disabled: offset + 20 >= data.total, onclick: () => (location.hash = `#/duplicates?offset=${offset + 20}`) }, "Next →"));
  show(turn, h("h1", {}, "Duplicate groups"), pager, ...groups);
}

// ---------- review: outliers and label errors ----------
const REVIEW_KINDS = ["label_issue", "outlier", "class_outlier"];
async function renderReview(params, turn) {
  const facets = await ensureFacets();
  const kinds = REVIEW_KINDS.filter((k) => facets.findings.includes(k)).concat(facets.findings.filter((k) => !REVIEW_KINDS.includes(k) && !["cluster", "near_duplicate", "exact_duplicate"].includes(k)));
  if (!kinds.length) {
    show(turn, h("h1", {}, "Outliers & label errors"), emptyBox("No findings yet. Run the finders with", "pixelmine discover"));
    return;
  }
  const kind = kinds.includes(params.get("kind")) ? params.get("kind") : kinds[0];
  const offset = Number(params.get("offset") || 0);
  const data = await api(`/findings?kind=${encodeURIComponent(kind)}&limit=25&offset=${offset}`);
  const tabs = h("div", { class: "tabs", role: "tablist" }, kinds.map((k) =>
    h("button", { type: "button", role: "tab", "aria-selected": String(k === kind), onclick: () => (location.hash = `#/review?kind=${k}`) }, k.replaceAll("_", " "))));
  const items = data.items.map((f, n) => reviewItem(f, n));
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0, onclick: () => (location.hash = `#/review?kind=${kind}&offset=${Math.max(0, offset - 25)}`) }, "← Previous"),
    h("span", {}, data.total ? `${offset + 1}–${offset + data.items.length} of ${data.total} flagged, worst first` : "nothing flagged"),
    h("button", { type: "button", disabled: offset + 25 >= data.total, onclick: () => (location.hash = `#/review?kind=${kind}&offset=${offset + 25}`) }, "Next →"));
  if (!show(turn, h("h1", {}, "Outliers & label errors"), tabs,
    h("p", { class: "muted" }, "Keys: j/k move, a accept the current label, r relabel (to the suggestion or the typed label), i ignore (exclude from training), Enter open."),
    pager, h("div", { id: "review-list" }, items))) return;
  state.review.selected = 0;
  selectReview(0, false);
}
function reviewItem(f, n) {
  const suggested = f.details && f.details.suggested_label;
  const status = h("span", { class: "review-status" }, f.correction ? h("span", { class: "badge good" }, f.correction) : "");
  const inputId = `review-label-${n}`;
  const act = async (action) => {
    try {
      const typed = document.getElementById(inputId).value.trim();
      const result = await correct(f.image_id, action, typed || suggested);
      status.replaceChildren(h("span", { class: "badge good" }, action + (action === "relabel" ? ` → ${result.effective_label}` : "")));
      label.textContent = result.ignored ? "(ignored)" : result.effective_label ?? "(none)";
    } catch (err) { notify(err.message, true); }
  };
  const label = h("b", {}, f.label ?? "(none)");
  return h("article", { class: "review-item", dataset: { id: f.image_id, index: n }, tabindex: "-1" },
    h("button", { class: "tile", type: "button", onclick: () => openDetail(f.image_id) }, h("img", { src: thumb(f.image_id), alt: `image ${short(f.image_id)}`, loading: "lazy" })),
    h("div", {}, h("div", {}, "label ", label, suggested && suggested !== f.label ? [" · suggested ", h("b", {}, suggested)] : "", " ", status),
      h("div", { class: "why" }, `score ${f.score.toFixed(3)} (low = severe) · `, (f.details && (f.details.reason || f.details.threshold)) || "")),
    h("div", { class: "actions" }, labelInput(inputId, "", suggested),
      h("button", { type: "button", "data-action": "accept", onclick: () => act("accept") }, "Accept"),
      h("button", { type: "button", class: "primary", "data-action": "relabel", onclick: () => act("relabel"), title: "relabel to the typed label, or to the suggestion" }, "Relabel"),
      h("button", { type: "button", class: "danger", "data-action": "ignore", onclick: () => act("ignore") }, "Ignore")));
}
function selectReview(index, focus = true) {
  const items = [...document.querySelectorAll(".review-item")];
  if (!items.length) return;
  state.review.selected = Math.max(0, Math.min(items.length - 1, index));
  items.forEach((el, i) => el.classList.toggle("selected", i === state.review.selected));
  if (focus) { items[state.review.selected].focus(); items[state.review.selected].scrollIntoView({ block: "nearest" }); }
}
document.addEventListener("keydown", (event) => {
  if (!location.hash.startsWith("#/review") || document.querySelector("dialog[open]")) return;
  if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const items = [...document.querySelectorAll(".review-item")];
  const current = items[state.review.selected];
  const press = (action) => current && current.querySelector(`[data-action="${action}"]`).click();
  switch (event.key) {
    case "j": selectReview(state.review.selected + 1); break;
    case "k": selectReview(state.review.selected - 1); break;
    case "a": press("accept"); break;
    case "r": press("relabel"); break;
    case "i": press("ignore"); break;
    case "Enter": if (current && document.activeElement === current) openDetail(current.dataset.id); else return; break;
    default: return;
  }
  event.preventDefault();
});

// ---------- cluster map ----------
async function renderMap(params, turn) {
  let data;
  try { data = await api("/map?limit=20000"); } catch (err) {
    if (err.status === 409) { show(turn, h("h1", {}, "Cluster map"), emptyBox(err.message)); return; }
    throw err;
  }
  const canvas = h("canvas", { id: "map-canvas", role: "img", "aria-label": `map of ${data.points.length} images; hover a point to see the image, click to open it` });
  const clusters = [...new Set(data.points.map((p) => p.cluster))];
  const colour = (c) => `hsl(${(clusters.indexOf(c) * 137.5) % 360} 65% 45%)`;
  const legend = h("div", { class: "legend" }, clusters.slice(0, 40).map((c) => h("span", {}, h("i", { style: `background:${colour(c)}` }), c === null ? "no cluster" : `cluster ${c}`)));
  if (!show(turn, h("h1", {}, "Cluster map"), h("p", { class: "muted" }, `${data.points.length.toLocaleString()} of ${data.total.toLocaleString()} images (${data.method}); colour = cluster. Hover shows the image; click opens it.`),
    h("div", { id: "map-wrap" }, canvas), legend)) return;
  const xs = data.points.map((p) => p.x), ys = data.points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  let placed = [];
  const draw = () => {
    const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth, hgt = canvas.clientHeight;
    canvas.width = w * ratio; canvas.height = hgt * ratio;
    const ctx = canvas.getContext("2d"); ctx.scale(ratio, ratio); ctx.clearRect(0, 0, w, hgt);
    const px = (x) => 12 + (x - x0) / ((x1 - x0) || 1) * (w - 24), py = (y) => 12 + (1 - (y - y0) / ((y1 - y0) || 1)) * (hgt - 24);
    placed = data.points.map((p) => ({ p, x: px(p.x), y: py(p.y) }));
    for (const q of placed) { ctx.fillStyle = colour(q.p.cluster); ctx.beginPath(); ctx.arc(q.x, q.y, 3, 0, 6.283); ctx.fill(); }
  };
  draw();
  window.addEventListener("resize", draw, { once: true });
  const card = document.getElementById("hover-card");
  const nearest = (event) => {
    const r = canvas.getBoundingClientRect(), mx = event.clientX - r.left, my = event.clientY - r.top;
    let best = null, bestD = 64;
    for (const q of placed) { const d = (q.x - mx) ** 2 + (q.y - my) ** 2; if (d < bestD) { bestD = d; best = q; } }
    return best;
  };
  canvas.addEventListener("mousemove", (event) => {
    const q = nearest(event);
    if (!q) { card.hidden = true; return; }
    card.hidden = false;
    card.style.left = event.clientX + 14 + "px"; card.style.top = event.clientY + 14 + "px";
    const img = card.querySelector("img"); const src = thumb(q.p.image_id, 128);
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    card.querySelector("span").textContent = `${q.p.label ?? "(unlabelled)"} · cluster ${q.p.cluster ?? "–"}`;
  });
  canvas.addEventListener("mouseleave", () => (card.hidden = true));
  canvas.addEventListener("click", (event) => { const q = nearest(event); if (q) openDetail(q.p.image_id); });
}

// ---------- upload and predict ----------
function renderUpload(params, turn) {
  const input = h("input", { type: "file", id: "upload-input", accept: "image/*", "aria-label": "image to classify" });
  const result = h("div", { id: "upload-result" });
  const zone = h("div", { class: "dropzone" }, h("p", {}, "Drop an image here, or choose one: "), input);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); });
  input.addEventListener("change", () => input.files[0] && send(input.files[0]));
  async function send(file) {
    result.replaceChildren(h("p", { class: "muted" }, `classifying ${file.name}…`));
    const form = () => { const f = new FormData(); f.append("file", file, file.name); return f; };
    const [prediction, similar] = await Promise.allSettled([
      api("/predict", { method: "POST", body: form() }), api("/similar?k=12", { method: "POST", body: form() })]);
    const preview = h("img", { class: "thumb", alt: file.name, src: URL.createObjectURL(file) });
    let left;
    if (prediction.status === "fulfilled") {
      const p = prediction.value.predictions[0];
      left = h("div", { id: "prediction" },
        h("div", { class: "muted" }, `model ${p.model}`),
        h("div", { class: "label", id: "predicted-label" }, p.label),
        h("div", {}, `probability ${pct(p.probability)} `, p.uncertain ? h("span", { class: "badge warn", title: p.reason || "" }, "uncertain") : h("span", { class: "badge good" }, "confident")),
        p.reason ? h("p", { class: "muted" }, p.reason) : null,
        h("h2", {}, "Top classes"),
        p.top_k.map((t) => h("div", {}, `${t.label} — ${pct(t.probability)}`, h("div", { class: "bar" }, h("span", { style: `width:${(100 * t.probability).toFixed(1)}%` })))));
    } else {
      left = h("div", { id: "prediction", role: "alert" }, h("b", {}, "No prediction: "), prediction.reason.message);
    }
    let right;
    if (similar.status === "fulfilled") {
      right = h("div", { class: "grid", id: "similar-grid" }, similar.value.neighbors.map((n) =>
        tile({ id: n.image_id }, [h("b", {}, n.label ?? ""), ` ${n.similarity.toFixed(3)}`])));
    } else right = h("div", { class: "empty" }, "No similar images: ", similar.reason.message);
    result.replaceChildren(h("section", { class: "prediction" }, preview, left), h("h2", {}, "Most similar catalogue images"), right);
  }
  show(turn, h("h1", {}, "Predict an image"), zone, result);
}

// ---------- runs and models ----------
async function renderOverview(params, turn) {
  const [models, runs] = await Promise.all([api("/models"), api("/runs?limit=100")]);
  const modelTable = models.length ? h("table", { id: "models-table" },
    h("thead", {}, h("tr", {}, ["name", "status", "kind", "head", "backbone", "classes", "test accuracy", "macro-F1", "created"].map((c) => h("th", {}, c)))),
    h("tbody", {}, models.map((m) => h("tr", {}, h("td", {}, m.name), h("td", {}, m.status), h("td", {}, m.kind ?? ""), h("td", {}, m.head ?? ""),
      h("td", {}, m.backbone ?? ""), h("td", {}, (m.classes || []).join(", ")), h("td", {}, m.accuracy != null ? pct(m.accuracy) : "–"),
      h("td", {}, m.macro_f1 != null ? m.macro_f1.toFixed(3) : "–"), h("td", {}, (m.created_at || "").slice(0, 19).replace("T", " "))))))
    : emptyBox("No model trained yet. Train one with", "pixelmine train");
  const runTable = h("table", { id: "runs-table" },
    h("thead", {}, h("tr", {}, ["id", "kind", "status", "started", "finished", "counts / metrics"].map((c) => h("th", {}, c)))),
    h("tbody", {}, runs.map((r) => h("tr", {}, h("td", {}, r.id), h("td", {}, r.kind), h("td", {}, r.status),
      h("td", {}, (r.started_at || "").slice(0, 19).replace("T", " ")), h("td", {}, (r.finished_at || "").slice(0, 19).replace("T", " ")),
      h("td", { class: "muted" }, summarise(r.counts, r.metrics))))));
  show(turn, h("h1", {}, "Runs & models"), h("p", {}, h("a", { href: "/report" }, "Open the HTML report"), " · ", h("a", { href: "/docs" }, "API docs")),
    h("h2", {}, "Models"), modelTable, h("h2", {}, "Runs"), runs.length ? runTable : emptyBox("No runs yet. Start with", "pixelmine ingest photos/"));
}
function summarise(counts, metrics) {
  const parts = [];
  for (const [k, v] of Object.entries(counts || {})) if (typeof v !== "object") parts.push(`${k} ${v}`);
  for (const [k, v] of Object.entries(metrics || {})) if (typeof v === "number") parts.push(`${k} ${Number.isInteger(v) ? v : v.toFixed(3)}`);
  return parts.slice(0, 8).join(" · ");
}

// ---------- what to label next ----------
async function renderSuggest(params, turn) {
  const pool = params.get("pool") || "unlabelled";
  const n = Number(params.get("n") || 50);
  const items = await api(`/suggestions?n=${n}&pool=${encodeURIComponent(pool)}`);
  const form = h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "pool", h("select", { id: "suggest-pool", onchange: (e) => (location.hash = `#/suggest?pool=${e.target.value}&n=${n}`) },
      ["unlabelled", "review", "all"].map((v) => h("option", { value: v, selected: v === pool }, v)))),
    h("a", { href: `/suggestions/manifest?n=${n}&pool=${encodeURIComponent(pool)}`, id: "suggest-manifest", download: "to-label.csv" },
      "Download as a CSV manifest to fill in"));
  const intro = h("p", { class: "muted" }, "Uncertain for the current model, one per cluster of the pool first: label these and train again. ",
    "Ingest a filled-in manifest with ", h("code", {}, "pixelmine ingest --manifest to-label.csv"), ".");
  if (!items.length) {
    show(turn, h("h1", {}, "Label next"), form, emptyBox(`Nothing to suggest: the ${pool} pool is empty.`, null));
    return;
  }
  const grid = h("div", { class: "grid", id: "suggest-grid" }, items.map((s) =>
    tile(s, [h("b", {}, `#${s.rank}`), " ", s.predicted_label ? `${s.predicted_label}?` : "", " ",
      s.margin != null ? h("span", { class: "badge warn", title: s.reason }, `margin ${s.margin.toFixed(2)}`) : h("span", { class: "badge" }, `cluster ${s.cluster}`)])));
  show(turn, h("h1", {}, "Label next"), intro, form, grid);
}

// ---------- words: text search and zero-shot labels ----------
async function renderSearch(params, turn) {
  const q = (params.get("q") || "").trim();
  document.getElementById("search-input").value = q;
  const parts = [h("h1", {}, "Words")];
  if (q) {
    const data = await api(`/search?q=${encodeURIComponent(q)}&k=${PAGE}`);
    parts.push(h("p", { class: "muted", id: "search-method" }, `${data.hits.length} images for “${q}” (${data.method} on ${data.backbone})`,
      data.concepts.length ? " — read as: " + data.concepts.map(([name, sim]) => `${name} (${sim.toFixed(2)})`).join(", ") : ""));
    if (data.note) parts.push(h("div", { class: "empty", id: "search-note", role: "note" }, data.note));
    parts.push(data.hits.length
      ? h("div", { class: "grid", id: "search-grid" }, data.hits.map((hit) =>
          tile(hit, [h("b", {}, `#${hit.rank}`), " ", hit.label ?? "(unlabelled)", " ", h("span", { class: "badge" }, hit.score.toFixed(3))])))
      : emptyBox(`No image matches “${q}”.`, null));
  } else {
    parts.push(emptyBox("Type what you are looking for in the search box above, e.g. “a cup of coffee”.", null));
  }
  parts.push(await zeroShotPanel());
  show(turn, ...parts);
}

async function zeroShotPanel() {
  const input = h("input", { type: "text", id: "zero-shot-labels", placeholder: "cat, dog, car", "aria-label": "labels, comma-separated" });
  const asLabels = h("input", { type: "checkbox", id: "zero-shot-as-labels" });
  const out = h("div", { id: "zero-shot-result" });
  const paint = (data) => {
    const ev = data.evaluation;
    out.replaceChildren(
      h("p", {}, `run ${data.run_id}: ${data.images} images (${data.method} on ${data.backbone}) — `,
        Object.entries(data.counts).map(([label, n]) => `${label} ${n}`).join(", "),
        ev ? ` — accuracy against the labels the images carry ${pct(ev.metrics.accuracy)} on ${ev.n}` : "",
        data.pseudo_labels ? ` — ${data.pseudo_labels} pseudo-labels recorded` : ""),
      h("div", { class: "grid", id: "zero-shot-grid" }, data.items.map((p) =>
        tile(p, [h("b", {}, p.label), " ", h("span", { class: "badge" }, pct(p.probability))]))));
  };
  const run = async (event) => {
    event.preventDefault();
    const labels = input.value.split(",").map((x) => x.trim());
    try {
      paint(await api("/zero-shot", { method: "POST", write: true, json: { labels, as_labels: asLabels.checked } }));
      if (asLabels.checked) state.facets = null;
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  try { paint(await api("/zero-shot?limit=24")); } catch (err) { if (err.status !== 409 && err.status !== 404) out.replaceChildren(errorBox(err)); }
  return h("section", { class: "zero-shot" }, h("h2", {}, "Label from names alone (zero-shot)"),
    h("form", { class: "filters", id: "zero-shot-form", onsubmit: run },
      h("label", {}, "labels ", input), h("label", {}, asLabels, " record as labels for unlabelled images"),
      h("button", { type: "submit" }, "Label")), out);
}
document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("search-input").value.trim();
  location.hash = "#/search?" + new URLSearchParams(q ? { q } : {});
});

// ---------- live: arrivals of pixelmine watch and POST /ingest, drift ----------
let liveSource = null;
function closeLive() { if (liveSource) { liveSource.close(); liveSource = null; } }

function liveItem(e) {
  const time = (e.at || "").replace("T", " ").slice(0, 19);
  if (e.type === "drift" || e.type === "alarm") {
    return h("li", { class: "live-item" + (e.alarm || e.type === "alarm" ? " alarm" : ""), dataset: { type: e.type } },
      h("div", {}, h("b", {}, e.type === "alarm" ? "Drift alarm" : "Drift check"), ` ${time} — `, (e.reasons || []).join("; ") || "no drift"));
  }
  const name = (e.path || "").split("/").pop();
  const ok = e.image_id && (!e.status || e.status === "ok");
  const picture = ok ? h("img", { src: thumb(e.image_id, 128), alt: `image ${short(e.image_id)}`, loading: "lazy" })
    : h("div", { class: "no-thumb thumb", role: "img", "aria-label": e.status || e.type }, (e.status || e.type || "").replaceAll("_", " "));
  const prediction = e.label ? [h("b", {}, e.label), " ", pct(e.probability)] : (e.type === "missing" ? "deleted" : "");
  return h("li", { class: "live-item", dataset: { type: e.type, id: e.id } },
    ok ? h("button", { type: "button", class: "tile-link", onclick: () => openDetail(e.image_id), title: "open" }, picture) : picture,
    h("div", {}, h("div", {}, name || short(e.image_id), " ", h("span", { class: "muted" }, time)),
      h("div", {}, prediction, " ", (e.flags || []).map((f) => h("span", { class: "badge warn" }, f)),
        e.status && e.status !== "ok" ? h("span", { class: "badge bad" }, e.status) : "")));
}

function driftPanel(report) {
  if (!report) return h("div", { class: "drift-panel", id: "drift-panel" }, "No drift check yet: ", h("code", {}, "pixelmine watch DIR"), " checks the arrivals against the training images.");
  const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  return h("div", { class: "drift-panel" + (report.alarm ? " alarm" : ""), id: "drift-panel" },
    h("b", {}, report.alarm ? "Drift: the arrivals differ from the reference" : "No significant drift"),
    h("div", {}, `window ${report.n_window ?? "–"} arrivals; domain classifier AUC ${fmt(report.auc)} (threshold ${fmt(report.auc_threshold)}); MMD p ${fmt(report.mmd_p_value)}; uncertain ${pct(report.uncertain_share)}, novel ${pct(report.novel_share)}`),
    (report.reasons || []).length ? h("ul", {}, report.reasons.map((r) => h("li", {}, r))) : "");
}

async function renderLive(params, turn) {
  closeLive();
  const recent = await api("/events/recent?limit=60");
  const list = h("ul", { class: "live-list", id: "live-list" }, recent.items.filter((e) => e.type !== "drift").map(liveItem));
  let panel = driftPanel(recent.drift);
  const status = h("p", { class: "muted", id: "live-status" }, "connecting…");
  if (!show(turn, h("h1", {}, "Live"), status, panel, list)) return;
  liveSource = new EventSource(`/events?after=${recent.latest_id}`);
  liveSource.onopen = () => { status.textContent = "live: new arrivals appear at the top"; };
  liveSource.onerror = () => { status.textContent = "reconnecting…"; };
  const add = (event) => {
    const e = JSON.parse(event.data);
    if (e.type === "drift" || e.type === "alarm") {
      const fresh = driftPanel(e.type === "alarm" ? Object.assign({ alarm: true }, e) : e);
      panel.replaceWith(fresh); panel = fresh;
      if (e.type === "drift") return;
    }
    list.prepend(liveItem(e));
    while (list.children.length > 200) list.lastChild.remove();
  };
  for (const type of ["image", "missing", "error", "drift", "alarm", "watch_started", "watch_stopped"]) liveSource.addEventListener(type, add);
}
window.addEventListener("hashchange", () => { if (!location.hash.startsWith("#/live")) closeLive(); });

// ---------- router ----------
const routes = { gallery: renderGallery, duplicates: renderDuplicates, review: renderReview, suggest: renderSuggest, map: renderMap, upload: renderUpload, overview: renderOverview, search: renderSearch, live: renderLive };
// A slow render of a page the user already left must not paint over the page they are on now.
let currentTurn = 0;
function show(turn, ...nodes) {
  if (turn !== currentTurn) return false;
  view.replaceChildren(...nodes);
  return true;
}
async function route() {
  const turn = ++currentTurn;
  const [name, query] = location.hash.replace(/^#\/?/, "").split("?");
  const key = routes[name] ? name : "gallery";
  document.querySelectorAll("nav a").forEach((a) => a.dataset.view === key ? a.setAttribute("aria-current", "page") : a.removeAttribute("aria-current"));
  document.getElementById("hover-card").hidden = true;
  try { await routes[key](new URLSearchParams(query || ""), turn); }
  catch (err) { show(turn, errorBox(err)); }
  document.title = `pixelmine — ${key}`;
}
document.getElementById("detail").addEventListener("close", () => { if (location.hash.startsWith("#/gallery") || location.hash.startsWith("#/review")) route(); });
window.addEventListener("hashchange", route);
loadToken();
route();
