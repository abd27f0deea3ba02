// The explore page: sends the typed prompt to the server's JSON routes (same origin, application/json POSTs) and
// draws the answers with views.js. It keeps only what it was sent; every number comes from the server's library.
"use strict";
(function () {
  const V = window.LlmscopeViews;
  const $ = (id) => document.getElementById(id);
  const state = { run: 0, decode: 0, timings: [] };
  const TARGETS = { next: "bars" };
  window.llmscopeExplore = state;

  async function post(path, body) {
    const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), credentials: "same-origin", cache: "no-store" });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return data.result;
  }

  // Run one panel's request: the panel shows "computing…" until its answer, and an error line if it fails.
  async function panel(name, request, draw, isCurrent) {
    const box = $(name + "-panel"), target = $(TARGETS[name] || name);
    box.classList.add("busy");
    try {
      const result = await request();
      if (isCurrent()) { draw(target, result); target.dataset.ready = "1"; }
      return result;
    } catch (error) {
      if (isCurrent()) { V.clear(target).append(V.el("p", { class: "error", text: String(error.message || error) })); }
      return null;
    } finally {
      if (isCurrent()) box.classList.remove("busy");
    }
  }

  function prompt() { return $("prompt").value; }
  function base() { return { prompt: prompt(), chat: $("chat").checked }; }
  function shown() { return Math.max(1, Math.min(100, parseInt($("shown").value, 10) || 10)); }

  function samplerBody(pick) {
    const body = Object.assign(base(), { temperature: parseFloat($("temperature").value),
      top_k: parseInt($("top-k").value, 10), top_p: parseFloat($("top-p").value), shown: shown() });
    if (pick) body.pick = pick;
    return body;
  }

  function decodeNow(pick) {
    const id = ++state.decode;
    $("decoding").dataset.ready = "";
    return panel("decoding", () => post("/llmscope/v1/explore/decode", samplerBody(pick)), V.sampler,
      () => id === state.decode);
  }

  async function runAll() {
    state.pending.cancel();  // a run for the typed text is starting now: no second one after the pause
    if (!prompt().trim()) return;
    const id = ++state.run;
    const current = () => id === state.run;
    const started = performance.now();
    for (const name of ["tokens", "bars", "attention", "lens", "cache"]) $(name).dataset.ready = "";
    $("status").textContent = "computing…";
    document.body.dataset.run = String(id);
    const first = Promise.all([
      panel("tokens", () => post("/llmscope/v1/tokenize", { text: prompt(), chat: $("chat").checked }), V.tokens,
        current),
      panel("next", () => post("/llmscope/v1/next-token", Object.assign(base(), { top_k: shown() })),
        (el, result) => V.bars(el, result), current),
      panel("attention", () => post("/llmscope/v1/explore/attention", base()), V.attention, current),
    ]);
    const rest = Promise.all([
      decodeNow(null),
      panel("lens", () => post("/llmscope/v1/explore/lens", Object.assign(base(), { top_k: 1 })),
        (el, result) => V.lens(el, result.lens, result.lens_note), current),
      panel("cache", () => post("/llmscope/v1/explore/cache", base()), V.cache, current),
    ]);
    await first;
    if (current()) {
      const ms = performance.now() - started;
      state.timings.push({ prompt: prompt(), tokens_bars_attention_ms: ms });
      $("status").textContent = `tokens, next token and attention in ${Math.round(ms)} ms`;
      document.body.dataset.ready = String(id);
    }
    await rest;
  }

  function debounce(fn, ms) {
    let timer = null;
    const call = (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
    call.cancel = () => clearTimeout(timer);
    return call;
  }

  async function step(pick) {
    const result = await decodeNow(pick);
    if (result && result.picked) {
      $("prompt").value = prompt() + result.picked.text;
      await runAll();
    }
  }

  state.pending = debounce(runAll, 350);

  function showSliders() {
    $("temperature-value").textContent = $("temperature").value;
    $("top-k-value").textContent = $("top-k").value === "0" ? "off" : $("top-k").value;
    $("top-p-value").textContent = $("top-p").value;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const rerun = state.pending;
    const redecode = debounce(() => decodeNow(null), 120);
    $("run").addEventListener("click", runAll);
    $("prompt").addEventListener("input", rerun);
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); runAll(); }
    });
    $("chat").addEventListener("change", runAll);
    $("shown").addEventListener("change", runAll);
    for (const id of ["temperature", "top-k", "top-p"]) {
      $(id).addEventListener("input", () => { showSliders(); redecode(); });
    }
    $("greedy").addEventListener("click", () => step("greedy"));
    $("sample").addEventListener("click", () => step("sample"));
    $("attribute").addEventListener("click", () => panel("attribution", () => post("/llmscope/v1/explore/attribute",
      base()), V.attribution, () => true));
    $("cache-time").addEventListener("click", () => panel("cache", () => post("/llmscope/v1/explore/cache",
      Object.assign(base(), { time: true })), V.cache, () => true));
    showSliders();
    panel("architecture", () => post("/llmscope/v1/explore/architecture", {}), V.architecture, () => true)
      .then((report) => { if (report) $("model-name").textContent = report.summary ? report.summary.name || "" : ""; });
    runAll();
  });
})();
