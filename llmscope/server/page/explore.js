// The explore page: sends the typed prompt to the server's JSON routes (same origin, application/json POSTs) and
// draws the answers with views.js and forward.js. It keeps only what it was sent; every number comes from the server's
// library. A request the page no longer wants (an older prompt, a moved slider, another head) is aborted, so that the
// server can drop its job, and one prompt has at most one run in flight.
"use strict";
(function () {
  const V = window.LlmscopeViews;
  const $ = (id) => document.getElementById(id);
  const ROUTES = {
    tokenize: "/llmscope/v1/tokenize", next: "/llmscope/v1/explore/next-token", lens: "/llmscope/v1/explore/lens",
    attention: "/llmscope/v1/explore/attention",
    decode: "/llmscope/v1/explore/decode", cache: "/llmscope/v1/explore/cache",
    attribute: "/llmscope/v1/explore/attribute", architecture: "/llmscope/v1/explore/architecture",
  };
  // panel name -> [its section, the element its answer is drawn in, what a reader calls it]
  const PANELS = {
    tokens: ["tokens-panel", "tokens", "Tokens"], next: ["next-panel", "bars", "Next token"],
    decoding: ["decoding-panel", "decoding", "Decoding"], blocks: ["blocks-panel", "blocks", "Blocks"],
    lens: ["lens-panel", "lens", "Logit lens"], attention: ["attention-panel", "attention", "Attention"],
    steps: ["attention-panel", "head-steps", "Attention step by step"],
    attribution: ["attribution-panel", "attribution", "Attribution"], cache: ["cache-panel", "cache", "KV cache"],
    architecture: ["architecture-panel", "architecture", "Architecture"],
  };
  const PER_PROMPT = ["tokens", "next", "decoding", "blocks", "lens", "attention", "steps", "attribution", "cache"];
  const state = {
    run: 0, decode: 0, steps: 0, attribution: 0, timing: 0, timings: [], controllers: new Map(),
    selection: { layer: 0, head: 0, query: null }, which: "last", arch: null, attention: null, view: null,
    headSteps: null, blocks: null, tokenCount: null, runningKey: null, shownKey: null,
  };
  window.llmscopeExplore = state;

  // ------------------------------------------------------------------------------------- requests

  class Abandoned extends Error {}
  class Failure extends Error {
    constructor(kind, message, hint) { super(message); this.kind = kind; this.hint = hint; }
  }

  function failureOf(status, data) {
    const message = data && data.error && data.error.message ? data.error.message : `HTTP ${status}`;
    if (status === 400 || status === 413 || status === 422) {
      return new Failure("refused", `the server refused it: ${message}.`, "Change the prompt or the setting it " +
        "names, then run again.");
    }
    if (status === 401 || status === 403) {
      return new Failure("key", `the server asks for a key: ${message}.`, "This page sends no key: open it from an " +
        "explore started without --api-key.");
    }
    if (status === 429 || status === 503) {
      return new Failure("busy", `the server is busy: ${message}.`, "Wait a moment and run again.");
    }
    if (status === 504) {
      return new Failure("timeout", `${message}.`, "Shorten the prompt or lower the steps; explore --job-timeout " +
        "gives each job more time.");
    }
    return new Failure("server", `the server failed (HTTP ${status}): ${message}.`, "The terminal running " +
      "`llmscope explore` says more.");
  }

  // A new controller for `name`, aborting the request it replaces.
  function controllerFor(name) {
    abort(name);
    const controller = new AbortController();
    state.controllers.set(name, controller);
    return controller;
  }
  function abort(...names) {
    for (const name of names) {
      const controller = state.controllers.get(name);
      if (controller) { controller.abort(); state.controllers.delete(name); }
    }
  }

  async function post(path, body, signal) {
    let response, data = null;
    try {
      response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), credentials: "same-origin", cache: "no-store", signal });
      try { data = await response.json(); } catch (error) { if (signal && signal.aborted) throw error; data = null; }
    } catch (error) {
      if (signal && signal.aborted) throw new Abandoned("aborted");
      throw new Failure("gone", "the server does not answer: it has stopped, or the network is down.",
        "Start `llmscope explore` again and press Run (the prompt is kept in this page's address).");
    }
    if (!response.ok) throw failureOf(response.status, data);
    if (data && data.partial_bytes) V.learnBytes(data.partial_bytes);
    if (data && data.model_info) nameModel(data.model_info.model);
    return data;
  }

  function nameModel(model) {
    if (!model || $("model-name").textContent === "· " + model) return;
    $("model-name").textContent = "· " + model;
    document.title = `llmscope explore · ${model}`;
  }

  // ------------------------------------------------------------------------------------- panels

  function say(text, kind) {
    $("status").textContent = text;
    $("status").dataset.kind = kind || "";
  }

  function showError(name, error, retry) {
    const [, targetId, title] = PANELS[name];
    const target = V.clear($(targetId));
    target.dataset.error = error.kind;
    target.append(V.el("div", { class: "panel-error", role: "alert" },
      V.el("p", { class: "error", text: `${title} failed: ${error.message}` }),
      V.el("p", { class: "hint", text: error.hint }),
      retry ? V.el("button", { type: "button", text: "try again", onclick: retry }) : null));
  }

  // Run one request for the panels in `names`: they show "computing…" until the answer, then `draw(answer)`; an
  // error is said in each panel with what to do. A request that is no longer current draws nothing.
  async function panel(names, request, draw, current, retry) {
    const boxes = names.map((name) => $(PANELS[name][0]));
    for (const name of names) {
      const target = $(PANELS[name][1]);
      target.dataset.ready = "";
      delete target.dataset.error;
    }
    boxes.forEach((box) => box.classList.add("busy"));
    try {
      const data = await request();
      if (!current()) return { abandoned: true };
      draw(data);
      for (const name of names) {
        $(PANELS[name][1]).dataset.ready = "1";
        $(PANELS[name][0]).classList.remove("stale");
      }
      return { result: data.result, data };
    } catch (error) {
      if (!current() || error instanceof Abandoned) return { abandoned: true };
      if (!(error instanceof Failure)) error = new Failure("page", String(error.message || error), "Reload the page.");
      for (const name of names) {
        showError(name, error, retry);
        $(PANELS[name][0]).classList.remove("stale");
      }
      return { error, names };
    } finally {
      if (current()) boxes.forEach((box) => box.classList.remove("busy"));
    }
  }

  function markStale() {
    for (const name of PER_PROMPT) {
      const target = $(PANELS[name][1]);
      if (target.childNodes.length) $(PANELS[name][0]).classList.add("stale");
    }
  }

  function unmarkStale() {
    for (const name of PER_PROMPT) if (name !== "attribution") $(PANELS[name][0]).classList.remove("stale");
  }

  // ------------------------------------------------------------------------------------- settings and address

  function prompt() { return $("prompt").value; }
  function base() { return { prompt: prompt(), chat: $("chat").checked }; }
  function shown() { return Math.max(1, Math.min(100, parseInt($("shown").value, 10) || 10)); }
  function runKey() { return JSON.stringify([prompt(), $("chat").checked, shown()]); }

  function samplerBody(pick) {
    const body = Object.assign(base(), { temperature: parseFloat($("temperature").value),
      top_k: parseInt($("top-k").value, 10), top_p: parseFloat($("top-p").value), shown: shown() });
    if (pick) body.pick = pick;
    return body;
  }

  // The address carries the prompt and the chosen head, so that a page can be bookmarked and shared.
  function writeAddress() {
    const params = new URLSearchParams();
    if (prompt()) params.set("prompt", prompt());
    if ($("chat").checked) params.set("chat", "1");
    params.set("layer", state.selection.layer);
    params.set("head", state.selection.head);
    if (state.selection.query !== null) params.set("query", state.selection.query);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
  }

  function readAddress() {
    const params = new URLSearchParams(location.search);
    if (params.has("prompt")) $("prompt").value = params.get("prompt");
    if (params.get("chat") === "1") $("chat").checked = true;
    const count = (key) => {
      const value = Number(params.get(key));
      return params.has(key) && Number.isInteger(value) && value >= 0 ? value : null;
    };
    state.selection = { layer: count("layer") || 0, head: count("head") || 0, query: count("query") };
  }

  // ------------------------------------------------------------------------------------- drawing answers

  function openPanel(id) {
    const box = $(id);
    box.scrollIntoView({ block: "start" });
    box.focus({ preventScroll: true });
    box.classList.remove("flash");
    void box.offsetWidth;  // restart the highlight
    box.classList.add("flash");
  }

  function drawStrip() {
    if (state.arch) V.strip($("strip"), state.arch, state.tokenCount, openPanel);
  }

  function drawTokens(data) {
    V.tokens($("tokens"), data.result);
    state.tokenCount = data.result.token_count;
    drawStrip();
  }

  function drawBlocks() {
    if (state.blocks) V.blockNorms($("blocks"), state.blocks, state.which, (which) => { state.which = which; drawBlocks(); });
  }

  function drawLens(data) {
    V.lens($("lens"), data.result.lens, data.result.lens_note);
    state.blocks = data.blocks;
    drawBlocks();
  }

  function rotary() {
    return Boolean(state.arch && /rotary|rope/i.test(state.arch.summary.positional_encoding || ""));
  }

  function drawSteps() {
    const steps = state.headSteps;
    if (!steps || !state.attention) return;
    V.headSteps($("head-steps"), steps, state.attention.tokens, state.selection.query, {
      rotary: rotary(), query: (q) => chooseQuery(q, true), head: (h) => state.view.open(state.selection.layer, h) });
  }

  function drawAttention(data) {
    state.attention = data.result;
    const chosen = state.selection;
    const known = data.result.layers.includes(chosen.layer) && data.result.heads.includes(chosen.head);
    if (!known) state.selection = { layer: data.result.layers[0], head: data.result.heads[0], query: null };
    state.view = V.attention($("attention"), data.result, { selected: state.selection,
      onSelect: chooseHead, onQuery: (q) => chooseQuery(q, false) });
    const steps = data.head_steps;
    if (steps && steps.layer === state.selection.layer && steps.head === state.selection.head) {
      state.headSteps = steps;
      drawSteps();
    }  // else the reader chose another head while this answer was on its way: chooseHead's request draws it
  }

  // A head chosen in the address that this model does not have falls back to layer 0, head 0.
  function keepSelectionInside(summary) {
    const heads = summary.attention ? summary.attention.heads : null;
    if (!(state.selection.layer < summary.layers) || (heads && !(state.selection.head < heads))) {
      state.selection = { layer: 0, head: 0, query: null };
    }
  }

  function lastPosition() { return state.attention ? state.attention.tokens.length - 1 : null; }

  function chooseQuery(q, fromSteps) {
    state.selection.query = q === lastPosition() ? null : q;
    writeAddress();
    if (fromSteps && state.view) state.view.open(state.selection.layer, state.selection.head, q, true);
    drawSteps();
  }

  function chooseHead(layer, head) {
    state.selection.layer = layer;
    state.selection.head = head;
    writeAddress();
    const id = ++state.steps, run = state.run;
    const controller = controllerFor("steps");
    return panel(["steps"], () => post(ROUTES.attention, Object.assign(base(), { layer, head, weights: false }),
      controller.signal), (data) => { state.headSteps = data.head_steps; drawSteps(); },
    () => id === state.steps && run === state.run, () => chooseHead(layer, head));
  }

  // ------------------------------------------------------------------------------------- runs

  function decodeNow(pick) {
    const id = ++state.decode;
    const controller = controllerFor("decode");
    return panel(["decoding"], () => post(ROUTES.decode, samplerBody(pick), controller.signal),
      (data) => V.sampler($("decoding"), data.result), () => id === state.decode, () => decodeNow(pick));
  }

  function failedNames(outcomes) {
    return outcomes.filter((o) => o.error).flatMap((o) => o.names.map((n) => PANELS[n][2]));
  }

  function statusAfter(outcomes, lead) {
    const failed = outcomes.filter((o) => o.error);
    if (!failed.length) return say(lead, "ok");
    const first = failed[0].error;
    const names = failedNames(outcomes);
    if (failed.length === outcomes.length && lead.startsWith("Tokens")) {
      return say(`Nothing was computed: ${first.message} ${first.hint}`, "error");
    }
    say(`${names.join(", ")} failed: ${first.message} ${first.hint}`, "error");
  }

  function showEmpty() {
    abort("run", "decode", "steps", "attribution", "cache-time");
    state.run += 1; state.decode += 1; state.steps += 1; state.attribution += 1; state.timing += 1;
    for (const name of PER_PROMPT) {
      const [boxId, targetId] = PANELS[name];
      const target = V.clear($(targetId));
      target.dataset.ready = "";
      if (name !== "steps") target.append(V.note("No prompt: type some text above to see this panel."));
      $(boxId).classList.remove("stale", "busy");
    }
    state.tokenCount = null;
    state.attention = null;
    drawStrip();
    document.body.dataset.empty = "1";
    say("The prompt is empty (or only white space): type some text and the page runs it.", "empty");
    writeAddress();
  }

  // Run the typed prompt through every per-prompt panel. `again`: run even when this prompt is already shown
  // (Run, Enter); a prompt already running is never started twice.
  async function runAll(again) {
    state.pending.cancel();
    const key = runKey();
    if (key === state.runningKey) return;
    if (!again && key === state.shownKey) { unmarkStale(); return; }
    if (!prompt().trim()) { state.runningKey = null; state.shownKey = key; showEmpty(); return; }
    delete document.body.dataset.empty;
    abort("run", "decode", "steps", "cache-time");
    if (state.controllers.has("attribution")) cancelAttribution("the prompt changed; press the button to attribute " +
      "the new one.");
    const id = ++state.run;
    const current = () => id === state.run;
    const controller = controllerFor("run");
    const signal = controller.signal;
    state.runningKey = key;
    state.shownKey = null;
    const started = performance.now();
    markStale();
    say("computing…", "busy");
    document.body.dataset.run = String(id);
    writeAddress();
    const attentionBody = Object.assign(base(), { layer: state.selection.layer, head: state.selection.head });
    const again_ = () => runAll(true);
    const first = Promise.all([
      panel(["tokens"], () => post(ROUTES.tokenize, { text: prompt(), chat: $("chat").checked }, signal), drawTokens,
        current, again_),
      panel(["next"], () => post(ROUTES.next, Object.assign(base(), { top_k: shown() }), signal),
        (data) => V.bars($("bars"), data.result), current, again_),
      panel(["attention", "steps"], () => post(ROUTES.attention, attentionBody, signal), drawAttention, current, again_),
    ]);
    const rest = Promise.all([
      decodeNow(null),
      panel(["lens", "blocks"], () => post(ROUTES.lens, Object.assign(base(), { top_k: 1 }), signal), drawLens, current,
        again_),
      panel(["cache"], () => post(ROUTES.cache, base(), signal), (data) => V.cache($("cache"), data.result), current,
        again_),
    ]);
    const outcomes = await first;
    if (!current()) return;
    const ms = performance.now() - started;
    state.timings.push({ prompt: prompt(), tokens_bars_attention_ms: ms });
    const lead = `Tokens, next token and attention for ${V.plural(state.tokenCount || 0, "token")} in ${Math.round(ms)} ms`;
    statusAfter(outcomes, lead + "; the other panels are still computing…");
    document.body.dataset.ready = String(id);
    const more = await rest;
    if (!current()) return;
    const all = outcomes.concat(more.filter((o) => !o.abandoned));
    state.runningKey = null;
    state.shownKey = all.some((o) => o.error) ? null : key;
    statusAfter(all, `${lead}; every panel drawn in ${Math.round(performance.now() - started)} ms.`);
    document.body.dataset.done = String(id);
  }

  function debounce(fn, ms) {
    let timer = null;
    const call = (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
    call.cancel = () => clearTimeout(timer);
    return call;
  }

  async function step(pick) {
    if (!prompt().trim()) {
      say("The prompt is empty: a step appends a token to it, so type something first.", "empty");
      return;
    }
    const outcome = await decodeNow(pick);
    const picked = outcome.result && outcome.result.picked;
    if (!picked) return;
    if (V.byteTokens.has(picked.token_id)) {
      say(`The ${pick} step picked ${V.label(picked.text, picked.token_id)}, part of a character: its text alone ` +
        "cannot be appended. Take another step or type the character.", "error");
      return;
    }
    $("prompt").value = prompt() + picked.text;
    await runAll(true);
  }

  // ------------------------------------------------------------------------------------- attribution, cache timing

  function methods() {
    return Array.from(document.querySelectorAll("input[name='method']:checked"), (box) => box.value);
  }

  function cancelAttribution(why) {
    abort("attribution");
    state.attribution += 1;
    $("attribute-cancel").hidden = true;
    $("attribution-panel").classList.remove("busy");
    const target = V.clear($("attribution"));
    target.dataset.ready = "";
    target.append(V.note("Attribution cancelled: " + why));
  }

  function attribute() {
    const chosen = methods();
    if (!prompt().trim()) {
      showError("attribution", new Failure("empty", "the prompt is empty.", "Type a prompt first."));
      return;
    }
    if (!chosen.length) {
      showError("attribution", new Failure("empty", "no method is chosen.", "Tick at least one method."));
      return;
    }
    const id = ++state.attribution;
    const controller = controllerFor("attribution");
    const steps = parseInt($("attribution-steps").value, 10);
    $("attribute-cancel").hidden = false;
    const asked = prompt();
    return panel(["attribution"], () => post(ROUTES.attribute, Object.assign(base(), { steps, methods: chosen }),
      controller.signal), (data) => {
      V.attribution($("attribution"), data.result);
      $("attribution").dataset.prompt = asked;
    }, () => id === state.attribution, attribute).finally(() => {
      if (id === state.attribution) { $("attribute-cancel").hidden = true; state.controllers.delete("attribution"); }
    });
  }

  function timeCache() {
    if (!prompt().trim()) return;
    const id = ++state.timing;
    const controller = controllerFor("cache-time");
    return panel(["cache"], () => post(ROUTES.cache, Object.assign(base(), { time: true }), controller.signal),
      (data) => V.cache($("cache"), data.result), () => id === state.timing, timeCache);
  }

  // ------------------------------------------------------------------------------------- start

  function showSliders() {
    $("temperature-value").textContent = $("temperature").value;
    $("top-k-value").textContent = $("top-k").value === "0" ? "off" : $("top-k").value;
    $("top-p-value").textContent = $("top-p").value;
  }

  function drawGlossary() {
    const list = V.clear($("glossary"));
    for (const key of Object.keys(V.GLOSSARY).sort((a, b) => a.localeCompare(b))) {
      list.append(V.el("dt", { id: "glossary-" + key.replace(/[^a-z0-9]+/gi, "-"), text: key }),
        V.el("dd", { text: V.GLOSSARY[key] }));
    }
  }

  state.pending = debounce(() => runAll(false), 350);

  document.addEventListener("DOMContentLoaded", () => {
    readAddress();
    const redecode = debounce(() => { if (prompt().trim()) decodeNow(null); }, 120);
    $("run").addEventListener("click", () => runAll(true));
    $("prompt").addEventListener("input", () => {
      markStale();
      say("The prompt changed: it runs when you stop typing (or press Enter).", "busy");
      state.pending();
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); runAll(true); }
    });
    $("chat").addEventListener("change", () => runAll(false));
    $("shown").addEventListener("change", () => runAll(false));
    for (const id of ["temperature", "top-k", "top-p"]) {
      $(id).addEventListener("input", () => { showSliders(); redecode(); });
    }
    $("greedy").addEventListener("click", () => step("greedy"));
    $("sample").addEventListener("click", () => step("sample"));
    $("attribute").addEventListener("click", attribute);
    $("attribute-cancel").addEventListener("click", () => cancelAttribution("stopped; the server drops the job."));
    for (const box of document.querySelectorAll("input[name='method']")) {
      box.addEventListener("change", () => {
        $("attribution-steps").disabled = !methods().includes("integrated-gradients");
        $("attribute").disabled = methods().length === 0;
      });
    }
    $("cache-time").addEventListener("click", timeCache);
    for (const box of document.querySelectorAll(".panel")) {
      box.addEventListener("animationend", () => box.classList.remove("flash"));
    }
    showSliders();
    drawGlossary();
    const controller = controllerFor("architecture");
    panel(["architecture"], () => post(ROUTES.architecture, {}, controller.signal), (data) => {
      state.arch = data.result;
      nameModel(data.result.model);
      V.architecture($("architecture"), data.result);
      keepSelectionInside(data.result.summary);
      drawStrip();
    }, () => true, () => window.location.reload()).then(() => runAll(true));
  });
})();
