// llmscope's result views: plain DOM, SVG and canvas, no library, no network. Every figure shown is read from a
// result that the library computed (the server's JSON routes, or the JSON inlined in an --html file); nothing is
// computed here but layout, colour, number formatting and the decoding of packed float32 arrays.
"use strict";
(function () {
  const V = {};
  const MARKS = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };

  function el(tag, attrs, ...children) {
    const svg = tag.startsWith("svg:");
    const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  V.el = el;

  function clear(container) { while (container.firstChild) container.removeChild(container.firstChild); return container; }
  V.clear = clear;

  // ------------------------------------------------------------------------------------- numbers and words

  function visible(text) {
    return Array.from(text || "").map((c) => MARKS[c] || (c.charCodeAt(0) < 32 ? "\\x" +
      c.charCodeAt(0).toString(16).padStart(2, "0") : c)).join("");
  }
  V.visible = visible;

  // Token id -> its bytes as hex, for tokens that hold part of a UTF-8 character (byte fallback): what the tokenizer
  // says about a token id never changes, so the page collects these as answers bring them.
  V.byteTokens = new Map();
  V.learnBytes = function (map) {
    for (const [id, hex] of Object.entries(map || {})) V.byteTokens.set(Number(id), hex);
  };
  // A token as the Tokens panel writes it: ⟨hex⟩ for a byte-fallback token, else its text with spaces made visible.
  function label(text, id) {
    const hex = id === undefined || id === null ? undefined : V.byteTokens.get(Number(id));
    return hex ? "⟨" + hex + "⟩" : visible(text);
  }
  V.label = label;

  function fixed(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits === undefined ? 4 : digits);
  }
  V.fixed = fixed;

  // A probability with at least three significant digits: never "0.0000" for a small but real chance.
  function prob(value) {
    if (value === null || value === undefined) return "–";
    const v = Number(value);
    if (v === 0 || v === 1) return String(v);
    if (v >= 0.1) return v.toPrecision(4);
    if (v >= 0.001) return v.toPrecision(3);
    return v.toExponential(2);
  }
  V.prob = prob;

  // Any other number: integers with thousands separators, tiny or huge values as 1e-5, the rest to 4 digits.
  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const a = Math.abs(value);
    if (a !== 0 && (a < 1e-3 || a >= 1e7)) return Number(value.toPrecision(3)).toExponential().replace("e+", "e");
    return String(Number(value.toPrecision(digits || 4)));
  }
  V.num = num;

  function percent(share, digits) {
    return share === null || share === undefined ? "–" : (100 * share).toFixed(digits === undefined ? 1 : digits) + "%";
  }
  V.percent = percent;

  function plural(count, one, many) { return `${num(count)} ${count === 1 ? one : (many || one + "s")}`; }
  V.plural = plural;

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Number(value), unit = 0;
    while (Math.abs(v) >= 1024 && unit < units.length - 1) { v /= 1024; unit += 1; }
    return unit === 0 ? v.toFixed(0) + " B" : v.toFixed(1) + " " + units[unit];
  }
  V.bytes = bytes;

  // A float32 block ({"shape", "float32_base64"}) as a Float32Array with its shape.
  V.float32 = function (block) {
    const raw = atob(block.float32_base64);
    const buffer = new ArrayBuffer(raw.length);
    const view = new Uint8Array(buffer);
    for (let i = 0; i < raw.length; i += 1) view[i] = raw.charCodeAt(i);
    return { values: new Float32Array(buffer), shape: block.shape };
  };

  // ------------------------------------------------------------------------------------- glossary

  const GLOSSARY = {
    token: "A piece of text the model reads as one unit: a word, part of a word, a character or a byte.",
    "token id": "A token's number in the vocabulary. The model only ever sees these numbers.",
    vocabulary: "Every token the tokenizer knows. The LM head gives each of them a score.",
    "byte fallback": "A token that holds only some of the UTF-8 bytes of one character, shown as ⟨hex⟩: it becomes " +
      "a readable character only together with its neighbours.",
    embedding: "The vector the model looks up for a token id: one row of the embedding matrix [vocabulary × hidden " +
      "size].",
    position: "How the model knows the order of tokens: learned position vectors added to the embeddings (GPT-2), " +
      "or RoPE, which rotates queries and keys inside attention (Llama, Qwen, SmolLM2).",
    RoPE: "Rotary position embedding: pairs of query and key dimensions are rotated by an angle that grows with the " +
      "position, so q·k depends on how far apart two tokens are.",
    "hidden size": "The length of the vector that stands for each position inside the model (d).",
    block: "One transformer layer: norm → attention → added to the residual stream, then norm → MLP → added. The " +
      "model stacks N of them.",
    "residual stream": "The running vector of each position: every block reads it and adds its attention and MLP " +
      "outputs back into it.",
    attention: "The step where each position gathers information from earlier positions: a weighted average of " +
      "their value vectors, weighted by how well their keys match its query.",
    head: "One of several attention computations that run side by side in a layer, each with its own queries.",
    query: "q: the vector a position uses to ask what it is looking for.",
    key: "k: the vector each position offers to be matched against queries.",
    value: "v: the vector each position hands over when it is attended to.",
    score: "q·k, the dot product of a query with a key: larger means a better match.",
    scaling: "Scores are multiplied by 1/√(head dim) (or the model's own scale) so that softmax does not saturate as " +
      "vectors get longer.",
    "causal mask": "A query may only look at its own and earlier positions: later keys get −∞ before softmax, so " +
      "their weight is exactly 0.",
    "sliding window": "Some layers let a query see only the last W positions; older keys are masked like future ones.",
    softmax: "Turns scores into probabilities: exp(score − max), divided by the sum over the row. The results are " +
      "positive and add up to 1.",
    "attention weight": "The softmax of a query's scores: how much of each key's value goes into the head's output. " +
      "A row adds up to 1.",
    "head output": "The weighted sum of value vectors for one query. The heads' outputs are joined and projected back " +
      "to the hidden size.",
    GQA: "Grouped-query attention: several query heads share one key/value (KV) head, which shrinks the KV cache. " +
      "Multi-query attention (MQA) is the extreme, one KV head for all.",
    "KV head": "A key/value head: the keys and values that one group of query heads reads.",
    MLP: "The feed-forward sublayer of a block: each position on its own goes up to the intermediate size, through a " +
      "non-linearity, and back down.",
    norm: "Normalisation (RMSNorm or LayerNorm): rescales a vector to a standard size before attention, the MLP and " +
      "the LM head.",
    "norm eps": "A tiny number added under the norm's square root so that it never divides by zero.",
    "L2 norm": "‖x‖, the length of a vector: the square root of the sum of its squared entries.",
    "final norm": "The last normalisation, applied to the residual stream after the last block, before the LM head.",
    "LM head": "The last linear layer: turns a hidden vector into one score (logit) per vocabulary token. Often tied " +
      "to the embedding matrix.",
    logit: "The raw score the LM head gives a token. Softmax turns logits into probabilities; only differences " +
      "between logits matter.",
    probability: "p: the model's chance that a token comes next, from softmax over all logits. All p add up to 1.",
    "log p": "The natural logarithm of a probability (0 or below). Differences of log p are in nats.",
    nats: "The unit of entropy and log-probability when the natural logarithm is used: 1 nat ≈ 1.44 bits.",
    entropy: "How spread out a distribution is, in nats: 0 when one token has all the probability, ln(vocabulary " +
      "size) when all are equal.",
    rank: "A token's place when the vocabulary is sorted by probability: rank 1 is the most likely.",
    "answer rank": "In the logit lens: the rank that the model's final top token already has at that layer.",
    "logit lens": "Reading a block's output through the final norm and the LM head, as if the model stopped there.",
    temperature: "Divides the logits before softmax: below 1 sharpens the distribution, above 1 flattens it.",
    "top-k": "Keep only the k most likely tokens, then renormalise (off = keep all).",
    "top-p": "Keep the smallest set of most likely tokens whose probabilities add up to p (the nucleus), then " +
      "renormalise.",
    greedy: "Always pick the most likely token.",
    sampling: "Pick a token at random, with the probabilities left after temperature, top-k and top-p.",
    "KV cache": "The keys and values of earlier tokens, kept between decoding steps so that a new token's attention " +
      "does not redo the whole prompt.",
    sink: "Attention on the first token: many heads park their attention there when nothing else matters (an " +
      "\"attention sink\").",
    "look-back": "The mean distance, in tokens, from a query to the keys it attends to, weighted by attention.",
    "previous token": "The share of attention on the token just before the query.",
    "same token": "The share of attention a query puts on itself.",
    attribution: "Which prompt tokens pushed the prediction up (red) or down (blue).",
    occlusion: "Leave one token out and see how much log p of the target falls.",
    "input × gradient": "The gradient of log p with respect to a token's embedding, times the embedding, summed over " +
      "its dimensions: a first-order estimate.",
    "integrated gradients": "Gradients averaged along a straight path from a baseline input to the real one, times " +
      "the difference. The parts should add up to the total change (completeness).",
    completeness: "For integrated gradients: the attributions should add up to f(input) − f(baseline). The gap says " +
      "whether enough steps were taken.",
    steps: "How many points along the path integrated gradients evaluates: more steps, a smaller completeness error, " +
      "more time.",
    "attention rollout": "Attention weights multiplied through every layer (with the residual path) to trace where " +
      "information came from. It never looks at the target.",
    parameters: "The model's learned numbers (weights). Their count sets the memory the weights take.",
    "tied embeddings": "The LM head reuses the embedding matrix instead of having its own.",
    "confidence interval": "The range that holds the true value with 95% confidence. When it includes the \"no " +
      "effect\" value, the measurement cannot tell.",
    "speed-up": "Time per token without the cache divided by the time with it: above 1 means the cache helps.",
    shape: "[n, d] means n rows (one per position) of d numbers each.",
  };
  V.GLOSSARY = GLOSSARY;

  // A term of the glossary, explained on hover, on keyboard focus and on tap.
  function term(key, text) {
    if (!GLOSSARY[key]) throw new Error("no glossary entry for " + key);
    return el("span", { class: "term", tabindex: "0", "data-term": key, text: text === undefined ? key : text });
  }
  V.term = term;

  let tip = null, tipFor = null;
  function showTip(target) {
    if (!tip) {
      tip = el("div", { id: "term-tip", role: "tooltip", class: "term-tip" });
      document.body.append(tip);
    }
    if (tipFor && tipFor !== target) tipFor.removeAttribute("aria-describedby");
    tipFor = target;
    tip.textContent = "";
    tip.append(el("strong", { text: target.dataset.term }), " — " + GLOSSARY[target.dataset.term]);
    tip.hidden = false;
    target.setAttribute("aria-describedby", "term-tip");
    const box = target.getBoundingClientRect();
    const width = Math.min(320, document.documentElement.clientWidth - 16);
    tip.style.width = width + "px";
    tip.style.left = Math.max(8, Math.min(box.left + window.scrollX, window.scrollX +
      document.documentElement.clientWidth - width - 8)) + "px";
    tip.style.top = (box.bottom + window.scrollY + 6) + "px";
    tip.dataset.term = target.dataset.term;
  }
  function hideTip() {
    if (tip) { tip.hidden = true; tip.dataset.term = ""; }
    if (tipFor) tipFor.removeAttribute("aria-describedby");
    tipFor = null;
  }
  function termOf(event) { return event.target instanceof Element ? event.target.closest(".term") : null; }
  document.addEventListener("mouseover", (event) => { const t = termOf(event); if (t) showTip(t); });
  document.addEventListener("mouseout", (event) => { if (termOf(event) && document.activeElement !== tipFor) hideTip(); });
  document.addEventListener("focusin", (event) => { const t = termOf(event); if (t) showTip(t); });
  document.addEventListener("focusout", (event) => { if (termOf(event)) hideTip(); });
  // A tap opens a term's entry and a second tap closes it; a mouse click keeps what hovering opened.
  let press = null;
  document.addEventListener("pointerdown", (event) => {
    const t = termOf(event);
    press = t ? { term: t, open: tipFor === t && tip && !tip.hidden, mouse: event.pointerType === "mouse" } : null;
  });
  document.addEventListener("click", (event) => {
    const t = termOf(event);
    if (!t) { if (tipFor) hideTip(); return; }
    const wasOpen = press && press.term === t ? press.open && !press.mouse : tipFor === t && !tip.hidden;
    if (wasOpen) hideTip(); else showTip(t);
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") hideTip(); });

  // ------------------------------------------------------------------------------------- colours and tables

  // Colour scales: a share (0..1) on one hue; signed values on two, never darker than text can be read on.
  function heat(value) {
    const v = Math.max(0, Math.min(1, value));
    return `hsl(212, 80%, ${(97 - 55 * v).toFixed(1)}%)`;
  }
  function signed(value) {
    const v = Math.max(-1, Math.min(1, value));
    return v >= 0 ? `hsl(4, 80%, ${(97 - 32 * v).toFixed(1)}%)` : `hsl(212, 80%, ${(97 + 32 * v).toFixed(1)}%)`;
  }
  V.heat = heat;
  V.signed = signed;

  // A colour legend: a gradient from `colour(0)` to `colour(1)` with labelled ticks.
  function legend(colour, ticks, caption) {
    const stops = [];
    for (let i = 0; i <= 10; i += 1) stops.push(`${colour(i / 10)} ${i * 10}%`);
    return el("div", { class: "legend" }, el("span", { class: "legend-caption", text: caption }),
      el("span", { class: "legend-scale" }, el("span", { class: "legend-bar",
        style: `background:linear-gradient(to right, ${stops.join(", ")})` }),
      el("span", { class: "legend-ticks" }, ticks.map(([at, text]) => el("span", { style: `left:${100 * at}%`, text })))));
  }
  V.legend = legend;

  function bar(share, kind) {
    const width = Math.max(0, Math.min(1, share || 0)) * 100;
    return el("div", { class: "bar-track" }, el("div", { class: "bar" + (kind ? " " + kind : ""),
      style: `width:${width.toFixed(2)}%` }));
  }
  V.bar = bar;

  function table(head, rows, attrs) {
    return el("table", attrs || {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }
  V.table = table;

  function keyValues(pairs, attrs) {
    return el("table", Object.assign({ class: "kv" }, attrs || {}), el("tbody", {}, pairs.filter((p) => p[1] !== undefined)
      .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v === null ? "–" : v instanceof Node ? v : String(v))))));
  }
  V.keyValues = keyValues;

  function note(...parts) { return el("p", { class: "note" }, ...parts); }
  V.note = note;

  // ---------------------------------------------------------------------------------------- tokens

  V.tokens = function (container, result) {
    clear(container);
    const chips = el("div", { class: "chips" });
    for (const token of result.tokens) {
      const partial = token.partial_bytes;
      if (partial) V.byteTokens.set(token.token_id, partial);
      chips.append(el("span", {
        class: "chip" + (token.special ? " special" : "") + (partial ? " byte" : ""),
        "data-token-id": token.token_id, title: `position ${token.position}, id ${token.token_id}, piece ` +
          `${token.piece}` + (partial ? `, bytes ${partial} (byte fallback)` : ""),
      }, el("span", { class: "piece", text: partial ? "⟨" + partial + "⟩" : visible(token.text) }),
      el("span", { class: "id", text: String(token.token_id) })));
    }
    container.append(note(`${plural(result.token_count, "token")}, ${plural(result.characters, "character")} ` +
      `(${fixed(result.characters_per_token, 2)} per token); `, term("vocabulary"), ` of ${num(result.vocab_size)}. ` +
      "Each chip: the token's text (␣ is a space) over its ", term("token id"), ". ⟨hex⟩ marks a ",
      term("byte fallback"), " token."), chips);
  };

  // ---------------------------------------------------------------------------------------- next token

  function probCell(p, kind) {
    return el("td", { class: "num pcell" }, el("span", { text: prob(p) }), bar(p, kind));
  }

  function candidateRows(top, withSampler) {
    return top.map((t) => {
      const cut = withSampler && t.sampler_probability === 0;
      return el("tr", {
        class: "candidate" + (cut ? " cut" : ""), "data-token-id": t.token_id, "data-probability": t.probability,
        "data-logit": t.logit, "data-sampler-probability": withSampler ? t.sampler_probability : null,
      }, el("td", { class: "num", text: t.rank }), el("td", { class: "tok", text: label(t.text, t.token_id),
        title: `id ${t.token_id}, piece ${t.piece}` }),
      probCell(t.probability), el("td", { class: "num", text: fixed(t.logit, 3) }),
      withSampler ? (cut ? el("td", { class: "num pcell", text: "cut" }) : probCell(t.sampler_probability, "sampler"))
        : null);
    });
  }

  function candidateHead(withSampler) {
    return [term("rank", "#"), term("token"), term("probability", "p"), term("logit")]
      .concat(withSampler ? [el("span", {}, term("probability", "p′"), " sampler")] : []);
  }

  const BAR_SCALE = "Bars: probability on a 0 to 1 scale (a full bar is p = 1).";

  V.bars = function (container, result, stepIndex) {
    clear(container);
    const step = result.steps[stepIndex || 0];
    const withSampler = step.top.length > 0 && step.top[0].sampler_probability !== null &&
      step.top[0].sampler_probability !== undefined;
    container.append(note(`After ${plural(step.context_tokens, "token")}: `, term("shape", "hidden states"),
      ` [${result.hidden_shape.join(", ")}] → `, term("LM head"), " → ", term("logit", "logits"),
      ` [${result.logits_shape.join(", ")}]; `, term("softmax"), " of the last row gives p. ", term("entropy", "Entropy"),
      ` ${fixed(step.entropy, 3)} `, term("nats"), ". " + BAR_SCALE),
    table(candidateHead(withSampler), candidateRows(step.top, withSampler), { class: "candidates", "data-step": step.index }));
    if (result.steps.length > 1) {
      const picker = el("div", { class: "controls steps" }, el("span", { class: "note", text: "greedy steps:" }));
      result.steps.forEach((s, i) => picker.append(el("button", { type: "button", "data-step": i,
        class: i === (stepIndex || 0) ? "selected" : null, text: `${i}: ${label(s.chosen.text, s.chosen.token_id)}`,
        onclick: () => V.bars(container, result, i) })));
      container.append(picker, note("greedy continuation: " + visible(result.continuation)));
    }
    if (result.lens) V.lens(container.appendChild(el("div", { class: "lens" })), result.lens, result.lens_note);
  };

  V.sampler = function (container, view) {
    clear(container);
    container.dataset.temperature = view.temperature;
    container.dataset.topK = view.top_k;
    container.dataset.topP = view.top_p;
    const keeps = view.kept === 1 ? "keeps" : "keep";
    container.append(note(term("temperature"), ` ${view.temperature}, `, term("top-k"), ` ${view.top_k || "off"}, `,
      term("top-p"), ` ${view.top_p}: ${plural(view.kept, "token")} of the vocabulary ${keeps} a chance ` +
      "(renormalised to add up to 1); ", term("entropy"), ` ${fixed(view.entropy, 3)} → ${fixed(view.sampler_entropy, 3)} `,
      term("nats"), ". p is the model's, p′ the sampler's; cut rows have no chance. " + BAR_SCALE),
    table(candidateHead(true), candidateRows(view.top, true), { class: "candidates" }));
    if (view.picked) {
      container.append(el("p", { class: "picked", text: `${view.pick} step picked ` +
        `${label(view.picked.text, view.picked.token_id)} (id ${view.picked.token_id}, p ${prob(view.picked.probability)}, ` +
        `p′ ${prob(view.picked.sampler_probability)}` + (view.seed !== null ? `, seed ${view.seed})` : ")") }));
    }
  };

  V.lens = function (container, layers, lensNote) {
    clear(container);
    if (!layers) return;
    container.append(note("The ", term("logit lens"), ": each block's output at the last position through the ",
      term("final norm"), " and the ", term("LM head"), " (layer 0 = the embeddings). The ", term("answer rank"),
      " and answer p follow the model's final top token. " + BAR_SCALE + (lensNote ? " " + lensNote : "")),
    table(["layer", el("span", {}, "top ", term("token")), term("probability", "p"), term("answer rank"),
      el("span", {}, "answer ", term("probability", "p"))],
    layers.map((l) => el("tr", { class: "lens-row", "data-layer": l.layer },
      el("td", { class: "num", text: l.layer }), el("td", { class: "tok", text: label(l.top_text, l.top_id) }),
      el("td", { class: "num", text: prob(l.top_probability) }), el("td", { class: "num", text: num(l.answer_rank) }),
      probCell(l.answer_probability))), { class: "lens-table" }));
  };

  // ---------------------------------------------------------------------------------------- attention

  function weightsOf(result) {
    const block = V.float32(result.weights);
    const [layers, heads, queries, keys] = block.shape;
    return {
      layers, heads, queries, keys,
      at: (l, h, q, k) => block.values[((l * heads + h) * queries + q) * keys + k],
    };
  }

  function thumbColour(v) { return [255 - Math.round(200 * v), 255 - Math.round(150 * v), 255 - Math.round(40 * v)]; }

  function drawThumb(canvas, w, l, h) {
    const n = w.keys, ctx = canvas.getContext("2d");
    const image = ctx.createImageData(n, w.queries);
    for (let q = 0; q < w.queries; q += 1) {
      for (let k = 0; k < n; k += 1) {
        const [r, g, b] = thumbColour(Math.sqrt(Math.max(0, w.at(l, h, q, k))));
        const i = 4 * (q * n + k);
        image.data[i] = r; image.data[i + 1] = g; image.data[i + 2] = b; image.data[i + 3] = 255;
      }
    }
    canvas.width = n; canvas.height = w.queries;
    ctx.putImageData(image, 0, 0);
  }

  function weightLegend() {
    return legend((x) => heat(Math.sqrt(x)), [[0, "0"], [0.25, "0.25"], [0.5, "0.5"], [1, "1"]],
      "attention weight (colour follows √weight, so small weights stay visible; hatched = masked):");
  }

  // The head grid; `options.selected` ({layer, head, query}) opens that head, `options.onSelect(layer, head)` and
  // `options.onQuery(query)` report the reader's choices. Returns { open(layer, head, query) }.
  V.attention = function (container, result, options) {
    clear(container);
    const opts = options || {};
    const w = weightsOf(result);
    container.append(note(`${result.num_layers} layers × ${result.num_heads} heads (${result.layout}, ` +
      `${plural(result.num_kv_heads, "KV head")}); each square is one `, term("head"), "'s ", term("attention weight",
      "weights"), ": rows are queries, columns keys. Heads that share a ", term("KV head"), " (", term("GQA"),
      ") sit in one box. Choose a head (click, or Tab and Enter) for its matrix and lines."), weightLegend());
    const grid = el("div", { class: "attention-grid", role: "group", "aria-label": "attention heads" });
    const matrixBox = el("div", { class: "matrix-box" });
    const groups = result.kv_groups.length ? result.kv_groups : [{ kv_head: 0, heads: result.heads }];
    const headIndex = new Map(result.heads.map((h, i) => [h, i]));
    const layerIndex = new Map(result.layers.map((l, i) => [l, i]));
    const controller = {
      open(layer, head, query, quiet) {
        if (!layerIndex.has(layer) || !headIndex.has(head)) return false;
        for (const other of grid.querySelectorAll(".head-thumb.selected")) {
          other.classList.remove("selected"); other.setAttribute("aria-pressed", "false");
        }
        const button = grid.querySelector(`.head-thumb[data-layer='${layer}'][data-head='${head}']`);
        if (button) { button.classList.add("selected"); button.setAttribute("aria-pressed", "true"); }
        V.headMatrix(matrixBox, result, w, layerIndex.get(layer), headIndex.get(head),
          { query, onQuery: opts.onQuery });
        if (!quiet && opts.onSelect) opts.onSelect(layer, head);
        return true;
      },
    };
    for (let li = 0; li < result.layers.length; li += 1) {
      const layer = result.layers[li];
      const window = result.windows[layer];
      const row = el("div", { class: "layer-row" }, el("span", { class: "layer-label",
        text: `L${layer}` + (window ? ` w${window}` : "") }));
      for (const group of groups) {
        const box = el("span", { class: "kv-group", title: `KV head ${group.kv_head}: query heads ${group.heads.join(", ")}` });
        for (const head of group.heads) {
          if (!headIndex.has(head)) continue;
          const canvas = el("canvas", { "aria-hidden": "true" });
          drawThumb(canvas, w, li, headIndex.get(head));
          box.append(el("button", { type: "button", class: "head-thumb", "data-layer": layer, "data-head": head,
            "aria-pressed": "false", "aria-label": `layer ${layer}, head ${head} (KV head ${group.kv_head})`,
            title: `layer ${layer}, head ${head} (KV head ${group.kv_head})`,
            onclick: () => controller.open(layer, head, undefined) }, canvas));
        }
        row.append(box);
      }
      grid.append(row);
    }
    container.append(grid, matrixBox);
    const chosen = opts.selected;
    if (chosen && controller.open(chosen.layer, chosen.head, chosen.query, true)) return controller;
    return controller;
  };

  function tokenOf(result, position) {
    const token = result.tokens[position];
    return label(token.text, token.token_id);
  }

  // One head: its matrix (query rows selectable by click, tap, Enter or Space) and the lines view beside it.
  V.headMatrix = function (container, result, w, li, hi, options) {
    clear(container);
    const opts = options || {};
    const layer = result.layers[li], head = result.heads[hi];
    const window = result.windows[layer];
    const group = result.kv_groups.find((g) => g.heads.includes(head));
    const readout = el("div", { class: "readout", "aria-live": "polite",
      text: "choose a query token (click or tap it, or Tab to it and press Enter) to read its row" });
    const tbl = el("table", { class: "matrix", id: "matrix", "data-layer": layer, "data-head": head });
    const header = el("tr", {}, el("th", { text: "q \\ k" }));
    for (let k = 0; k < w.keys; k += 1) header.append(el("th", { class: "key", text: tokenOf(result, k) }));
    tbl.append(el("thead", {}, header));
    const body = el("tbody");
    const lines = linesView(result, w, li, hi, window);
    function choose(q) {
      const qi = result.query_positions.indexOf(q);
      if (qi < 0) return;
      for (const other of body.querySelectorAll("tr.hover")) other.classList.remove("hover");
      for (const other of body.querySelectorAll("th.query[aria-pressed='true']")) other.setAttribute("aria-pressed", "false");
      const tr = body.querySelector(`tr[data-q='${q}']`);
      tr.classList.add("hover");
      tr.querySelector("th.query").setAttribute("aria-pressed", "true");
      const parts = [];
      for (let k = 0; k <= q; k += 1) parts.push([w.at(li, hi, qi, k), k]);
      parts.sort((a, b) => b[0] - a[0]);
      readout.textContent = `query ${q} ${tokenOf(result, q)} looks at: ` + parts.slice(0, 5).map(
        ([value, k]) => `${tokenOf(result, k)}@${k} ${prob(value)}`).join(", ");
      readout.dataset.q = q;
      lines.select(q);
    }
    for (let qi = 0; qi < w.queries; qi += 1) {
      const q = result.query_positions[qi];
      const pick = () => { choose(q); if (opts.onQuery) opts.onQuery(q); };
      const labelCell = el("th", { class: "query", text: tokenOf(result, q), "data-q": q, tabindex: "0", role: "button",
        "aria-pressed": "false", "aria-label": `query ${q} ${tokenOf(result, q)}`, onclick: pick,
        onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pick(); } } });
      labelCell.addEventListener("mouseenter", () => choose(q));
      const tr = el("tr", { "data-q": q }, labelCell);
      for (let k = 0; k < w.keys; k += 1) {
        const value = w.at(li, hi, qi, k);
        const hidden = k > q ? "future" : (window && q - k >= window ? "outside-window" : "");
        tr.append(el("td", { class: "cell " + hidden, "data-q": q, "data-k": k, "data-w": hidden === "future" ? null : value,
          style: hidden ? null : `background:${heat(Math.sqrt(value))}`,
          title: hidden ? `${hidden}: masked` : `query ${q} → key ${k}: ${prob(value)}` }));
      }
      body.append(tr);
    }
    tbl.append(body);
    container.append(el("h3", { text: `Layer ${layer}, head ${head}` + (group ? ` (KV head ${group.kv_head}, shared ` +
      `with heads ${group.heads.join(", ")})` : "") + (window ? `, sliding window ${window}` : "") }), readout,
    el("div", { class: "matrix-pair" }, el("div", { class: "matrix-scroll" }, tbl), lines.node));
    const stats = (result.stats || []).find((s) => s.layer === layer && s.head === head);
    if (stats) {
      container.append(note("This head's habits, averaged over the queries from position 2 on:"),
        keyValues([[el("span", {}, "first token (", term("sink"), ")"), percent(stats.first_token)],
          [term("previous token"), percent(stats.previous_token)], [term("same token"), percent(stats.same_token)],
          [el("span", {}, term("look-back"), " (tokens)"), fixed(stats.look_back, 2)],
          [el("span", {}, term("entropy"), " (", term("nats"), ")"), fixed(stats.entropy, 3)]], { class: "kv stats" }));
    }
    const last = result.query_positions[w.queries - 1];
    if (w.queries) choose(opts.query === undefined || opts.query === null ? last : Math.min(opts.query, last));
  };

  // Lines between tokens (one head): queries on the left, keys on the right, a line per attention weight, as thick
  // and as dark as the weight. Choosing a query keeps only its lines.
  const LINE_ROW = 18, MAX_ALL_LINES = 96;
  function linesView(result, w, li, hi, window) {
    const n = w.keys, height = Math.max(n * LINE_ROW + 8, 40), width = 300;
    const svg = el("svg:svg", { class: "lines", viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
      "aria-label": "attention as lines between tokens: queries left, keys right" });
    const y = (i) => 4 + LINE_ROW * i + LINE_ROW / 2;
    const group = el("svg:g", { class: "line-set" });
    svg.append(group);
    const left = [], right = [];
    for (let i = 0; i < n; i += 1) {
      const text = tokenOf(result, i);
      const short = text.length > 12 ? text.slice(0, 11) + "…" : text;
      left.push(el("svg:text", { x: 112, y: y(i) + 4, "text-anchor": "end", class: "line-token", "data-q": i, text: short }));
      right.push(el("svg:text", { x: 188, y: y(i) + 4, class: "line-token key", "data-k": i, text: short }));
    }
    svg.append(...left, ...right);
    function draw(only) {
      clear(group);
      for (let qi = 0; qi < w.queries; qi += 1) {
        const q = result.query_positions[qi];
        if (only !== null && q !== only) continue;
        if (only === null && n > MAX_ALL_LINES) continue;
        for (let k = 0; k <= q; k += 1) {
          if (window && q - k >= window) continue;
          const value = w.at(li, hi, qi, k);
          if (value < 0.005) continue;
          group.append(el("svg:line", { x1: 116, y1: y(q), x2: 184, y2: y(k), "data-q": q, "data-k": k, "data-w": value,
            "stroke-width": (0.5 + 3.5 * value).toFixed(2), "stroke-opacity": (only === null ? 0.15 + 0.6 * value :
              0.25 + 0.75 * value).toFixed(3), class: "line" }));
        }
      }
      for (const t of left) t.classList.toggle("chosen", only !== null && Number(t.dataset.q) === only);
    }
    draw(null);
    return { node: el("div", { class: "lines-box" }, el("div", { class: "note", text: "lines: query → key, " +
      "thicker = more weight (under 0.005 not drawn)" }), svg), select: draw };
  }

  // ---------------------------------------------------------------------------------------- attribution

  V.attribution = function (container, result) {
    clear(container);
    const target = result.targets[0];
    const ids = result.ids || [];
    container.append(note("Which prompt tokens raised (red) or lowered (blue) " + result.target_function + " for " +
      label(target.text !== undefined ? target.text : target.token, target.token_id) + ` (`, term("log p"),
      ` ${fixed(target.logprob, 3)}). Each method's row is coloured on its own scale, from −max to +max of that row ` +
      "(hover a token for its value)."),
    legend((x) => signed(2 * x - 1), [[0, "−max"], [0.5, "0"], [1, "+max"]], "attribution colour:"));
    const names = { occlusion: "occlusion", "input-x-gradient": "input × gradient",
      "integrated-gradients": "integrated gradients", "attention-rollout": "attention rollout" };
    result.targets.forEach((t, ti) => {
      for (const method of result.methods) {
        const row = method.matrix[ti];
        const scale = Math.max(...row.filter((v) => v !== null).map((v) => Math.abs(v)), 1e-12);
        const line = el("div", { class: "attr-row", "data-method": method.method, "data-target": ti, "data-scale": scale },
          el("span", { class: "method" }, names[method.method] ? term(names[method.method]) : method.method,
            el("span", { class: "scale", text: ` max |value| ${num(scale, 3)}` })));
        row.forEach((value, i) => {
          if (value === null) {
            line.append(el("span", { class: "chip attr held", title: "held at the baseline (no attribution)",
              text: label(result.tokens[i], ids[i]) }));
            return;
          }
          line.append(el("span", { class: "chip attr", "data-value": value, style: `background:${signed(value / scale)}`,
            title: `${label(result.tokens[i], ids[i])}: ${num(value, 4)}`, text: label(result.tokens[i], ids[i]) }));
        });
        container.append(line);
        const check = method.completeness ? method.completeness[ti] : null;
        if (check) container.append(completenessLine(check));
      }
      if (result.targets.length > 1) container.append(el("hr"));
    });
  };

  function completenessLine(check) {
    const error = percent(check.relative_error, check.relative_error < 0.001 ? 3 : 1);
    const said = check.converged ? "converged" : "did NOT converge";
    const parts = [term("completeness", "Completeness"), `: the attributions add up to ${num(check.attribution_sum, 4)} ` +
      `and should add up to ${num(check.expected, 4)} (the function's change from the baseline): an error of ` +
      `${error} with ${check.steps} `,
    term("steps"), `: ${said}.`];
    if (!check.converged) {
      parts.push(check.suggested_steps ? ` Try ${check.suggested_steps} steps.` : " More steps may help; read the " +
        "colours as rough.");
    }
    if (check.unsettled && check.unsettled.length) {
      parts.push(` ${plural(check.unsettled.length, "token")} still moved between ${check.compared_steps} and ` +
        `${check.steps} steps.`);
    }
    return el("p", { class: "completeness" + (check.converged ? "" : " warn"), "data-converged": check.converged ? "1" : "0",
      "data-relative-error": check.relative_error }, ...parts);
  }

  // ---------------------------------------------------------------------------------------- scored text

  function tokenStrip(items) {
    return el("div", { class: "chips text" }, items.map((item) => el("span", {
      class: "chip", style: item.colour ? `background:${item.colour}` : null, title: item.title,
      "data-value": item.value, text: visible(item.text) })));
  }

  V.score = function (container, doc) {
    clear(container);
    const items = doc.prompt_logprobs.content.map((t) => ({
      text: t.token, value: t.probability, colour: t.probability === null ? null : heat(1 - t.probability),
      title: t.logprob === null ? "context" : `p ${prob(t.probability)}, log p ${fixed(t.logprob, 3)}, rank ${t.rank}` }));
    container.append(keyValues([["tokens scored", doc.summary.tokens_scored],
      ["perplexity", fixed(doc.summary.perplexity, 3)], [el("span", {}, "mean NLL (", term("nats"), ")"),
        fixed(doc.summary.mean_nll, 4)], ["bits per byte", fixed(doc.summary.bits_per_byte, 4)]]),
    note("darker = more surprising (1 − p)."), legend((x) => heat(x), [[0, "p = 1"], [1, "p = 0"]], "colour:"),
    tokenStrip(items));
  };

  V.compare = function (container, doc) {
    clear(container);
    const largest = Math.max(...doc.positions.map((p) => p.kl), 1e-12);
    const items = doc.positions.map((p) => ({ text: p.text, value: p.kl, colour: heat(p.kl / largest),
      title: `KL ${p.kl.toExponential(3)}; log p A ${fixed(p.a_logprob, 4)} B ${fixed(p.b_logprob, 4)}` +
        (p.top_agree ? "" : `; tops differ: ${JSON.stringify(p.a_top_text)} vs ${JSON.stringify(p.b_top_text)}`) }));
    const s = doc.summary;
    container.append(keyValues([["A", `${doc.model_a} (${doc.dtype_a})`], ["B", `${doc.model_b} (${doc.dtype_b})`],
      ["tokens compared", s.tokens_compared], [el("span", {}, "mean KL(A‖B) ", term("nats")), num(s.kl_mean)],
      ["max KL", num(s.kl_max)], ["top-1 agreement", percent(s.top1_agreement_percent / 100, 2)],
      ["perplexity A / B", `${fixed(s.perplexity_a, 3)} / ${fixed(s.perplexity_b, 3)}`]]),
    note("darker = the models part more (KL at that position, scaled to the largest)."),
    legend((x) => heat(x), [[0, "0"], [1, num(largest)]], "KL:"), tokenStrip(items));
  };

  V.generation = function (container, doc) {
    clear(container);
    const byEntropy = doc.show_probs === "entropy";
    const largest = Math.max(...doc.tokens.map((t) => t.entropy || 0), 1e-12);
    const items = doc.tokens.map((t) => ({ text: t.text, value: byEntropy ? t.entropy : t.probability,
      colour: byEntropy ? heat((t.entropy || 0) / largest) : heat(1 - t.probability),
      title: `p ${prob(t.probability)}, log p ${fixed(t.logprob, 3)}` + (t.entropy !== null ? `, entropy ${fixed(t.entropy, 3)}` : "") }));
    container.append(el("p", { class: "prompt-text", text: doc.prompt }),
      note(byEntropy ? "darker = higher entropy of the distribution the token came from." :
        "darker = less likely under the distribution it was drawn from (1 − p)."), tokenStrip(items),
      keyValues([["new tokens", doc.new_tokens], ["finish", doc.finish_reason], ["mean log p", fixed(doc.mean_logprob, 4)]]));
  };

  // ---------------------------------------------------------------------------------------- cache, architecture

  // A 95% interval said plainly: whether it holds the "no effect" value, and so whether the runs can tell.
  function interval(low, high, none, unit) {
    const range = `${num(low, 3)}${unit} to ${num(high, 3)}${unit}`;
    if (low <= none && none <= high) {
      return `95% interval ${range}: it includes ${num(none)}${unit} (no difference), so these runs cannot tell ` +
        "whether the cache helped; more pairs would narrow it.";
    }
    return `95% interval ${range}: all of it is ${low > none ? "above" : "below"} ${num(none)}${unit}, so the ` +
      `difference is real for these runs.`;
  }
  V.interval = interval;

  V.cache = function (container, result) {
    clear(container);
    const rows = result.size.groups.map((g) => [`${plural(g.layers, g.kind + " layer")}`, `${plural(g.positions, "position")} × ` +
      `${num(g.values_per_token)} values = ${bytes(g.kv_bytes)}` + (g.state_bytes ? ` + state ${bytes(g.state_bytes)}` : "")]);
    container.append(note("The ", term("KV cache"), " keeps each layer's keys and values for every token so far; " +
      "its size grows with the prompt."), keyValues([["prompt tokens", num(result.tokens)], ["KV dtype", result.size.kv_dtype],
      ["cache size", `${bytes(result.total_bytes)} (${num(result.total_bytes)} B)`], ...rows]));
    if (result.bench && result.bench.results.length) {
      const r = result.bench.results[0];
      const ci = r.speedup.interval;
      container.append(note(`With / without the cache: bench-cache's alternating runs (${plural(r.new_tokens, "new token")}, ` +
        `${plural(result.bench.complete_pairs, "pair")} after ${num(result.bench.warmup)} warm-up).`),
      keyValues([["with cache: decode ms/token", fixed(r.cache.decode_ms_per_token.median, 2)],
        ["without cache: decode ms/token", fixed(r.no_cache.decode_ms_per_token.median, 2)],
        [term("speed-up"), fixed(r.speedup.of_means, 2) + "× (of the means)"],
        [term("confidence interval", "95% interval"), ci ? el("span", { class: "interval", "data-low": ci.low,
          "data-high": ci.high, text: interval(ci.low, ci.high, 1, "×") }) : "–"],
        ["same tokens both ways", r.check.identical ? "yes" : "no"],
        ["cache measured after the run", r.kv_cache ? `${bytes(r.kv_cache.measured_bytes)} for ${plural(r.kv_cache.tokens, "token")}` : "–"]],
      { class: "kv bench" }));
      if (r.ttft_note) container.append(note(r.ttft_note));
    }
  };

  function shareRows(parameters) {
    const parts = ["embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "other"];
    const names = { mlp: "MLP", lm_head: "LM head" };
    return parts.filter((p) => parameters[p]).map((p) => el("tr", { class: "param-row", "data-part": p },
      el("th", { text: names[p] || p }), el("td", { class: "num", text: num(parameters[p]) }),
      el("td", { class: "num pcell" }, el("span", { text: percent(parameters[p] / parameters.total) }),
        bar(parameters[p] / parameters.total))));
  }

  V.architecture = function (container, report) {
    clear(container);
    const s = report.summary || report;
    const a = s.attention || {};
    container.append(keyValues([
      ["model", `${report.model} (${s.model_class})`],
      [el("span", {}, term("block", "blocks")), num(s.layers)],
      [term("hidden size"), num(s.hidden_size)],
      [el("span", {}, term("MLP"), " intermediate size"), num(s.intermediate_size)],
      [term("vocabulary"), num(s.vocab_size)],
      ["context length", num(s.context_length)],
      [term("attention"), a.description || "–"],
      ["head dim", num(a.head_dim)],
      [term("position"), s.positional_encoding],
      [term("sliding window"), s.sliding_window ? `${num(s.sliding_window)} on ${plural(s.sliding_window_layers, "layer")}` : "none"],
      [term("norm"), s.norm],
      [term("norm eps"), num(s.norm_eps)],
      ["activation", s.activation],
      [term("tied embeddings"), s.tied_embeddings ? "yes: the LM head is the embedding matrix" : "no"],
      ["dtype, devices", `${s.dtype}, ${(s.devices || []).join(", ")}`],
    ], { class: "kv summary" }));
    const p = report.parameters;
    if (p) {
      container.append(el("h3", {}, term("parameters", "Parameters"), `: ${num(p.total)}` +
        (p.active !== p.total ? ` (${num(p.active)} active per token)` : "")),
      table(["part", "parameters", "share"], shareRows(p), { class: "params" }),
      note("Weights in memory: " + Object.entries(p.memory_bytes).map(([k, v]) => `${k} ${bytes(v)}`).join(" · ")));
    }
    const kv = report.kv_cache;
    if (kv) {
      const saving = kv.saving;
      container.append(el("h3", {}, term("KV cache"), " per token"), keyValues([
        ["bytes per token", `${bytes(kv.bytes_per_token)} (${num(kv.values_per_token)} values × ${kv.bytes_per_value} B, ${kv.dtype})`],
        ["with one KV head per query head", bytes(kv.full_mha_bytes_per_token)],
        [el("span", {}, term("GQA"), " saving"), saving ? `${percent(saving, 0)} smaller than full multi-head attention` :
          "none (every query head has its own KV head)"],
      ], { class: "kv kvcache" }));
      if (kv.note) container.append(note(kv.note));
    }
    const plan = report.plan;
    if (plan && plan.rows.length) {
      const gpus = plan.gpus.map(([name]) => name);
      container.append(el("h3", { text: `Memory plan: batch ${plan.batch_size}, weights in ` +
        `${plan.weights_format || plan.weights_dtype}, KV cache in ${plan.kv_dtype}` }),
      table(["context", "weights", "KV cache", "total"].concat(gpus), plan.rows.map((row) => el("tr", { class: "plan-row" },
        el("td", { class: "num", text: num(row.tokens) }), el("td", { class: "num", text: bytes(plan.weight_bytes) }),
        el("td", { class: "num", text: bytes(row.kv_bytes + (row.state_bytes || 0)) }),
        el("td", { class: "num", text: bytes(row.total_bytes) }),
        row.fits.map((fits) => el("td", { class: fits ? "fits" : "nofit", text: fits ? "fits" : "no" })))), { class: "plan" }),
      note("Weights plus the KV cache at that context; activations and allocator slack come on top."));
    }
  };

  // ---------------------------------------------------------------------------------------- --html documents

  V.renderDocument = function (container, doc) {
    clear(container);
    const titles = { "next-token": "Next token", attention: "Attention", attribute: "Attribution", score: "Score",
      compare: "Compare", generate: "Generate" };
    container.append(el("header", {}, el("h1", { text: `llmscope ${doc.command}` }),
      note(`${doc.model} · ${doc.device} · ${doc.dtype} · llmscope ${doc.llmscope_version}`)));
    const box = el("section", { class: "panel", id: "view" }, el("h2", { text: titles[doc.command] || doc.command }));
    const body = el("div", {});
    box.append(body);
    container.append(box);
    if (doc.command === "next-token") V.bars(body, doc);
    else if (doc.command === "attention") V.attention(body, doc);
    else if (doc.command === "attribute") V.attribution(body, doc);
    else if (doc.command === "score") V.score(body, doc);
    else if (doc.command === "compare") V.compare(body, doc);
    else if (doc.command === "generate") V.generation(body, doc);
    else body.append(el("pre", { text: JSON.stringify(doc, null, 2) }));
  };

  window.LlmscopeViews = V;
  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("llmscope-data");
    if (data) V.renderDocument(document.getElementById("app"), JSON.parse(data.textContent));
  });
})();
