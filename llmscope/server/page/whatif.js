// The what-if view: the quality and cost tables of `llmscope what-if --json` (one row per variant, the unchanged
// model first), the pass keys, the layers left unchanged, and KL along the text drawn on a canvas. It reads the
// document's figures as they are; it computes nothing but layout. Loaded after views.js, whose helpers it uses.
"use strict";
(function () {
  const V = window.LlmscopeViews;
  const el = V.el;

  function num(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toLocaleString("en", {
      minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function kl(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1e-4 || value === 0 ? Number(value).toFixed(4) : Number(value).toExponential(1);
  }
  function ratio(value, base) {
    return value === null || base === null || !base ? "–" : (value / base).toFixed(2) + "×";
  }
  function cell(text, numeric) { return el("td", { class: numeric ? "num" : "tok", text }); }
  function table(head, rows) {
    return el("table", { class: "whatif" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows));
  }

  function qualityRows(doc) {
    const base = doc.variants[0];
    return doc.variants.map((row) => el("tr", { class: "whatif-quality", "data-variant": row.name,
      "data-perplexity": row.perplexity, "data-kl-mean": row.kl_mean, "data-kl-max": row.kl_max,
      "data-top1": row.top1_agreement, "data-passkeys-found": row.passkey.filter((p) => p.found).length },
      cell(row.name), cell(num(row.perplexity, 2), true), cell(ratio(row.perplexity, base.perplexity), true),
      cell(kl(row.kl_mean), true), cell(kl(row.kl_max), true),
      cell((100 * row.top1_agreement).toFixed(1) + "%", true),
      cell(row.greedy_parts_at === null ? "–" : String(row.greedy_parts_at), true),
      cell(row.passkey.length ? `${row.passkey.filter((p) => p.found).length}/${row.passkey.length}` : "–", true)));
  }

  function costRows(doc) {
    const base = doc.variants[0];
    return doc.variants.map((row) => el("tr", { class: "whatif-cost", "data-variant": row.name,
      "data-kv-bytes": row.kv_cache_bytes, "data-kv-bytes-at-context": row.kv_cache_bytes_at_context,
      "data-measured-bytes": row.kv_cache_end_bytes, "data-peak-added": row.peak_memory_added_bytes,
      "data-tokens-per-s": row.decode_tokens_per_s },
      cell(row.name), cell(V.bytes(row.kv_cache_bytes), true), cell(V.bytes(row.kv_cache_bytes_at_context), true),
      cell(ratio(row.kv_cache_bytes_at_context, base.kv_cache_bytes_at_context), true),
      cell(V.bytes(row.kv_cache_end_bytes), true), cell(V.bytes(row.peak_memory_added_bytes), true),
      cell(row.decode_tokens_per_s === null ? "–" : num(row.decode_tokens_per_s, 1), true)));
  }

  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f"];

  // KL(full ‖ variant) along the text, one line per variant, on a log scale.
  function klChart(doc) {
    const rows = doc.variants.slice(1).filter((row) => row.kl_per_token.length);
    const canvas = el("canvas", { class: "whatif-kl", width: 720, height: 220 });
    const ctx = canvas.getContext("2d");
    if (!rows.length || !ctx) return canvas;
    const floor = 1e-6;
    const all = rows.flatMap((row) => row.kl_per_token.map((v) => Math.max(v || 0, floor)));
    const top = Math.log10(Math.max(...all)), bottom = Math.log10(Math.max(Math.min(...all), floor));
    const span = Math.max(top - bottom, 1e-9), n = Math.max(...rows.map((row) => row.kl_per_token.length));
    const left = 40, width = canvas.width - left - 8, height = canvas.height - 24;
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#666";
    ctx.fillText(`1e${top.toFixed(1)}`, 2, 12);
    ctx.fillText(`1e${bottom.toFixed(1)}`, 2, height);
    rows.forEach((row, index) => {
      ctx.strokeStyle = COLOURS[index % COLOURS.length];
      ctx.beginPath();
      row.kl_per_token.forEach((value, i) => {
        const x = left + (width * i) / Math.max(n - 1, 1);
        const y = 4 + height * (1 - (Math.log10(Math.max(value || 0, floor)) - bottom) / span);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(row.name, left + 4 + (index % 4) * 170, canvas.height - 4 - 12 * Math.floor(index / 4));
    });
    return canvas;
  }

  V.whatif = function (container, doc) {
    V.clear(container);
    const noted = new Set();
    for (const row of doc.variants) for (const note of row.unchanged_layers) noted.add(note);
    container.append(
      el("p", { class: "note", text: `${doc.tokens} tokens read in one pass; -n ${doc.new_tokens} greedy tokens ` +
        `with each variant's own cache; peak memory: ${doc.memory_measure}` }),
      el("h3", { text: "Quality against the unchanged model" }),
      table(["variant", "perplexity", "×", "KL mean", "KL max", "top-1", "parts at", "pass keys"], qualityRows(doc)),
      el("h3", { text: "Memory and speed, the variant really applied" }),
      table(["variant", `KV @${doc.tokens}`, `KV @${doc.context}`, "×", "measured", "peak +", "tok/s"],
        costRows(doc)),
      el("h3", { text: "KL(full ‖ variant) along the text" }), klChart(doc));
    for (const note of noted) container.append(el("p", { class: "note", text: `left unchanged: ${note}` }));
  };

  // On the explore page: a panel of its own (added to <main>), a spec per word, run on the prompt on request.
  const PAGE_VARIANTS = "window=32 sinks=4,window=28 kv-heads=1 kv-cache=int4";
  function explorePanel() {
    const main = document.querySelector("main"), prompt = document.getElementById("prompt");
    if (!main || !prompt || document.getElementById("whatif-panel")) return;
    const specs = el("input", { id: "whatif-variants", value: PAGE_VARIANTS, size: 48, spellcheck: "false",
      "aria-label": "what-if variants" });
    const tokens = el("input", { id: "whatif-new-tokens", type: "number", min: 0, max: 64, value: 8,
      style: "width:4em" });
    const out = el("div", { id: "whatif" });
    const button = el("button", { id: "whatif-run", type: "button", text: "measure" });
    const box = el("section", { class: "panel wide", id: "whatif-panel" },
      el("h2", {}, "What if", el("span", { class: "chapter",
        text: "Recent improvements to the transformer architecture: sparse attention, grouped-query attention" })),
      el("div", { class: "controls" }, el("label", {}, "variants", specs),
        el("label", {}, "-n", tokens), button), out);
    main.append(box);
    button.addEventListener("click", async () => {
      box.classList.add("busy");
      delete out.dataset.ready;
      try {
        const response = await fetch("/llmscope/v1/explore/what-if", { method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, cache: "no-store", body: JSON.stringify({
            prompt: prompt.value, variants: specs.value.split(/\s+/).filter((s) => s),
            new_tokens: parseInt(tokens.value, 10) || 0 }) });
        const data = await response.json().catch(() => null);
        if (!response.ok) throw new Error(data && data.error ? data.error.message : `HTTP ${response.status}`);
        V.whatif(out, data.result);
        out.dataset.ready = "1";
      } catch (error) {
        V.clear(out).append(el("p", { class: "error", text: String(error.message || error) }));
      } finally {
        box.classList.remove("busy");
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", explorePanel);
  else explorePanel();

  const render = V.renderDocument;
  V.renderDocument = function (container, doc) {
    render(container, doc);
    if (doc.command !== "what-if") return;
    const view = container.querySelector("#view");
    const body = el("div", {});
    V.clear(view).append(el("h2", { text: "What if the attention changed?" }), body);
    V.whatif(body, doc);
  };
})();
