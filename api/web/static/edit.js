// The marketer page's editing panel: pick a product, an operation and its parameters; the
// edit runs as a job (POST /v1/edits, polled); before and after side by side; save the result
// as a draft variant. Also the customisation options a store allows per product.
// Uses ui.js's helpers ($, el, say, api, sleep), loaded first on the same page.
"use strict";

const edit = { job: null, products: [] };

const splitList = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function showOpFields() {
  const op = $("#edit-op").value;
  for (const div of $$("#edit-form [data-op]")) div.hidden = !div.dataset.op.split(" ").includes(op);
}

function editParams(op) {
  const n = (id) => Number($(id).value);
  const part = $("#edit-part").value.trim();
  const withPart = (p) => (part ? { ...p, mask_part: part } : p);
  if (op === "recolor") return withPart({ colour: $("#edit-colour").value.trim() });
  if (op === "material") return withPart({ texture: $("#edit-texture").value });
  if (op === "background") {
    const prompt = $("#edit-prompt").value.trim();
    return prompt ? { prompt } : { studio: $("#edit-studio").value.trim() };
  }
  if (op === "adjust") return { brightness: n("#edit-brightness"), contrast: n("#edit-contrast"), saturation: n("#edit-saturation") };
  if (op === "restore") return { scale: n("#edit-scale") };
  return {};
}

function describe(job) {
  const p = (job.params || [])[0] || {};
  const detail = Object.entries(p).map(([k, v]) => `${k} ${v}`).join(", ");
  return `${(job.ops || []).join(" + ")}${detail ? ` (${detail})` : ""}`;
}

async function loadProducts() {
  const q = $("#edit-query").value.trim();
  const out = await api(`/v1/products?limit=100${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  edit.products = items(out);
  const sel = $("#edit-product");
  const keep = sel.value;
  sel.replaceChildren(...edit.products.map((p) => el("option", { value: p.id, text: `${p.title} · ${p.sku}` })));
  if (keep && edit.products.some((p) => String(p.id) === keep)) sel.value = keep;
  say($("#edit-status"), edit.products.length ? "" : "No product matches.");
  await loadOptions();
}

function showJob(job) {
  const title = ($("#edit-product").selectedOptions[0] || {}).textContent || `product ${job.product_id}`;
  $("#edit-result").hidden = false;
  const before = $("#edit-before"), after = $("#edit-after");
  if (job.source_url && before.getAttribute("src") !== job.source_url) before.src = job.source_url;
  before.alt = `Before: ${title}`;
  $("#edit-what").textContent = describe(job);
  const prog = $("#edit-progress");
  prog.hidden = job.status !== "queued" && job.status !== "running";
  prog.max = Math.max(1, job.progress_total || 1);
  prog.value = job.progress_step || 0;
  if (job.status === "succeeded" && job.image_url) {
    after.src = job.image_url;
    after.alt = `After ${describe(job)}: ${title}`;
  } else {
    after.removeAttribute("src");
    after.alt = `After: ${job.status}`;
  }
  $("#edit-save-row").hidden = job.status !== "succeeded";
}

async function runEdit(ev) {
  ev.preventDefault();
  const status = $("#edit-status"), btn = $("#edit-submit");
  const productId = Number($("#edit-product").value);
  if (!productId) { say(status, "Choose a product.", true); $("#edit-product").focus(); return; }
  const op = $("#edit-op").value;
  btn.disabled = true;
  say($("#edit-save-status"), "");
  say(status, "Submitting…");
  try {
    let job = await api("/v1/edits", { method: "POST", body: { product_id: productId, op, params: editParams(op) } });
    edit.job = job;
    showJob(job);
    while (job.status === "queued" || job.status === "running") {
      say(status, job.status === "queued" ? "Queued…" : `Editing… step ${job.progress_step} of ${job.progress_total}`);
      await sleep(400);
      job = await api(`/v1/edits/${job.id}`);
      if (edit.job === null || edit.job.id !== job.id) return; // another edit started
      edit.job = job;
      showJob(job);
    }
    say(status, job.status === "succeeded" ? `Done: ${describe(job)}.` : `The edit ${job.status}${job.error ? `: ${job.error}` : ""}.`, job.status !== "succeeded");
  } catch (e) { say(status, e.message, true); }
  finally { btn.disabled = false; }
}

async function saveDraft() {
  const status = $("#edit-save-status");
  if (!edit.job) return;
  try {
    const v = await api(`/v1/edits/${edit.job.id}/variant`, { method: "POST", body: { placement: $("#edit-placement").value } });
    status.replaceChildren(`Saved as draft variant #${v.id} (${v.status}). Approve it in the variants list.`);
    status.dataset.variantId = v.id;
    status.classList.remove("error");
  } catch (e) { say(status, e.message, true); }
}

async function loadOptions() {
  const id = Number($("#edit-product").value);
  const status = $("#options-status");
  if (!id) return;
  const out = await api(`/v1/products/${id}/customization`);
  for (const f of ["colour", "material", "background"]) $(`#options-${f}`).value = (out.approved[f] || []).join(", ");
  const all = Object.entries(out.allowed).filter(([, v]) => v.length).map(([k, v]) => `${k}: ${v.join(", ")}`);
  say(status, all.length ? `Shoppers may choose ${all.join("; ")}.` : "Shoppers have nothing to choose yet.");
}

async function saveOptions(ev) {
  ev.preventDefault();
  const id = Number($("#edit-product").value);
  const status = $("#options-status");
  if (!id) { say(status, "Choose a product.", true); return; }
  const body = {};
  for (const f of ["colour", "material", "background"]) body[f] = splitList($(`#options-${f}`).value);
  try {
    await api(`/v1/products/${id}/customization`, { method: "PUT", body });
    await loadOptions();
  } catch (e) { say(status, e.message, true); }
}

async function initEditPanel() {
  if (!$("#edit-form")) return;
  showOpFields();
  $("#edit-op").addEventListener("change", showOpFields);
  $("#edit-form").addEventListener("submit", runEdit);
  $("#edit-save").addEventListener("click", () => saveDraft());
  $("#options-form").addEventListener("submit", saveOptions);
  let timer = null;
  $("#edit-query").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => loadProducts().catch((e) => showError(e.message)), 250);
  });
  $("#edit-product").addEventListener("change", () => loadOptions().catch((e) => say($("#options-status"), e.message, true)));
  await loadProducts();
  document.body.dataset.editReady = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page !== "marketer" || !sessionStorage.getItem(KEY)) return;
  initEditPanel().catch((e) => { if (e.status !== 401 && e.status !== 403) showError(e.message); });
});
