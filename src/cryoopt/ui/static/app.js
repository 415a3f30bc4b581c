// The cryoopt campaign page: renders /api/state, follows /api/events, writes through the API.
"use strict";

let state = null;
let selected = null;
let effectsVersion = null;

const $ = (sel) => document.querySelector(sel);
const fmt = (v) => (v === null || v === undefined) ? "-" : (typeof v === "number" ? Number(v.toPrecision(4)).toString() : String(v));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
    throw new Error(detail || res.statusText);
  }
  return data;
}

function unitOf(name) { return state.units[name] ? ` (${state.units[name]})` : ""; }

function renderStatus() {
  const c = state.counts;
  const paused = (state.paused ? " — PAUSED by the operator" : "") +
    (state.bench_paused ? ` — bench paused: ${state.bench_paused}` : "");
  $("#title").textContent = `cryoopt: ${state.name}`;
  $("#status").textContent = `${state.state}${paused} · experiments ${state.started}/${state.budget} · completed ${c.completed || 0}` +
    ` · failed ${c.failed || 0} · running ${c.running || 0} · queued ${(c.proposed || 0) + state.queued_requests}`;
  $("#pause").textContent = state.paused ? "Unpause" : "Pause";
  $("#pause").dataset.paused = state.paused ? "1" : "0";
}

function renderRecommendation() {
  const r = state.recommendation;
  if (!r) { $("#rec-body").textContent = "No feasible completed trial yet."; return; }
  const rows = Object.keys(state.objectives).map((n) => {
    const iv = r.interval[n];
    return `<tr><td>${esc(n)}${esc(unitOf(n))}, ${state.objectives[n]}</td><td>${fmt(r.expected[n])}</td>` +
      `<td>${iv ? fmt(iv[0]) + " to " + fmt(iv[1]) : "-"}</td><td>${fmt(r.observed[n])}</td></tr>`;
  }).join("");
  const params = Object.entries(r.params).map(([k, v]) => `${esc(k)} = ${fmt(v)}${esc(state.units[k] ? " " + state.units[k] : "")}`).join(", ");
  const basis = r.basis === "model" ? "GP posterior mean (replicates pooled) with its 95 % interval" : "observed mean of its runs";
  const best = state.best_observed ? `<p class="note">Not to be confused with the ${esc(state.best_observed.label)}: trial ${state.best_observed.trial}, one run.</p>` : "";
  $("#rec-body").innerHTML = `<p data-testid="rec-line">Adopt the protocol of <b>trial ${r.trial_id}</b>` +
    ` (${r.n_replicates} run${r.n_replicates === 1 ? "" : "s"}: ${r.trial_ids.join(", ")}); expected from the ${basis}:</p>` +
    `<table><thead><tr><th>objective</th><th>expected</th><th>95 % interval</th><th>observed mean</th></tr></thead><tbody>${rows}</tbody></table>` +
    `<p>${params}</p>${best}`;
}

function renderTrials() {
  const names = Object.keys(state.objectives);
  const pnames = state.parameters.map((p) => p.name);
  const recIds = new Set(state.recommendation ? state.recommendation.trial_ids : []);
  $("#trials thead").innerHTML = "<tr>" + ["trial", "status", "source", ...names, "rating", "sections", "time (s)", ...pnames]
    .map((h) => `<th>${esc(h)}${esc(unitOf(h))}</th>`).join("") + "</tr>";
  $("#trials tbody").innerHTML = state.trials.slice().reverse().map((t) =>
    `<tr data-trial="${t.id}" class="${recIds.has(t.id) ? "rec" : ""}" title="${esc(t.error || "")}">` +
    [t.id, t.status, t.source, ...names.map((n) => t.values[n]), t.rating, t.sections, t.duration_s, ...pnames.map((p) => t.params[p])]
      .map((v) => `<td>${esc(fmt(v))}</td>`).join("") + "</tr>").join("");
  for (const tr of document.querySelectorAll("#trials tbody tr")) {
    tr.addEventListener("click", () => selectTrial(Number(tr.dataset.trial)));
  }
}

function renderFigures() {
  const cfg = {responsive: true, displaylogo: false};
  for (const name of ["convergence", "pareto", "parallel"]) {
    const el = $(`#fig-${name}`);
    const fig = state.figures[name];
    if (!fig) { el.hidden = true; continue; }
    el.hidden = false;
    Plotly.react(el, fig.data, fig.layout, cfg);
  }
  if (effectsVersion !== state.version) {
    effectsVersion = state.version;
    api("/api/effects").then((r) => {
      if (r.figure) Plotly.react($("#fig-effects"), r.figure.data, r.figure.layout, cfg);
    }).catch(() => {});
  }
}

function stars(trial, section) {
  return [1, 2, 3, 4, 5].map((k) =>
    `<button type="button" data-trial="${trial}" data-section="${section || ""}" data-rating="${k}" title="rate ${k} of 5">${k}★</button>`).join("");
}

async function selectTrial(id) {
  selected = id;
  const t = await api(`/api/trials/${id}`);
  const box = $("#trial-detail");
  box.hidden = false;
  const vals = Object.entries(t.values).filter(([k]) => k in state.objectives).map(([k, v]) => `${k} = ${fmt(v)}`).join(", ");
  $("#detail-title").textContent = `Trial ${t.id} (${t.source}, ${t.status}) ${vals}`;
  const cards = t.sections.map((s) => {
    const scores = Object.entries(s.scores || {}).map(([k, v]) => `${esc(k)} ${esc(fmt(v))}`).join("<br>");
    const imgs = s.lm ? `<img alt="LM section ${s.section}" src="${s.lm}"><img alt="EM section ${s.section}" src="${s.em}">`
                      : `<div class="error">no image: the ribbon failed</div>`;
    return `<div class="section-card${s.failed ? " failed" : ""}" data-testid="section-${s.section}">` +
      `<div>section ${s.section} · reward ${fmt(s.reward)}${s.failed ? " · failed" : ""}</div>${imgs}<div>${scores}</div>` +
      `<div class="stars">${stars(t.id, s.section)}</div></div>`;
  }).join("");
  $("#detail-body").innerHTML = t.sections.length ? `<div class="sections">${cards}</div>`
    : "<p>No section images kept for this trial (the executor keeps them when it runs sample blocks).</p>";
  box.querySelector(".rate-trial .stars").innerHTML = stars(t.id, null);
  $("#detail-feedback").innerHTML = t.feedback.length ? "<h3>Feedback</h3><ul>" + t.feedback.map((f) =>
    `<li>rating ${f.rating}${f.note ? ": " + esc(f.note) : ""}${f.author ? " (" + esc(f.author) + ")" : ""}</li>`).join("") + "</ul>" : "";
  for (const b of box.querySelectorAll(".stars button")) b.addEventListener("click", () => rate(b));
}

async function rate(button) {
  const body = {trial: Number(button.dataset.trial), rating: Number(button.dataset.rating)};
  if (button.dataset.section) body.section = Number(button.dataset.section);
  const note = window.prompt(`Note for rating ${body.rating}${body.section ? " of section " + body.section : ""} (optional)`, "");
  if (note) body.note = note;
  try {
    await api("/api/feedback", body);
    await selectTrial(body.trial);
  } catch (err) { window.alert(err.message); }
}

function buildInjectForm() {
  const form = $("#inject");
  if (form.dataset.built) return;
  form.dataset.built = "1";
  form.innerHTML = state.parameters.map((p) => {
    const range = p.choices ? p.choices.join(" / ") : `${fmt(p.low)}–${fmt(p.high)}${p.unit ? " " + p.unit : ""}`;
    const input = p.choices
      ? `<select name="${p.name}"><option value="">(recommended)</option>${p.choices.map((c) => `<option>${esc(c)}</option>`).join("")}</select>`
      : `<input name="${p.name}" type="number" step="any" min="${p.low}" max="${p.high}">`;
    return `<label title="${esc(p.description || "")}">${esc(p.name)} <small>${esc(range)}</small>${input}</label>`;
  }).join("") + `<button type="submit" data-testid="inject-submit">Inject</button>`;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = {};
    for (const p of state.parameters) {
      const v = form.elements[p.name].value;
      if (v === "") continue;
      params[p.name] = p.choices ? v : (p.type === "int" ? parseInt(v, 10) : parseFloat(v));
    }
    try {
      const r = await api("/api/inject", {params});
      const filled = r.filled_from_recommendation.length ? ` (from the recommendation: ${r.filled_from_recommendation.join(", ")})` : "";
      $("#inject-result").innerHTML = `<span class="ok">request ${r.request} queued${esc(filled)}</span>`;
    } catch (err) { $("#inject-result").innerHTML = `<span class="error">${esc(err.message)}</span>`; }
  });
}

function updateInjectPlaceholders() {
  const r = state.recommendation;
  for (const p of state.parameters) {
    const el = $("#inject").elements[p.name];
    if (el && el.tagName === "INPUT") el.placeholder = r ? fmt(r.params[p.name]) : "";
  }
}

async function refresh() {
  state = await api("/api/state");
  renderStatus();
  renderRecommendation();
  renderTrials();
  renderFigures();
  buildInjectForm();
  updateInjectPlaceholders();
  if (selected !== null) selectTrial(selected).catch(() => {});
  document.body.dataset.version = state.version;
}

$("#pause").addEventListener("click", async () => {
  try {
    await api("/api/pause", {paused: $("#pause").dataset.paused !== "1"});
    await refresh();
  } catch (err) { window.alert(err.message); }
});

function live() {
  const es = new EventSource("/api/events");
  es.addEventListener("change", () => refresh().catch((err) => console.error(err)));
  es.onopen = () => $("#live").classList.add("on");
  es.onerror = () => $("#live").classList.remove("on");
}

refresh().then(live).catch((err) => { $("#status").textContent = "error: " + err.message; });
