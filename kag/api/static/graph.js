// kag review page, entity neighbourhood: an SVG picture of an entity and its typed edges; each edge opens its
// evidence span. Plain JS, no dependencies; uses api(), el() and $ from audit.js.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 760;
const HEIGHT = 520;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// the entity in the middle; each further hop on a wider ring, spread evenly
function layout(nodes) {
  const rings = new Map();
  for (const n of nodes) {
    const hop = n.hop || 0;
    if (!rings.has(hop)) rings.set(hop, []);
    rings.get(hop).push(n);
  }
  const at = new Map();
  const cx = WIDTH / 2, cy = HEIGHT / 2;
  const step = Math.min(WIDTH, HEIGHT) / 2 / (Math.max(...rings.keys(), 1) + 0.6);
  for (const [hop, ring] of rings) {
    ring.forEach((n, i) => {
      const angle = (2 * Math.PI * i) / ring.length - Math.PI / 2 + hop * 0.4;
      at.set(n.id, hop === 0 ? [cx, cy] : [cx + hop * step * Math.cos(angle), cy + hop * step * Math.sin(angle)]);
    });
  }
  return at;
}

function edgePath(a, b, bend) {
  // parallel edges between one pair bend apart, so each stays visible and clickable
  const [x1, y1] = a, [x2, y2] = b;
  const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
  const len = Math.hypot(x2 - x1, y2 - y1) || 1;
  const qx = mx - ((y2 - y1) / len) * bend, qy = my + ((x2 - x1) / len) * bend;
  // the label sits on the curve's middle: halfway between the chord's middle and the control point
  return { d: `M${x1},${y1} Q${qx},${qy} ${x2},${y2}`, label: [(mx + qx) / 2, (my + qy) / 2] };
}

function drawNeighbourhood(hood) {
  const at = layout(hood.nodes);
  const picture = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "data-collection": hood.collection });
  picture.append(svg("title", {}, `${hood.entity.name} and its relations in ${hood.collection}`));
  picture.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 22, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b7788" }))));
  const seen = new Map();
  for (const e of hood.edges) {
    const pair = [e.source_id, e.target_id].sort().join("|");
    const n = seen.get(pair) || 0;
    seen.set(pair, n + 1);
    const bend = n === 0 ? 0 : (n % 2 ? 1 : -1) * 26 * Math.ceil(n / 2);
    const { d, label } = edgePath(at.get(e.source_id), at.get(e.target_id), bend);
    const group = svg(
      "g",
      { class: `edge grade-${e.grade}${e.conflict === "lost" ? " lost" : ""}`, "data-type": e.type, "data-relation": e.relation_id, tabindex: 0 },
      svg("title", {}, `${e.source} ${e.type} ${e.target} · grade ${e.grade} · strength ${e.strength.toFixed(2)}`),
      svg("path", { d, class: "hit" }),
      svg("path", { d, "marker-end": "url(#arrow)" }),
      svg("text", { x: label[0].toFixed(1), y: label[1].toFixed(1) }, `${e.type} ${e.grade}`),
    );
    const open = () => showEdge(e, group);
    group.addEventListener("click", open);
    group.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
    picture.append(group);
  }
  for (const node of hood.nodes) {
    const [x, y] = at.get(node.id);
    picture.append(svg("g", { class: `node${node.hop === 0 ? " root" : ""}`, "data-id": node.id }, svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 16 }), svg("text", { x: x.toFixed(1), y: (y + 30).toFixed(1) }, node.name)));
  }
  return el("div", { class: "neighbourhood", "data-collection": hood.collection },
    el("h3", {}, `${hood.entity.name} in ${hood.collection}: ${hood.edges.length} relations${hood.truncated ? " (the strongest shown)" : ""}`),
    picture);
}

async function showEdge(e, group) {
  document.querySelectorAll(".graph .edge.selected").forEach((g) => g.classList.remove("selected"));
  group.classList.add("selected");
  const box = $("#edge-detail");
  const ev = e.evidence;
  box.replaceChildren(
    el("h3", { class: "relation" }, `${e.source} ${e.type} ${e.target}`),
    el("dl", { class: "meta" },
      el("dt", {}, "grade"), el("dd", { class: "grade" }, e.grade + (e.documents > 1 ? ` (${e.documents} documents)` : "")),
      el("dt", {}, "strength"), el("dd", {}, e.strength.toFixed(2)),
      el("dt", {}, "source kind"), el("dd", { class: "kind" }, e.source_kind),
      el("dt", {}, "conflict"), el("dd", { class: "conflict" }, e.conflict ? `${e.conflict} against an opposing relation` : "none"),
      el("dt", {}, "document"), el("dd", { class: "where" }, `${ev.title || ev.source_uri} (${ev.document_id}) · characters ${ev.doc_start}–${ev.doc_end}`),
    ),
    el("blockquote", { class: "quote" }, ev.quote),
  );
  box.hidden = false;
  try {
    const start = Math.max(0, ev.doc_start - CONTEXT);
    const span = await api(`/v1/documents/${encodeURIComponent(ev.document_id)}/text?start=${start}&end=${ev.doc_end + CONTEXT}`);
    const a = ev.doc_start - span.start, b = ev.doc_end - span.start;
    box.append(el("div", { class: "passage" }, span.start > 0 ? "…" : "", span.text.slice(0, a), el("mark", { class: "evidence" }, span.text.slice(a, b)), span.text.slice(b), span.end < span.length ? "…" : ""));
  } catch (err) {
    box.append(el("p", { class: "error" }, `source unavailable: ${err.message}`));
  }
}

async function loadNeighbourhood(name, hops) {
  $("#graph-error").textContent = "";
  $("#edge-detail").hidden = true;
  const views = $("#graph-views");
  views.replaceChildren();
  let body;
  try {
    body = await api(`/v1/graph/entities/${encodeURIComponent(name)}/neighbourhood?hops=${hops}`);
  } catch (err) {
    $("#graph-error").textContent = err.message;
    return;
  }
  views.replaceChildren(...body.neighbourhoods.map(drawNeighbourhood));
}

$("#graph-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  loadNeighbourhood(form.get("entity").trim(), form.get("hops"));
});
