// The marketer page's "new product image" panel (issue 21): a description and/or a sketch
// becomes a creation job (POST /v1/creations, polled); its N candidates are shown side by
// side, each marked as generated, and one can be saved as a draft product image.
// Uses ui.js's helpers ($, el, say, api, sleep), loaded first on the same page.
"use strict";

const creation = { job: null };

function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",")[1] || "");
    r.onerror = () => reject(new Error("could not read the sketch"));
    r.readAsDataURL(file);
  });
}

function showCandidates(job) {
  const box = $("#create-candidates");
  box.hidden = !job.candidates.length;
  $("#create-save-row").hidden = !job.candidates.length;
  box.replaceChildren(...job.candidates.map((c) => el("figure", { class: "card", "data-index": c.index },
    el("img", { src: c.image_url, alt: `Generated candidate ${c.index + 1}: ${job.text}` }),
    el("figcaption", {},
      el("strong", { text: `Candidate ${c.index + 1}` }),
      el("span", { text: ` · generated · seed ${c.seed}` }),
      el("button", { type: "button", class: "secondary", "data-save": c.index, text: "Save as draft",
                     onclick: () => saveCreationDraft(c.index) })))));
}

async function pollCreation(id) {
  const prog = $("#create-progress");
  for (;;) {
    const job = await api(`/v1/creations/${id}`);
    creation.job = job;
    prog.hidden = job.status !== "queued" && job.status !== "running";
    prog.max = Math.max(1, job.progress_total || 1);
    prog.value = job.progress_step || 0;
    say($("#create-status"), `Creation ${job.status}${job.error ? `: ${job.error}` : ""}`, job.status === "failed");
    if (job.status === "succeeded") { showCandidates(job); return job; }
    if (job.status === "failed" || job.status === "cancelled") return job;
    await sleep(500);
  }
}

async function submitCreation(ev) {
  ev.preventDefault();
  const file = $("#create-sketch").files[0];
  const body = {
    text: $("#create-text").value.trim(),
    n: Number($("#create-n").value),
    size: Number($("#create-size").value),
    background: $("#create-background").value.trim() || "white",
  };
  if (file) body.sketch_png = await readFile(file);
  $("#create-candidates").hidden = true;
  $("#create-save-row").hidden = true;
  say($("#create-save-status"), "");
  try {
    const job = await api("/v1/creations", { method: "POST", body });
    await pollCreation(job.id);
  } catch (e) {
    say($("#create-status"), e.message, true);
  }
}

async function saveCreationDraft(index) {
  const pid = $("#create-product").value.trim();
  const body = { candidate: index };
  if (pid) body.product_id = Number(pid);
  try {
    const row = await api(`/v1/creations/${creation.job.id}/drafts`, { method: "POST", body });
    const node = $("#create-save-status");
    node.dataset.imageId = String(row.id);
    say(node, `Saved candidate ${index + 1} as a draft generated image (#${row.id})${row.product_id ? ` of product ${row.product_id}` : ""}.`);
  } catch (e) {
    say($("#create-save-status"), e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page !== "marketer" || !sessionStorage.getItem(KEY)) return;
  const form = $("#create-form");
  if (!form) return;
  form.addEventListener("submit", submitCreation);
  document.body.dataset.createReady = "true";
});
