// tailorshot pages: a little vanilla JavaScript over the JSON API (no framework, no CDN).
// The key lives in sessionStorage (this tab only) and goes out as a Bearer token. Every
// element is built with textContent / setAttribute: API data never becomes HTML.
"use strict";

const KEY = "tailorshot.key";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function showError(msg) { const p = $("#page-error"); if (p) p.textContent = msg || ""; }
function say(node, msg, isError = false) {
  if (!node) return;
  node.textContent = msg || "";
  node.classList.toggle("error", Boolean(isError));
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function toLogin() {
  location.href = "/ui/?next=" + encodeURIComponent(location.pathname + location.hash);
}

// One JSON call; 401 sends the person back to the login page, 429 waits and retries once.
async function api(path, { method = "GET", body = null, retry = true } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, Accept: "application/json" };
  if (body !== null) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === null ? null : JSON.stringify(body) });
  if (res.status === 401) { sessionStorage.removeItem(KEY); toLogin(); throw new ApiError(401, "Please log in again."); }
  if (res.status === 429 && retry) {
    const wait = Math.min(10, Number(res.headers.get("Retry-After")) || 1);
    await sleep(wait * 1000);
    return api(path, { method, body, retry: false });
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    let detail = data && data.detail !== undefined ? data.detail : res.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    throw new ApiError(res.status, `${detail} (HTTP ${res.status})`);
  }
  return data;
}

const items = (d) => (Array.isArray(d) ? d : (d && d.data) || []);
const termName = (t) => (Array.isArray(t) ? String(t[0]) : t && typeof t === "object" ? String(t.term ?? t.name ?? "") : String(t));
const termWeight = (t) => (Array.isArray(t) ? Number(t[1]) : t && typeof t === "object" ? Number(t.weight ?? t.score) : NaN);
const num = (x, digits = 2) => (x === null || x === undefined || !Number.isFinite(Number(x)) ? "–" : Number(x).toFixed(digits));
const pct = (x, digits = 1) => (Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : "–");
const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en") : "–");

// ============================================================================ log in

async function initLogin() {
  const form = $("#login-form"), input = $("#api-key"), status = $("#login-status");
  input.focus();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) { say(status, "Paste a key first.", true); input.focus(); return; }
    say(status, "Checking…");
    let res;
    try { res = await fetch("/ui/api/whoami", { headers: { Authorization: `Bearer ${key}` } }); }
    catch { say(status, "The server did not answer.", true); return; }
    if (!res.ok) {
      say(status, res.status === 429 ? "Too many attempts: wait a moment." : "That key was not accepted.", true);
      input.select();
      return;
    }
    const who = await res.json();
    if (!who.pages.length) {
      say(status, `This is a ${who.role} key: it opens no page here. Use a marketer, analyst or admin key.`, true);
      return;
    }
    sessionStorage.setItem(KEY, key);
    const next = new URLSearchParams(location.search).get("next") || "";
    const target = who.pages.find((p) => next === p || next.startsWith(p + "#")) ? next : who.pages[0];
    say(status, "Logged in.");
    location.href = target;
  });
}

// ============================================================================ marketer

const state = { segment: null, products: new Map(), pollers: new Map() };

async function productCards(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.products.has(id));
  for (let i = 0; i < missing.length; i += 50) {
    for (const p of await api(`/ui/api/products?ids=${missing.slice(i, i + 50).join(",")}`)) state.products.set(p.id, p);
  }
  return ids.map((id) => state.products.get(id)).filter(Boolean);
}
const productTitle = (id) => (state.products.get(id) || {}).title || `product ${id}`;

// "red:1, minimalist:0.8" → [{term, weight}] (weight defaults to 1).
function parseTerms(text) {
  const out = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = part.match(/^(.*?)(?:\s*:\s*([0-9]*\.?[0-9]+))?$/);
    const term = (m ? m[1] : part).trim();
    const weight = m && m[2] !== undefined ? Number(m[2]) : 1;
    if (!term) continue;
    if (term.length > 64) throw new Error(`"${term.slice(0, 20)}…" is longer than 64 characters.`);
    if (!(weight >= 0 && weight <= 10)) throw new Error(`The weight of "${term}" must be between 0 and 10.`);
    out.push({ term, weight });
  }
  if (!out.length) throw new Error("Give at least one term.");
  if (out.length > 16) throw new Error("At most 16 terms.");
  return out;
}
const formatTerms = (terms) => (terms || []).map((t) => {
  const w = termWeight(t);
  return Number.isFinite(w) && w !== 1 ? `${termName(t)}:${+w.toFixed(2)}` : termName(t);
}).join(", ");

function variantCard(v) {
  const status = v.status || "draft";
  const title = productTitle(v.product_id);
  const termsText = (v.terms || []).map(termName).join(", ");
  const card = el("article", { class: "card variant", "data-variant-id": v.id, "data-status": status, "aria-labelledby": `vh-${v.id}` });
  const pending = !v.image_url && v.job_id;
  if (v.image_url) {
    card.append(el("img", { src: v.image_url, alt: `Variant ${v.id}: ${title}${termsText ? ", styled " + termsText : ""}`, loading: "lazy", width: 256, height: 256 }));
  } else {
    card.append(el("div", { class: "placeholder", text: pending ? "Rendering…" : "No image yet" }));
  }
  card.append(el("h4", { id: `vh-${v.id}`, tabindex: "-1" }, el("span", { class: `badge ${status}`, text: status }), ` Variant #${v.id}`));
  card.append(el("p", { class: "muted", text: title }));
  card.append(el("ul", { class: "chips", "aria-label": "Style terms" }, ...(v.terms || []).map((t) => el("li", { text: termName(t) }))));
  const msg = el("p", { class: "status", role: "status", "aria-live": "polite" });
  const prog = el("progress", { max: 1, value: 0, "aria-label": `Rendering progress of variant ${v.id}`, hidden: !pending });
  const actions = el("div", { class: "row actions" });
  const act = async (action, btn) => {
    btn.disabled = true;
    try {
      const out = await api(`/v1/variants/${v.id}/${action}`, { method: "POST" });
      // The clicked button had focus (a disabled one loses it): keep focus in the new card.
      const fresh = replaceCard(card, out, `.actions button[data-action="${action}"]`, true);
      say($(".status", fresh), action === "approve" ? "Approved: the storefront may now serve it." : "Retired: no longer served.");
    } catch (e) { say(msg, e.message, true); btn.disabled = false; }
  };
  const approve = el("button", { type: "button", "data-action": "approve", "aria-label": `Approve variant ${v.id}`, text: "Approve",
    disabled: status !== "draft" || !v.image_url });
  approve.addEventListener("click", () => act("approve", approve));
  const retire = el("button", { type: "button", class: "danger", "data-action": "retire", "aria-label": `Retire variant ${v.id}`, text: "Retire",
    disabled: status === "retired" });
  retire.addEventListener("click", () => act("retire", retire));
  actions.append(approve, retire);
  card.append(actions);

  if (status !== "retired") {
    const tid = `terms-${v.id}`, pid = `tpl-${v.id}`, hid = `terms-hint-${v.id}`;
    const input = el("input", { id: tid, class: "wide", value: formatTerms(v.terms), "aria-describedby": hid, autocomplete: "off", spellcheck: "false" });
    const tpl = el("textarea", { id: pid, rows: 2, maxlength: 500 });
    tpl.value = v.prompt_template || "";
    const regen = el("button", { type: "submit", text: "Regenerate" });
    const form = el("form", { class: "regen" },
      el("label", { for: tid, text: "Style terms" }),
      el("p", { class: "hint", id: hid, text: "Comma-separated; an optional weight after a colon, e.g. red:1.2, linen, beach:0.6" }),
      input,
      el("label", { for: pid, class: "gap-top", text: "Prompt template (optional)" }),
      tpl,
      el("div", { class: "row gap-top" }, regen));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = { terms: parseTerms(input.value) };
        if (tpl.value.trim() !== (v.prompt_template || "").trim() && tpl.value.trim()) body.prompt_template = tpl.value.trim();
      } catch (e) { say(msg, e.message, true); input.focus(); return; }
      regen.disabled = true;
      say(msg, "Submitting…");
      try {
        const out = await api(`/v1/variants/${v.id}`, { method: "PATCH", body });
        replaceCard(card, out, "h4", true);
      } catch (e) { say(msg, e.message, true); regen.disabled = false; }
    });
    card.append(el("details", {}, el("summary", { text: "Edit terms and regenerate" }), form));
  }
  card.append(prog, msg);
  // Start polling once the card is in the page (callers insert it in this same task).
  if (pending) setTimeout(() => watchVariant(v, card), 0);
  return card;
}

// Swap a card for a fresh one built from ``v`` and move focus to ``focusSel`` inside it, so
// keyboard and screen-reader users stay where they were.
function replaceCard(card, v, focusSel, force = false) {
  const fresh = variantCard(v);
  const hadFocus = card.contains(document.activeElement);
  card.replaceWith(fresh);
  updateCounts();
  if (hadFocus || force) {
    const target = $(focusSel, fresh);
    (target && !target.disabled ? target : $("h4", fresh)).focus();
  }
  return fresh;
}

// Poll a variant's job and show its progress live; when it ends, reload that variant.
async function watchVariant(v, card) {
  if (state.pollers.has(v.id)) state.pollers.get(v.id).stop = true;
  const me = { stop: false };
  state.pollers.set(v.id, me);
  try { await pollJob(v, card, me); }
  catch (e) { say($(".status", card), e.message, true); }
  finally { if (state.pollers.get(v.id) === me) state.pollers.delete(v.id); }
}

async function pollJob(v, card, me) {
  const prog = $("progress", card), msg = $(".status", card);
  prog.hidden = false;
  let wait = 400;
  for (let i = 0; i < 2000 && !me.stop && card.isConnected; i++) {
    const job = await api(`/v1/generations/${encodeURIComponent(v.job_id)}`);
    const step = job.progress_step || 0, total = job.progress_total || 0;
    if (total) { prog.max = total; prog.value = step; }
    if (job.status === "queued") say(msg, `Queued${job.attempts ? ` (attempt ${job.attempts + 1})` : ""}…`);
    else if (job.status === "running") say(msg, total ? `Rendering: step ${step} of ${total}` : "Rendering…");
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      if (job.status !== "succeeded") {
        prog.hidden = true;
        say(msg, `Rendering ${job.status}${job.error ? ": " + job.error : ""}.`, true);
        return;
      }
      const q = new URLSearchParams({ product_id: v.product_id, limit: 200 });
      if (v.segment_id !== null && v.segment_id !== undefined) q.set("segment_id", v.segment_id);
      const fresh = items(await api(`/v1/variants?${q}`)).find((x) => x.id === v.id);
      if (fresh && card.isConnected && !me.stop) {
        const next = replaceCard(card, fresh.image_url ? fresh : { ...fresh, image_url: job.image_url },
          ".actions button[data-action=approve]");
        say($(".status", next), "Rendered: review it, then approve.");
      }
      return;
    }
    // Share the key's rate limit between cards: slower with many jobs in flight.
    wait = job.status === "queued" ? Math.min(3000, wait * 1.3) : 400;
    await sleep(Math.max(wait, 150 * state.pollers.size));
  }
}

// "4 variants: 1 approved, 3 draft." from the cards on the page (kept current after actions).
function updateCounts() {
  const cards = $$("#variant-grid article[data-status]");
  const counts = ["draft", "approved", "retired"].map((st) => [st, cards.filter((c) => c.dataset.status === st).length]).filter(([, n]) => n);
  say($("#variants-status"), cards.length ? `${cards.length} variant${cards.length === 1 ? "" : "s"}: ${counts.map(([st, n]) => `${n} ${st}`).join(", ")}.`
    : "No variants match: preview some above.");
}

async function loadVariants() {
  const seg = state.segment;
  if (!seg) return;
  const status = $("#variants-status");
  const q = new URLSearchParams({ segment_id: seg.id, limit: 200 });
  if ($("#status-filter").value) q.set("status", $("#status-filter").value);
  if ($("#product-filter").value) q.set("product_id", $("#product-filter").value);
  const grid = $("#variant-grid");
  grid.setAttribute("aria-busy", "true");
  say(status, "Loading variants…");
  for (const p of state.pollers.values()) p.stop = true;
  state.pollers.clear();
  let list;
  try {
    list = items(await api(`/v1/variants?${q}`));
    await productCards(list.map((v) => v.product_id));
  } finally { grid.setAttribute("aria-busy", "false"); }
  // One grid, grouped by product (the segment's example products first), newest first.
  const order = [...(seg.example_product_ids || []), ...list.map((v) => v.product_id)];
  const rank = new Map();
  for (const pid of order) if (!rank.has(pid)) rank.set(pid, rank.size);
  const sorted = [...list].sort((a, b) => rank.get(a.product_id) - rank.get(b.product_id) || b.id - a.id);
  grid.replaceChildren(...sorted.map((v) => el("li", {}, variantCard(v))));
  updateCounts();
  // Keep the product filter's choices in step with what exists.
  const pf = $("#product-filter");
  const known = new Set($$("option", pf).map((o) => o.value));
  for (const pid of order) if (!known.has(String(pid))) { pf.append(el("option", { value: pid, text: productTitle(pid) })); known.add(String(pid)); }
}

async function selectSegment(seg, { focus = true } = {}) {
  if (state.segment && state.segment.id === seg.id) { if (focus) $("#segment-title").focus(); return; }
  state.segment = seg;
  for (const b of $$("#segment-list button")) b.setAttribute("aria-pressed", String(b.dataset.segmentId === String(seg.id)));
  history.replaceState(null, "", `#segment-${seg.id}`);
  $("#segment-detail").hidden = false;
  $("#segment-title").textContent = seg.label || `Segment ${seg.id}`;
  $("#segment-size").textContent = `Segment #${seg.id} · ${int(seg.size)} shopper${seg.size === 1 ? "" : "s"} · version ${seg.version ?? 1}`;
  $("#segment-terms").replaceChildren(...(seg.terms || []).map((t) => {
    const w = termWeight(t);
    return el("li", {}, termName(t), Number.isFinite(w) ? el("span", { class: "score", "aria-label": `score ${num(w)}`, text: num(w) }) : null);
  }));
  const ids = seg.example_product_ids || [];
  const examples = await productCards(ids);
  $("#segment-examples").replaceChildren(...examples.map((p) => el("li", {}, el("figure", {},
    p.image_url ? el("img", { src: p.image_url, alt: p.title, loading: "lazy", width: 160, height: 160 })
      : el("div", { class: "placeholder", text: "No image" }),
    el("figcaption", { text: `${p.title}` })))));
  $("#preview-product").replaceChildren(...examples.map((p) => el("option", { value: p.id, text: p.title })));
  const pf = $("#product-filter");
  pf.replaceChildren(el("option", { value: "", text: "All products" }), ...examples.map((p) => el("option", { value: p.id, text: p.title })));
  if (focus) $("#segment-title").focus();
  await loadVariants();
}

async function initMarketer() {
  const status = $("#segments-status");
  const segs = items(await api("/v1/segments?limit=500"));
  const list = $("#segment-list");
  list.replaceChildren(...segs.map((s) => {
    const b = el("button", { type: "button", class: "secondary", "aria-pressed": "false", "data-segment-id": s.id },
      s.label || `Segment ${s.id}`, el("span", { class: "size", text: ` · ${int(s.size)} shoppers` }));
    b.addEventListener("click", () => selectSegment(s).catch((e) => showError(e.message)));
    return el("li", {}, b);
  }));
  say(status, segs.length ? `${segs.length} segment${segs.length === 1 ? "" : "s"}. Choose one to review its variants.`
    : "No segments yet: run tailorshot segments build.");
  const refresh = () => loadVariants().catch((e) => showError(e.message));
  $("#status-filter").addEventListener("change", refresh);
  $("#product-filter").addEventListener("change", refresh);
  $("#preview-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("#preview-status"), btn = $("button", ev.target);
    const n = Number($("#preview-n").value);
    if (!(n >= 1 && n <= 8)) { say(msg, "How many: between 1 and 8.", true); $("#preview-n").focus(); return; }
    btn.disabled = true;
    say(msg, "Submitting…");
    try {
      const out = await api(`/v1/segments/${state.segment.id}/previews`, {
        method: "POST", body: { product_id: Number($("#preview-product").value), n } });
      say(msg, `${items(out).length} draft variant${items(out).length === 1 ? "" : "s"} queued: progress shows on each card.`);
      await loadVariants();
    } catch (e) { say(msg, e.message, true); }
    finally { btn.disabled = false; }
  });
  $("#compare-form").addEventListener("submit", (ev) => { ev.preventDefault(); compare().catch((e) => say($("#compare-status"), e.message, true)); });
  const wanted = /^#segment-(\d+)$/.exec(location.hash);
  const first = segs.find((s) => wanted && String(s.id) === wanted[1]) || segs[0];
  if (first) await selectSegment(first, { focus: false });
}

async function compare() {
  const user = $("#compare-user").value.trim();
  const status = $("#compare-status");
  if (!user) { say(status, "Enter a shopper id.", true); $("#compare-user").focus(); return; }
  say(status, "Loading…");
  const q = new URLSearchParams({ user_id: user, placement: $("#compare-placement").value });
  const out = await api(`/ui/api/compare?${q}`);
  const box = $("#compare");
  box.replaceChildren(...[["personalized", "Personalized hero"], ["segment", "Segment hero"]].map(([k, name]) => {
    const h = out[k];
    const what = h ? `${h.product_title || "product " + h.product_id}, variant #${h.variant_id}` : "";
    return el("figure", { class: "card", "data-kind": k },
      h && h.image_url ? el("img", { src: h.image_url, alt: `${name} for shopper ${out.user_id}: ${what}` })
        : el("div", { class: "placeholder", text: k === "personalized" ? "No personalized hero yet." : "No approved segment hero." }),
      el("figcaption", {}, el("strong", { text: name }), h ? ` · ${what}` : ""));
  }));
  say(status, `Shopper ${out.user_id}${out.segment_id ? ` (segment #${out.segment_id})` : " (no segment)"}: ` +
    `${out.personalized ? "has" : "no"} personalized hero, ${out.segment ? "has" : "no"} segment hero.`);
}

// ============================================================================ analyst charts

const SVGNS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, text = null) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== null) n.textContent = text;
  return n;
}
const COLOURS = { personalized: "#2b59c3", segment: "#1b6e34", generic: "#8a5100", logged: "#55555f", unknown: "#55555f" };

function niceTicks(lo, hi, count = 4) {
  const span = hi - lo || 1;
  const raw = span / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count + 0.5) || 10 * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(+t.toFixed(12));
  return out;
}

// rows: [{label, value, lo?, hi?, truth?, colour?} | {group}] → horizontal bars with interval
// whiskers; labels sit above their bar so the chart fits a 360 px screen. Sized to ``width``.
function barChart(rows, { width, format = pct, captionId, title, domain = null }) {
  const W = Math.max(260, Math.min(900, Math.floor(width)));
  const padL = 6, padR = 64, rowH = 40, groupH = 26, axisH = 28;
  const data = rows.filter((r) => !r.group);
  const vals = data.flatMap((r) => [r.value, r.lo, r.hi, r.truth]).filter(Number.isFinite);
  let [lo, hi] = domain || [Math.min(0, ...vals), Math.max(0, ...vals)];
  if (hi - lo < 1e-9) hi = lo + 1;
  const pad = (hi - lo) * 0.04;
  if (!domain) { hi += pad; if (lo < 0) lo -= pad; }
  const x = (v) => padL + ((v - lo) / (hi - lo)) * (W - padL - padR);
  let H = axisH + 6;
  for (const r of rows) H += r.group ? groupH : rowH;
  const root = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${captionId}-t ${captionId}` });
  root.append(svgEl("title", { id: `${captionId}-t` }, title));
  const maxChars = Math.floor((W - padL - 4) / 6.6);
  const clip = (s) => (s.length > maxChars ? s.slice(0, maxChars - 1) + "…" : s);
  let y = 4;
  const ticks = niceTicks(lo, hi);
  // Digits that show every tick exactly (in percent for rates): 2.5% needs one, 20% none.
  const percent = format === pct || Boolean(format.percent);
  const decimals = (v) => [0, 1, 2, 3].find((d) => Math.abs(+v.toFixed(d) - v) < 1e-9) ?? 3;
  const tickDigits = Math.max(0, ...ticks.map((t) => decimals(percent ? t * 100 : t)));
  const plotTop = 4;
  for (const r of rows) {
    if (r.group) {
      root.append(svgEl("text", { x: padL, y: y + 18, "font-size": 13, "font-weight": 700, fill: "#1d1d1f" }, clip(r.group)));
      y += groupH;
      continue;
    }
    const g = svgEl("g", { class: "bar" });
    const label = svgEl("text", { x: padL, y: y + 13, "font-size": 12.5, fill: "#1d1d1f" }, clip(r.label));
    g.append(label);
    const by = y + 19, bh = 13;
    const v = Number.isFinite(r.value) ? r.value : 0;
    const x0 = x(Math.max(lo, Math.min(0, hi))), x1 = x(v);
    g.append(svgEl("rect", { x: Math.min(x0, x1), y: by, width: Math.max(1, Math.abs(x1 - x0)), height: bh,
      fill: r.colour || COLOURS.logged, "fill-opacity": 0.8 }));
    if (Number.isFinite(r.lo) && Number.isFinite(r.hi)) {
      const a = x(r.lo), b = x(r.hi), cy = by + bh / 2;
      g.append(svgEl("line", { x1: a, x2: b, y1: cy, y2: cy, stroke: "#1d1d1f", "stroke-width": 1.6 }));
      for (const e of [a, b]) g.append(svgEl("line", { x1: e, x2: e, y1: by - 1, y2: by + bh + 1, stroke: "#1d1d1f", "stroke-width": 1.6 }));
    }
    if (Number.isFinite(r.truth)) {
      const t = x(r.truth);
      g.append(svgEl("line", { x1: t, x2: t, y1: by - 4, y2: by + bh + 4, stroke: "#d62728", "stroke-width": 3 }));
    }
    g.append(svgEl("text", { x: W - 4, y: by + 11, "font-size": 12, "text-anchor": "end", fill: "#1d1d1f" }, format(r.value)));
    root.append(g);
    y += rowH;
  }
  // Axis: ticks and faint grid lines; a darker line at zero.
  const axisY = y + 2;
  root.append(svgEl("line", { x1: padL, x2: W - padR, y1: axisY, y2: axisY, stroke: "#8b8b96" }));
  for (const t of ticks) {
    const tx = x(t);
    root.insertBefore(svgEl("line", { x1: tx, x2: tx, y1: plotTop, y2: axisY, stroke: t === 0 ? "#8b8b96" : "#e4e4ea" }), root.children[1]);
    // Keep the end labels inside the chart.
    const anchor = tx - padL < 14 ? "start" : W - padR - tx < 14 ? "end" : "middle";
    root.append(svgEl("text", { x: tx, y: axisY + 16, "font-size": 11, "text-anchor": anchor, fill: "#55555f" }, format(t, tickDigits)));
  }
  return root;
}

function dataTable(headers, rows, caption) {
  return el("details", {}, el("summary", { text: "Show the numbers as a table" }),
    el("div", { class: "table-wrap" }, el("table", {},
      el("caption", { class: "sr-only", text: caption }),
      el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { scope: "col", class: i ? "num" : null, text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) => (i ? el("td", { class: "num", text: c }) : el("th", { scope: "row", text: c })))))))));
}

// Draw ``rows`` into figure ``id`` now and again whenever the figure's width changes.
const charts = [];
function mountChart(id, rows, opts, table) {
  const fig = $(`#${id}`);
  const cap = $("figcaption", fig);
  if (!rows.some((r) => !r.group)) {
    fig.prepend(el("p", { class: "muted", text: opts.empty || "Not enough logged data for this plot yet." }));
    if (table) fig.append(table);
    return;
  }
  const draw = () => {
    const w = fig.clientWidth - 2 * parseFloat(getComputedStyle(fig).paddingLeft || "0");
    const svg = barChart(rows, { ...opts, width: w, captionId: cap.id });
    const old = $("svg", fig);
    if (old) old.replaceWith(svg); else fig.prepend(svg);
    fig.dataset.width = String(Math.round(w));
  };
  draw();
  if (table) fig.append(table);
  charts.push({ fig, draw });
}
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { for (const c of charts) if (String(Math.round(c.fig.clientWidth)) !== c.fig.dataset.width) c.draw(); }, 150);
});

const MIN_VARIANT_IMPRESSIONS = 20;
const ARM_ORDER = ["personalized", "segment", "generic"];
const EST_ORDER = ["ipw", "snipw", "clipped_ipw", "dm", "dr", "switch_dr"];
const EST_NAMES = { ipw: "IPS", snipw: "SNIPS", clipped_ipw: "clipped IPS", dm: "DM", dr: "DR", switch_dr: "switch DR" };
const estName = (k) => EST_NAMES[k] || k;
const ordered = (keys, order) => [...order.filter((k) => keys.includes(k)), ...keys.filter((k) => !order.includes(k)).sort()];
const ci = (e, f = pct) => `${f(e.ci_low)} – ${f(e.ci_high)}`;

// Personalized coverage and cost (GET /v1/analytics/coverage), independent of the report.
async function loadCoverage() {
  const box = $("#coverage-cost");
  if (!box) return;
  try {
    const c = await api("/v1/analytics/coverage");
    const num2 = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "–");
    const rows = [
      ["Personalized coverage (batch-personalized shoppers)", pct(c.personalized_coverage, 1),
        `${int(c.personalized_impressions_of_those)} of ${int(c.impressions_of_those)} impressions, ${int(c.personalized_shoppers)} shoppers`],
      ["Diffusion runs per 1,000 hero impressions", num2(c.diffusion_runs_per_1000_impressions),
        `${int(c.diffusion_runs)} runs, ${int(c.hero_impressions)} impressions`],
      ["… in the steady state (since the last batch)", num2(c.steady_state_runs_per_1000_impressions),
        `${int(c.steady_state_diffusion_runs)} runs, ${int(c.steady_state_impressions)} impressions`],
      ["Result cache hit rate (batch lookups)", pct(c.cache_hit_rate, 1), ""],
      ["CPU seconds per image", num2(c.cpu_s_per_image), ""],
      ["GPU seconds per image", num2(c.gpu_s_per_image), ""],
    ];
    box.replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("caption", { class: "sr-only", text: "Personalized coverage and cost" }),
      el("thead", {}, el("tr", {}, ...["Figure", "Value", "From"].map((h, i) => el("th", { scope: "col", class: i === 1 ? "num" : null, text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, el("th", { scope: "row", text: r[0] }), el("td", { class: "num", text: r[1] }), el("td", { text: r[2] })))))));
  } catch (e) {
    box.replaceChildren(el("p", { class: "muted", text: `Coverage and cost unavailable: ${e.message}` }));
  }
}

async function initAnalyst() {
  const status = $("#report-status");
  $("#download-report").addEventListener("click", downloadReport);
  loadCoverage();
  const [summary, variants] = await Promise.all([
    api("/v1/analytics/ctr"),
    api("/ui/api/variant-ctr?limit=12").catch(() => ({ data: [] })),
  ]);
  const ev = summary.evaluation || {};
  const arms = ev.arms || {};
  const armNames = ordered(Object.keys(arms), ARM_ORDER);
  const truth = summary.truth || {};
  const level = Math.round(100 * (1 - (ev.alpha ?? 0.05)));
  if (summary.source && summary.source !== "impressions") {
    const b = $("#report-banner");
    b.hidden = false;
    b.replaceChildren(el("strong", { text: "Demo data. " }), summary.source_note || `Source: ${summary.source}.`);
  }
  const lc = ev.logged_ctr || {};
  $("#report-summary").textContent = `Logging policy ${ev.logging_policy ?? "–"}: ${int(ev.n_impressions)} impressions, ` +
    `${int(ev.clicks)} clicks, click-through ${pct(lc.value, 2)} (${level}% interval ${pct(lc.ci_low, 2)} – ${pct(lc.ci_high, 2)}). ` +
    `Control arm: ${ev.control ?? "none"}. Generated ${summary.generated_at ?? ""}.`;

  // 1. Per policy: logged policies (on-policy) and arm policies (SNIPS off-policy).
  const policyRows = [], policyTable = [];
  for (const [name, p] of Object.entries(summary.policies || {})) {
    if (name.startsWith("_")) continue;
    policyRows.push({ label: `logged: ${name} (${int(p.impressions)} impressions)`, value: p.ctr, lo: p.ci_low, hi: p.ci_high, colour: COLOURS.logged });
    policyTable.push([`logged: ${name}`, pct(p.ctr, 2), ci(p), int(p.impressions), int(p.clicks)]);
  }
  for (const a of armNames) {
    const e = arms[a].estimates.snipw || Object.values(arms[a].estimates)[0];
    if (!e) continue;
    policyRows.push({ label: `always ${a} (SNIPS)`, value: e.value, lo: e.ci_low, hi: e.ci_high, truth: truth[a], colour: COLOURS[a] });
    policyTable.push([`always ${a} (SNIPS)`, pct(e.value, 2), ci(e), "–", "–"]);
  }
  mountChart("chart-policy", policyRows, { title: "Click-through per policy" },
    dataTable(["Policy", "CTR", `${level}% interval`, "Impressions", "Clicks"], policyTable, "Click-through per policy"));

  // 2. Per variant (logged, Wilson).
  const vrows = items(variants);
  // A variant shown a handful of times has an interval as wide as the axis: table only.
  mountChart("chart-variant", vrows.filter((r) => r.impressions >= MIN_VARIANT_IMPRESSIONS).map((r) => ({ label: `${r.label} (${int(r.impressions)})`, value: r.ctr, lo: r.ci_low, hi: r.ci_high, colour: COLOURS[r.arm] })),
    { title: "Click-through per variant" },
    dataTable(["Variant", "CTR", "95% interval", "Impressions", "Clicks"], vrows.map((r) => [r.label, pct(r.ctr, 2), ci(r), int(r.impressions), int(r.clicks)]), "Click-through per variant"));

  // 3. Estimators per arm.
  const estRows = [], estTable = [];
  for (const a of armNames) {
    estRows.push({ group: `${a}${Number.isFinite(truth[a]) ? ` · true CTR ${pct(truth[a], 2)}` : ""}` });
    for (const k of ordered(Object.keys(arms[a].estimates), EST_ORDER)) {
      const e = arms[a].estimates[k];
      estRows.push({ label: estName(k), value: e.value, lo: e.ci_low, hi: e.ci_high, truth: truth[a], colour: COLOURS[a] });
      estTable.push([`${a} · ${estName(k)}`, pct(e.value, 2), ci(e), int(e.effective_sample_size)]);
    }
  }
  mountChart("chart-estimators", estRows, { title: "Estimator comparison per arm policy" },
    dataTable(["Arm · estimator", "CTR", `${level}% interval`, "Effective sample size"], estTable, "Estimator comparison"));

  // 4. Lift vs control.
  const liftRows = [], liftTable = [];
  for (const a of armNames) {
    if (a === ev.control) continue;
    for (const k of ["snipw", "dr"]) {
      const l = (arms[a].lift_vs_control || {})[k];
      if (!l) continue;
      liftRows.push({ label: `${a} vs ${ev.control} · ${estName(k)}`, value: l.value, lo: l.ci_low, hi: l.ci_high, colour: COLOURS[a] });
      liftTable.push([`${a} · ${estName(k)}`, pct(l.value, 1), ci(l, (x) => pct(x, 1))]);
    }
  }
  const signed = (x, d = 1) => (Number.isFinite(x) ? `${x > 0 ? "+" : ""}${(100 * x).toFixed(d)}%` : "–");
  signed.percent = true;
  mountChart("chart-lift", liftRows, { title: `Lift versus ${ev.control ?? "control"}`, format: signed,
      empty: "No lift yet: it needs an arm besides the control and clicks on the control arm." },
    dataTable(["Arm · estimator", "Lift", `${level}% interval`], liftTable, "Lift versus control"));

  // 5. Effective sample size per arm policy, out of all impressions.
  const n = ev.n_impressions || 0;
  const essRows = armNames.map((a) => ({ label: `${a}: ${int(arms[a].effective_sample_size)} of ${int(n)} (${pct(n ? arms[a].effective_sample_size / n : NaN, 0)})`,
    value: arms[a].effective_sample_size, colour: COLOURS[a] }));
  mountChart("chart-ess", essRows, { title: "Effective sample size per arm policy", format: (x) => int(x), domain: [0, Math.max(n, 1)] },
    dataTable(["Arm policy", "Effective sample size", "Share of impressions", "Coverage", "Largest weight"],
      armNames.map((a) => [a, int(arms[a].effective_sample_size), pct(n ? arms[a].effective_sample_size / n : NaN, 1), pct(arms[a].coverage, 0), num(arms[a].max_weight, 1)]),
      "Effective sample size"));
  say(status, `Report ready: ${armNames.length} arm policies, ${int(ev.n_impressions)} impressions.`);
  document.body.dataset.ready = "true";
}

async function downloadReport() {
  const msg = $("#download-status");
  say(msg, "Preparing…");
  try {
    const res = await fetch("/v1/analytics/report", { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: "tailorshot-report.html" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say(msg, "Downloaded tailorshot-report.html.");
  } catch (e) { say(msg, `Could not download the report: ${e.message}`, true); }
}

// ============================================================================ start

document.addEventListener("DOMContentLoaded", async () => {
  const page = document.body.dataset.page;
  const key = sessionStorage.getItem(KEY);
  if (page === "login") { initLogin(); return; }
  if (!key) { toLogin(); return; }
  $("#logout").hidden = false;
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.href = "/ui/"; });
  try {
    const who = await api("/ui/api/whoami");
    $("#whoami").textContent = `${who.role} · ${who.name || who.prefix + "…"}`;
    if (!who.pages.includes(location.pathname)) {
      showError(`A ${who.role} key cannot open this page.`);
      if (who.pages[0]) $("#page-error").append(" ", el("a", { href: who.pages[0], text: "Go to your page." }));
      document.body.dataset.ready = "true";
      return;
    }
    await ({ marketer: initMarketer, analyst: initAnalyst }[page] || (async () => {}))();
    document.body.dataset.ready = "true";
  } catch (e) {
    if (e.status !== 401) showError(e.message);
    const s = $("#report-status") || $("#segments-status");
    if (s) say(s, "");
  }
});
