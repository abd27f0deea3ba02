// llmscope's result views: plain DOM + canvas, no library, no network. Every figure shown is read from a result
// that the library computed (the server's JSON routes, or the JSON inlined in an --html file); nothing is computed
// here but layout, colour and the decoding of packed float32 arrays.
"use strict";
(function () {
  const V = {};
  const MARKS = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  V.el = el;

  function visible(text) {
    return Array.from(text || "").map((c) => MARKS[c] || (c.charCodeAt(0) < 32 ? "\\x" +
      c.charCodeAt(0).toString(16).padStart(2, "0") : c)).join("");
  }
  V.visible = visible;

  function fixed(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits === undefined ? 4 : digits);
  }
  V.fixed = fixed;

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Number(value), unit = 0;
    while (Math.abs(v) >= 1024 && unit < units.length - 1) { v /= 1024; unit += 1; }
    return unit === 0 ? v.toFixed(0) + " B" : v.toFixed(1) + " " + units[unit];
  }
  V.bytes = bytes;

  function clear(container) { while (container.firstChild) container.removeChild(container.firstChild); return container; }
  V.clear = clear;

  // A float32 block ({"shape", "float32_base64"}) as a Float32Array with its shape.
  V.float32 = function (block) {
    const raw = atob(block.float32_base64);
    const buffer = new ArrayBuffer(raw.length);
    const view = new Uint8Array(buffer);
    for (let i = 0; i < raw.length; i += 1) view[i] = raw.charCodeAt(i);
    return { values: new Float32Array(buffer), shape: block.shape };
  };

  // Colour scales: probability (0..1) on one hue; signed values on two.
  function heat(value) {
    const v = Math.max(0, Math.min(1, value));
    const light = 97 - 55 * v;
    return `hsl(212, 80%, ${light}%)`;
  }
  function signed(value) {
    const v = Math.max(-1, Math.min(1, value));
    return v >= 0 ? `hsl(4, 80%, ${97 - 45 * v}%)` : `hsl(212, 80%, ${97 + 45 * v}%)`;
  }
  V.heat = heat;

  function table(head, rows, attrs) {
    return el("table", attrs || {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows));
  }

  function keyValues(pairs) {
    return el("table", { class: "kv" }, el("tbody", {}, pairs.filter((p) => p[1] !== undefined).map(
      ([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v === null ? "–" : String(v) })))));
  }
  V.keyValues = keyValues;

  // ---------------------------------------------------------------------------------------- tokens

  V.tokens = function (container, result) {
    clear(container);
    const chips = el("div", { class: "chips" });
    for (const token of result.tokens) {
      const partial = token.partial_bytes;
      chips.append(el("span", {
        class: "chip" + (token.special ? " special" : "") + (partial ? " byte" : ""),
        "data-token-id": token.token_id, title: `position ${token.position}, id ${token.token_id}, piece ` +
          `${token.piece}` + (partial ? `, bytes ${partial} (byte fallback)` : ""),
      }, el("span", { class: "piece", text: partial ? "⟨" + partial + "⟩" : visible(token.text) }),
      el("span", { class: "id", text: String(token.token_id) })));
    }
    container.append(el("p", { class: "note", text: `${result.token_count} tokens, ${result.characters} characters ` +
      `(${fixed(result.characters_per_token, 2)} per token); vocabulary ${result.vocab_size}. ⟨hex⟩ marks a ` +
      "byte-fallback token (part of a UTF-8 character)." }), chips);
  };

  // ---------------------------------------------------------------------------------------- next token

  function candidateRows(top, withSampler) {
    const largest = Math.max(...top.map((t) => t.probability), 1e-12);
    const largestSampler = withSampler ? Math.max(...top.map((t) => t.sampler_probability || 0), 1e-12) : 1;
    return top.map((t) => {
      const cut = withSampler && t.sampler_probability === 0;
      return el("tr", {
        class: "candidate" + (cut ? " cut" : ""), "data-token-id": t.token_id, "data-probability": t.probability,
        "data-logit": t.logit, "data-sampler-probability": withSampler ? t.sampler_probability : null,
      }, el("td", { class: "num", text: t.rank }), el("td", { class: "tok", text: visible(t.text), title: t.piece }),
      el("td", { class: "barcell" }, el("div", { class: "bar", style: `width:${(100 * t.probability / largest).toFixed(2)}%` })),
      el("td", { class: "num", text: fixed(t.probability) }), el("td", { class: "num", text: fixed(t.logit, 3) }),
      withSampler ? el("td", { class: "barcell" }, el("div", {
        class: "bar sampler", style: `width:${(100 * (t.sampler_probability || 0) / largestSampler).toFixed(2)}%` })) : null,
      withSampler ? el("td", { class: "num", text: cut ? "cut" : fixed(t.sampler_probability) }) : null);
    });
  }

  V.bars = function (container, result, stepIndex) {
    clear(container);
    const step = result.steps[stepIndex || 0];
    const withSampler = step.top.length > 0 && step.top[0].sampler_probability !== null &&
      step.top[0].sampler_probability !== undefined;
    const head = ["#", "token", "probability", "p", "logit"].concat(withSampler ? ["sampler", "p′"] : []);
    container.append(el("p", { class: "note", text: `after ${step.context_tokens} tokens: hidden states ` +
      `[${result.hidden_shape.join(", ")}] → LM head → logits [${result.logits_shape.join(", ")}]; softmax of the ` +
      `last row. Entropy ${fixed(step.entropy, 3)} nats.` }),
    table(head, candidateRows(step.top, withSampler), { class: "candidates", "data-step": step.index }));
    if (result.steps.length > 1) {
      const picker = el("div", { class: "controls steps" }, el("span", { class: "note", text: "greedy steps:" }));
      result.steps.forEach((s, i) => picker.append(el("button", { type: "button", "data-step": i,
        class: i === (stepIndex || 0) ? "selected" : null, text: `${i}: ${visible(s.chosen.text)}`,
        onclick: () => V.bars(container, result, i) })));
      container.append(picker, el("p", { class: "note", text: "greedy continuation: " + visible(result.continuation) }));
    }
    if (result.lens) V.lens(container.appendChild(el("div", { class: "lens" })), result.lens, result.lens_note);
  };

  V.sampler = function (container, view) {
    clear(container);
    container.dataset.temperature = view.temperature;
    container.dataset.topK = view.top_k;
    container.dataset.topP = view.top_p;
    container.append(el("p", { class: "note", text: `temperature ${view.temperature}, top-k ${view.top_k || "off"}, ` +
      `top-p ${view.top_p}: ${view.kept} tokens of the vocabulary keep a chance (renormalised to sum to 1); ` +
      `entropy ${fixed(view.entropy, 3)} → ${fixed(view.sampler_entropy, 3)} nats. Greyed rows are cut.` }),
    table(["#", "token", "raw", "p", "logit", "sampler", "p′"], candidateRows(view.top, true), { class: "candidates" }));
    if (view.picked) {
      container.append(el("p", { class: "picked", text: `${view.pick} step picked ${JSON.stringify(view.picked.text)} ` +
        `(id ${view.picked.token_id}, raw p ${fixed(view.picked.probability)}, sampler p ` +
        `${fixed(view.picked.sampler_probability)}` + (view.seed !== null ? `, seed ${view.seed})` : ")") }));
    }
  };

  V.lens = function (container, layers, note) {
    clear(container);
    if (!layers) return;
    container.append(el("p", { class: "note", text: "logit lens: each block's output at the last position through " +
      "the final norm and the LM head (layer 0 = the embeddings)." + (note ? " " + note : "") }),
    table(["layer", "top token", "p", "answer rank", "answer p", ""], layers.map((l) => el("tr", { class: "lens-row" },
      el("td", { class: "num", text: l.layer }), el("td", { class: "tok", text: visible(l.top_text) }),
      el("td", { class: "num", text: fixed(l.top_probability) }), el("td", { class: "num", text: l.answer_rank }),
      el("td", { class: "num", text: fixed(l.answer_probability) }),
      el("td", { class: "barcell" }, el("div", { class: "bar", style: `width:${(100 * l.answer_probability).toFixed(2)}%` })))),
    { class: "lens-table" }));
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

  function drawThumb(canvas, w, l, h) {
    const n = w.keys, ctx = canvas.getContext("2d");
    const image = ctx.createImageData(n, w.queries);
    for (let q = 0; q < w.queries; q += 1) {
      for (let k = 0; k < n; k += 1) {
        const v = Math.sqrt(Math.max(0, w.at(l, h, q, k)));
        const i = 4 * (q * n + k);
        image.data[i] = 255 - Math.round(200 * v); image.data[i + 1] = 255 - Math.round(150 * v);
        image.data[i + 2] = 255 - Math.round(40 * v); image.data[i + 3] = 255;
      }
    }
    canvas.width = n; canvas.height = w.queries;
    ctx.putImageData(image, 0, 0);
  }

  V.attention = function (container, result) {
    clear(container);
    const w = weightsOf(result);
    container.append(el("p", { class: "note", text: `${result.num_layers} layers × ${result.num_heads} heads ` +
      `(${result.layout}, ${result.num_kv_heads} KV heads); rows are queries, columns keys. Heads that share a ` +
      "KV head sit together. Click a head for its matrix; hover a token to read its row." }));
    const grid = el("div", { class: "attention-grid" });
    const matrixBox = el("div", { class: "matrix-box" });
    const groups = result.kv_groups.length ? result.kv_groups : [{ kv_head: 0, heads: result.heads }];
    const headIndex = new Map(result.heads.map((h, i) => [h, i]));
    for (let li = 0; li < result.layers.length; li += 1) {
      const layer = result.layers[li];
      const window = result.windows[layer];
      const row = el("div", { class: "layer-row" }, el("span", { class: "layer-label",
        text: `L${layer}` + (window ? ` w${window}` : "") }));
      for (const group of groups) {
        const box = el("span", { class: "kv-group", title: `KV head ${group.kv_head}: query heads ${group.heads.join(", ")}` });
        for (const head of group.heads) {
          if (!headIndex.has(head)) continue;
          const canvas = el("canvas", { class: "head-thumb", "data-layer": layer, "data-head": head,
            title: `layer ${layer}, head ${head} (KV head ${group.kv_head})` });
          drawThumb(canvas, w, li, headIndex.get(head));
          canvas.addEventListener("click", () => {
            for (const other of grid.querySelectorAll(".head-thumb.selected")) other.classList.remove("selected");
            canvas.classList.add("selected");
            V.headMatrix(matrixBox, result, w, li, headIndex.get(head));
          });
          box.append(canvas);
        }
        row.append(box);
      }
      grid.append(row);
    }
    container.append(grid, matrixBox);
  };

  V.headMatrix = function (container, result, w, li, hi) {
    clear(container);
    const layer = result.layers[li], head = result.heads[hi];
    const window = result.windows[layer];
    const group = result.kv_groups.find((g) => g.heads.includes(head));
    const readout = el("div", { class: "readout", text: "hover a query token to read its row" });
    const tbl = el("table", { class: "matrix", id: "matrix", "data-layer": layer, "data-head": head });
    const header = el("tr", {}, el("th", { text: "q \\ k" }));
    for (let k = 0; k < w.keys; k += 1) header.append(el("th", { class: "key", text: visible(result.tokens[k].text) }));
    tbl.append(el("thead", {}, header));
    const body = el("tbody");
    for (let qi = 0; qi < w.queries; qi += 1) {
      const q = result.query_positions[qi];
      const label = el("th", { class: "query", text: visible(result.tokens[q].text), "data-q": q });
      const tr = el("tr", { "data-q": q }, label);
      for (let k = 0; k < w.keys; k += 1) {
        const value = w.at(li, hi, qi, k);
        const hidden = k > q ? "future" : (window && q - k >= window ? "outside-window" : "");
        tr.append(el("td", { class: "cell " + hidden, "data-q": q, "data-k": k, "data-w": hidden === "future" ? null : value,
          style: hidden ? null : `background:${heat(Math.sqrt(value))}`, title: hidden ? hidden : fixed(value) }));
      }
      label.addEventListener("mouseenter", () => {
        for (const other of body.querySelectorAll("tr.hover")) other.classList.remove("hover");
        tr.classList.add("hover");
        const parts = [];
        for (let k = 0; k <= q; k += 1) parts.push([w.at(li, hi, qi, k), k]);
        parts.sort((a, b) => b[0] - a[0]);
        readout.textContent = `query ${q} ${JSON.stringify(result.tokens[q].text)} looks at: ` + parts.slice(0, 5).map(
          ([value, k]) => `${JSON.stringify(result.tokens[k].text)}@${k} ${fixed(value, 3)}`).join(", ");
        readout.dataset.q = q;
      });
      body.append(tr);
    }
    tbl.append(body);
    container.append(el("h3", { text: `layer ${layer}, head ${head}` + (group ? ` (KV head ${group.kv_head}, shared ` +
      `with heads ${group.heads.join(", ")})` : "") + (window ? `, sliding window ${window}` : "") }), readout,
    el("div", { class: "matrix-scroll" }, tbl));
    const stats = (result.stats || []).find((s) => s.layer === layer && s.head === head);
    if (stats) {
      container.append(keyValues([["first token (sink)", fixed(stats.first_token, 3)],
        ["previous token", fixed(stats.previous_token, 3)], ["same token", fixed(stats.same_token, 3)],
        ["look-back (tokens)", fixed(stats.look_back, 2)], ["entropy (nats)", fixed(stats.entropy, 3)]]));
    }
  };

  // ---------------------------------------------------------------------------------------- attribution

  V.attribution = function (container, result) {
    clear(container);
    const target = result.targets[0];
    container.append(el("p", { class: "note", text: `which prompt tokens raised (red) or lowered (blue) ` +
      `${result.target_function} for ${JSON.stringify(target.text !== undefined ? target.text : target.token)} ` +
      `(log p ${fixed(target.logprob, 3)}); each ` +
      "method's row is scaled to its own largest magnitude." }));
    result.targets.forEach((t, ti) => {
      for (const method of result.methods) {
        const row = method.matrix[ti];
        const scale = Math.max(...row.filter((v) => v !== null).map((v) => Math.abs(v)), 1e-12);
        const line = el("div", { class: "attr-row", "data-method": method.method, "data-target": ti },
          el("span", { class: "method", text: method.method, title: method.question }));
        row.forEach((value, i) => {
          if (value === null) return;
          line.append(el("span", { class: "chip attr", "data-value": value, style: `background:${signed(value / scale)}`,
            title: `${fixed(value, 4)}`, text: visible(result.tokens[i]) }));
        });
        container.append(line);
      }
      if (result.targets.length > 1) container.append(el("hr"));
    });
  };

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
      title: t.logprob === null ? "context" : `p ${fixed(t.probability)}, log p ${fixed(t.logprob, 3)}, rank ${t.rank}` }));
    container.append(keyValues([["tokens scored", doc.summary.tokens_scored],
      ["perplexity", fixed(doc.summary.perplexity, 3)], ["mean NLL (nats)", fixed(doc.summary.mean_nll, 4)],
      ["bits per byte", fixed(doc.summary.bits_per_byte, 4)]]),
    el("p", { class: "note", text: "darker = more surprising (1 − p)." }), tokenStrip(items));
  };

  V.compare = function (container, doc) {
    clear(container);
    const largest = Math.max(...doc.positions.map((p) => p.kl), 1e-12);
    const items = doc.positions.map((p) => ({ text: p.text, value: p.kl, colour: heat(p.kl / largest),
      title: `KL ${p.kl.toExponential(3)}; log p A ${fixed(p.a_logprob, 4)} B ${fixed(p.b_logprob, 4)}` +
        (p.top_agree ? "" : `; tops differ: ${JSON.stringify(p.a_top_text)} vs ${JSON.stringify(p.b_top_text)}`) }));
    const s = doc.summary;
    container.append(keyValues([["A", `${doc.model_a} (${doc.dtype_a})`], ["B", `${doc.model_b} (${doc.dtype_b})`],
      ["tokens compared", s.tokens_compared], ["mean KL(A‖B) nats", s.kl_mean], ["max KL", s.kl_max],
      ["top-1 agreement %", fixed(s.top1_agreement_percent, 2)], ["perplexity A / B",
        `${fixed(s.perplexity_a, 3)} / ${fixed(s.perplexity_b, 3)}`]]),
    el("p", { class: "note", text: "darker = the models part more (KL at that position, scaled to the largest)." }),
    tokenStrip(items));
  };

  V.generation = function (container, doc) {
    clear(container);
    const byEntropy = doc.show_probs === "entropy";
    const largest = Math.max(...doc.tokens.map((t) => t.entropy || 0), 1e-12);
    const items = doc.tokens.map((t) => ({ text: t.text, value: byEntropy ? t.entropy : t.probability,
      colour: byEntropy ? heat((t.entropy || 0) / largest) : heat(1 - t.probability),
      title: `p ${fixed(t.probability)}, log p ${fixed(t.logprob, 3)}` + (t.entropy !== null ? `, entropy ${fixed(t.entropy, 3)}` : "") }));
    container.append(el("p", { class: "prompt-text", text: doc.prompt }),
      el("p", { class: "note", text: byEntropy ? "darker = higher entropy of the distribution the token came from." :
        "darker = less likely under the distribution it was drawn from (1 − p)." }), tokenStrip(items),
      keyValues([["new tokens", doc.new_tokens], ["finish", doc.finish_reason], ["mean log p", fixed(doc.mean_logprob, 4)]]));
  };

  // ---------------------------------------------------------------------------------------- cache, architecture

  V.cache = function (container, result) {
    clear(container);
    const rows = result.size.groups.map((g) => [`${g.layers} ${g.kind} layers`, `${g.positions} positions × ` +
      `${g.values_per_token} values = ${bytes(g.kv_bytes)}` + (g.state_bytes ? ` + state ${bytes(g.state_bytes)}` : "")]);
    container.append(keyValues([["prompt tokens", result.tokens], ["KV dtype", result.size.kv_dtype],
      ["cache bytes", `${bytes(result.total_bytes)} (${result.total_bytes} B)`], ...rows]));
    if (result.bench && result.bench.results.length) {
      const r = result.bench.results[0];
      container.append(el("p", { class: "note", text: `with / without the cache: bench-cache's alternating runs ` +
        `(${r.new_tokens} new tokens, ${result.bench.complete_pairs} pairs after ${result.bench.warmup} warm-up).` }),
      keyValues([["with cache: decode ms/token", fixed(r.cache.decode_ms_per_token.median, 2)],
        ["without cache: decode ms/token", fixed(r.no_cache.decode_ms_per_token.median, 2)],
        ["speed-up (of means)", fixed(r.speedup.of_means, 2) + "×"],
        ["same tokens both ways", r.check.identical ? "yes" : "no"],
        ["cache measured after the run", r.kv_cache ? `${bytes(r.kv_cache.measured_bytes)} for ${r.kv_cache.tokens} tokens` : "–"],
        ["note", r.speedup.note || r.ttft_note || "–"]]));
    }
  };

  V.architecture = function (container, report) {
    clear(container);
    const summary = report.summary || report;
    const pairs = [];
    for (const [key, value] of Object.entries(summary)) {
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        for (const [inner, v] of Object.entries(value)) {
          if (v === null || typeof v !== "object") pairs.push([`${key} ${inner}`.replaceAll("_", " "), v]);
        }
      } else if (!Array.isArray(value)) pairs.push([key.replaceAll("_", " "), value]);
    }
    container.append(keyValues(pairs));
  };

  // ---------------------------------------------------------------------------------------- --html documents

  V.renderDocument = function (container, doc) {
    clear(container);
    const titles = { "next-token": "Next token", attention: "Attention", attribute: "Attribution", score: "Score",
      compare: "Compare", generate: "Generate" };
    container.append(el("header", {}, el("h1", { text: `llmscope ${doc.command}` }),
      el("p", { class: "note", text: `${doc.model} · ${doc.device} · ${doc.dtype} · llmscope ${doc.llmscope_version}` })));
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
