// kag audit review page: plain JS, no dependencies. Every call carries the auditor key from sessionStorage.
"use strict";

const KEY_ITEM = "kag.auditKey";
const PAGE = 50;
const CONTEXT = 400; // characters of source text shown around a cited span
let offset = 0;
let filters = {};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function request(path) {
  const key = sessionStorage.getItem(KEY_ITEM);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const err = new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return response;
}

async function api(path) {
  const response = await request(path);
  return response.json();
}

function filterParams() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
  return params;
}

// the export needs the key in a header, so it is fetched and handed to the browser as a file
async function exportRecords(format) {
  const status = $("#export-status");
  const params = filterParams();
  params.set("format", format);
  status.className = "";
  status.textContent = `exporting ${format.toUpperCase()}…`;
  let response;
  try {
    response = await request(`/v1/audit/export?${params}`);
  } catch (err) {
    status.className = "error";
    status.textContent = `export failed: ${err.message}`;
    return;
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: match ? match[1] : `kag-audit.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status.textContent = "";
}

function principalLabel(rec) {
  return rec.principal_name ? `${rec.principal_name} (${rec.principal})` : rec.principal;
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

async function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  let me;
  try {
    me = await api("/v1/me");
  } catch (err) {
    sessionStorage.removeItem(KEY_ITEM);
    showLogin(err.message);
    return;
  }
  if (me.role !== "auditor" && me.role !== "admin") {
    sessionStorage.removeItem(KEY_ITEM);
    showLogin(`a ${me.role} key cannot read the audit log: use an auditor key`);
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").hidden = false;
  $("#who-name").textContent = `${me.name} (${me.role}: ${me.collections.join(", ")})`;
  checkChain();
  loadList();
}

async function checkChain() {
  const box = $("#chain");
  try {
    const report = await api("/v1/audit/verify");
    box.className = report.ok ? "chain ok" : "chain broken";
    box.textContent = report.ok
      ? `Hash chain intact: ${report.checked} records verified, head ${report.head_hash.slice(0, 16)}…${report.checkpoints ? `, ${report.checkpoints} signed checkpoints agree` : ""}`
      : `Hash chain BROKEN ${report.broken.id ? `at record ${report.broken.id} (seq ${report.broken.seq})` : "at its checkpoints"}: ${report.broken.reason}: ${report.broken.detail}`;
  } catch (err) {
    box.className = "chain broken";
    box.textContent = `Cannot verify the chain: ${err.message}`;
  }
}

function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : "";
}

async function loadList() {
  const params = filterParams();
  params.set("limit", PAGE);
  params.set("offset", offset);
  const tbody = $("#records tbody");
  let data;
  try {
    data = await api(`/v1/audit?${params}`);
  } catch (err) {
    tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 5, class: "error" }, err.message)));
    return;
  }
  tbody.replaceChildren(
    ...data.records.map((r) => {
      const verdicts = r.abstained
        ? "abstained"
        : `${r.supported}/${r.sentences} model sentences supported` + (r.replaced ? `, ${r.replaced} replaced by quotes` : "");
      const row = el(
        "tr",
        { "data-id": r.id, class: r.intact ? "" : "altered" },
        el("td", {}, new Date(r.created_at).toLocaleString()),
        el("td", { class: "principal" }, principalLabel(r)),
        el("td", {}, r.collections.join(", ")),
        el("td", { class: "question" }, r.question),
        el("td", { class: "verdicts" }, r.intact ? verdicts : `ALTERED: ${r.error}`),
      );
      row.addEventListener("click", () => showRecord(r.id, row));
      return row;
    }),
  );
  $("#empty").hidden = data.records.length > 0;
  $("#prev").disabled = offset === 0;
  $("#next").disabled = data.records.length + data.hidden < PAGE;
}

async function showPassage(citation, holder, button) {
  if (holder.dataset.loaded) {
    holder.hidden = !holder.hidden;
    button.textContent = holder.hidden ? "show source" : "hide source";
    return;
  }
  const start = Math.max(0, citation.char_start - CONTEXT);
  const end = citation.char_end + CONTEXT;
  let span;
  try {
    span = await api(`/v1/documents/${encodeURIComponent(citation.document_id)}/text?start=${start}&end=${end}`);
  } catch (err) {
    holder.replaceChildren(el("p", { class: "error" }, `source unavailable: ${err.message}`));
    holder.hidden = false;
    return;
  }
  const a = citation.char_start - span.start;
  const b = citation.char_end - span.start;
  const cited = span.text.slice(a, b);
  const passage = el(
    "div",
    { class: "passage" },
    span.start > 0 ? "…" : "",
    span.text.slice(0, a),
    el("mark", { class: "cited" }, cited),
    span.text.slice(b),
    span.end < span.length ? "…" : "",
  );
  const notes = [];
  if (cited !== citation.quote) {
    notes.push(el("p", { class: "changed" }, "The document changed since this answer: the recorded quote no longer sits at these offsets."));
  }
  holder.replaceChildren(
    el("div", { class: "where" }, `${citation.title || citation.document_id}${pageLabel(citation)} · characters ${citation.char_start}–${citation.char_end} · version ${span.version}`),
    passage,
    ...notes,
  );
  holder.dataset.loaded = "1";
  holder.hidden = false;
  button.textContent = "hide source";
}

function pageLabel(c) {
  // records written before citations carried `pages` have only `page`
  if (c.pages && c.pages[1] !== c.pages[0]) return `, pp. ${c.pages[0]}–${c.pages[1]}`;
  return c.page ? `, p. ${c.page}` : "";
}

// the rankings each retriever produced, then the fused and reranked orders, as the record holds them
function rankingsView(retrieval) {
  const lists = Object.entries((retrieval && retrieval.per_retriever) || {});
  for (const name of ["fused", "reranked"]) if (retrieval && retrieval[name]) lists.push([name, retrieval[name]]);
  if (!lists.length) return [el("p", {}, "no rankings recorded")];
  return [
    el(
      "div",
      { class: "rankings-grid" },
      ...lists.map(([name, hits]) =>
        el(
          "table",
          { class: "rankings", "data-retriever": name },
          el("caption", {}, `${name} (${hits.length})`),
          el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "chunk"), el("th", {}, "score"))),
          el(
            "tbody",
            {},
            ...hits.map(([chunk, score], i) =>
              el(
                "tr",
                {},
                el("td", {}, String(i + 1)),
                el("td", { class: "chunk", title: chunk }, chunk),
                el("td", { class: "score" }, Number(score).toFixed(4)),
              ),
            ),
          ),
        ),
      ),
    ),
  ];
}

function citationView(c) {
  const holder = el("div", { class: "source", hidden: true });
  const button = el("button", { type: "button", class: "expand" }, "show source");
  button.addEventListener("click", () => showPassage(c, holder, button));
  return el(
    "div",
    { class: "citation", "data-start": c.char_start, "data-end": c.char_end, "data-document": c.document_id },
    el("span", {}, `[${c.source}] ${c.title || c.document_id} `),
    el("q", { class: "quote" }, c.quote),
    " ",
    button,
    holder,
  );
}

async function showRecord(id, row) {
  document.querySelectorAll("#records tr.selected").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  const pane = $("#detail");
  pane.hidden = false;
  pane.replaceChildren(el("p", {}, "loading…"));
  let rec;
  try {
    rec = await api(`/v1/audit/${encodeURIComponent(id)}`);
  } catch (err) {
    pane.replaceChildren(el("p", { class: "error" }, err.message));
    return;
  }
  const b = rec.body;
  const verdicts = (b.verdicts || []).map((v) =>
    el(
      "div",
      { class: `sentence ${(v.action ? v.action === "kept" || v.action === "added" : v.supported) ? "supported" : "unsupported"}` },
      el("span", { class: "verdict" }, `${v.label || (v.supported ? "supported" : "unsupported")} · ${Number(v.score).toFixed(2)}`),
      el("div", { class: "text" }, v.text),
      v.original && v.original !== v.text ? el("div", { class: "original" }, el("small", {}, `model wrote: ${v.original}`)) : null,
      ...(v.citations || []).map(citationView),
    ),
  );
  const model = b.model || {};
  const sampling = Object.entries(b.sampling || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  const timings = Object.entries(b.timings_ms || {}).map(([k, v]) => `${k} ${v} ms`).join(", ");
  pane.replaceChildren(
    el("h2", {}, rec.question),
    el("dl", { class: "meta" },
      el("dt", {}, "record"), el("dd", {}, `${rec.id} (seq ${rec.seq})`),
      el("dt", {}, "time"), el("dd", {}, new Date(rec.created_at).toLocaleString()),
      el("dt", {}, "principal"), el("dd", { class: "principal" }, principalLabel(rec)),
      el("dt", {}, "collections"), el("dd", {}, rec.collections.join(", ")),
      el("dt", {}, "record hash"), el("dd", { class: rec.intact ? "intact" : "intact changed" }, `${rec.hash.slice(0, 24)}… ${rec.intact ? "(intact)" : `(ALTERED: ${rec.error})`}`),
      el("dt", {}, "model"), el("dd", { class: "model" }, `${(model.path || "").split("/").pop()} sha256 ${model.sha256 || "?"}`),
      el("dt", {}, "sampling"), el("dd", { class: "sampling" }, sampling),
      el("dt", {}, "policy"), el("dd", {}, `${b.policy}${b.abstained ? " · abstained: " + b.reason : ""}`),
      el("dt", {}, "timings"), el("dd", {}, timings),
    ),
    el("h3", {}, "Answer"),
    el("p", { class: "answer" }, b.answer),
    el("h3", {}, "Sentences and evidence"),
    ...(verdicts.length ? verdicts : [el("p", {}, "no sentences (abstained)")]),
    el("h3", {}, "Retrieval rankings"),
    ...rankingsView(b.retrieval),
    el("h3", {}, "Prompt sent to the model"),
    el("pre", { class: "prompt" }, b.prompt || ""),
    el("h3", {}, "Raw model output"),
    el("pre", { class: "prompt" }, b.raw_output || ""),
  );
}

function init() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#key").value.trim());
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    showLogin("");
  });
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    filters = {
      principal: form.get("principal").trim(),
      collection: form.get("collection").trim(),
      since: isoFromLocal(form.get("since")),
      until: isoFromLocal(form.get("until")),
    };
    offset = 0;
    loadList();
  });
  $("#clear").addEventListener("click", () => {
    $("#filters").reset();
    filters = {};
    offset = 0;
    loadList();
  });
  for (const button of document.querySelectorAll(".export button")) {
    button.addEventListener("click", () => exportRecords(button.dataset.format));
  }
  $("#prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadList(); });
  $("#next").addEventListener("click", () => { offset += PAGE; loadList(); });
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) signIn(key); else showLogin("");
}

init();
