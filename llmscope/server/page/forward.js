// The explore page's teaching views: the forward pass drawn as one strip, how much each block writes into the
// residual stream, and one attention head taken apart step by step. The step-by-step arithmetic (q·k, scaling, mask,
// softmax, weighted sum) is redone here from the q, k and v vectors the server captured, and set beside the model's
// own weights and output so that a reader can check it.
"use strict";
(function () {
  const V = window.LlmscopeViews;
  const { el, clear, term, num, prob, note, bar, plural } = V;

  // ------------------------------------------------------------------------------------- the strip

  // `arch`: the architecture route's report; `tokens`: the prompt's token count (null before the first answer);
  // `open(panelId)` shows a panel. Every stage is a button that opens the panel explaining it.
  V.strip = function (container, arch, tokens, open) {
    clear(container);
    const s = arch.summary, a = s.attention || {};
    const n = tokens === null || tokens === undefined ? "n" : String(tokens);
    const d = num(s.hidden_size), vocab = num(s.vocab_size);
    const rotary = /rotary|rope/i.test(s.positional_encoding || "");
    const stage = (key, panel, title, shape, extra) => el("button", { type: "button", class: "stage", "data-stage": key,
      "aria-controls": panel, onclick: () => open(panel) }, el("span", { class: "stage-title", text: title }),
    el("span", { class: "stage-shape", text: shape }), extra ? el("span", { class: "stage-extra", text: extra }) : null);
    const arrow = () => el("span", { class: "arrow", "aria-hidden": "true", text: "→" });
    const kvPerToken = arch.kv_cache ? V.bytes(arch.kv_cache.bytes_per_token) + " per token" : "";
    const block = el("div", { class: "stage block-stage", "data-stage": "blocks" },
      el("button", { type: "button", class: "stage-title link", "aria-controls": "blocks-panel",
        onclick: () => open("blocks-panel"), text: `${num(s.layers)} × block` }),
      el("span", { class: "stage-shape", text: `[${n}, ${d}] → [${n}, ${d}]` }),
      el("span", { class: "block-parts" },
        el("button", { type: "button", class: "sub", "data-stage": "attention", "aria-controls": "attention-panel",
          onclick: () => open("attention-panel"), text: `norm → attention: ${num(a.heads)} heads × ${num(a.head_dim)}` +
            (a.kv_heads && a.kv_heads !== a.heads ? `, ${num(a.kv_heads)} KV` : "") + " → +" }),
        el("button", { type: "button", class: "sub", "data-stage": "mlp", "aria-controls": "blocks-panel",
          onclick: () => open("blocks-panel"), text: `norm → MLP: ${d} → ${num(s.intermediate_size)} → ${d} → +` })));
    container.append(el("div", { class: "strip-row" },
      stage("tokens", "tokens-panel", "tokens", `${n} ids`), arrow(),
      stage("embedding", "blocks-panel", "embedding", `[${n}, ${d}]`,
        rotary ? "position: RoPE, in attention" : `+ position: ${s.positional_encoding || "learned"}`), arrow(),
      block, arrow(),
      stage("final-norm", "lens-panel", "final norm", `[${n}, ${d}]`), arrow(),
      stage("lm-head", "next-panel", "LM head", `${d} → ${vocab}`, s.tied_embeddings ? "tied to the embedding" : null),
      arrow(),
      stage("logits", "next-panel", "logits", `[${n}, ${vocab}]`), arrow(),
      stage("softmax", "next-panel", "softmax", `p [${vocab}]`, "last row"), arrow(),
      stage("decoding", "decoding-panel", "decoding", "→ 1 token", "temperature, top-k, top-p"), arrow(),
      stage("feedback", "cache-panel", "fed back", `[${tokens === null || tokens === undefined ? "n + 1" : tokens + 1}]`,
        "KV cache: " + kvPerToken)),
    note("One forward pass of ", arch.model, " on this prompt, with its tensor shapes (n tokens, hidden size d, ",
      term("vocabulary"), " V). Choose a stage to open its panel. The chosen token is appended and the pass runs " +
      "again; the ", term("KV cache"), " keeps earlier keys and values so that only the new token is computed."));
  };

  // ------------------------------------------------------------------------------------- residual stream

  // `norms`: the lens route's block norms; `which`: "last" (the position predicting the next token) or "mean".
  V.blockNorms = function (container, norms, which, choose) {
    clear(container);
    const rows = norms[which];
    const values = rows.flatMap((r) => [r.residual_in, r.attention, r.mlp, r.added, r.residual_out])
      .filter((v) => v !== null);
    const largest = Math.max(...values, 1e-30);
    const cell = (v) => v === null ? el("td", { class: "num", text: "–" }) :
      el("td", { class: "num pcell" }, el("span", { text: num(v, 3) }), bar(v / largest, "norm"));
    const toggle = el("div", { class: "controls", role: "group", "aria-label": "position" },
      ["last", "mean"].map((key) => el("button", { type: "button", class: key === which ? "selected" : null,
        "aria-pressed": key === which ? "true" : "false", "data-which": key, onclick: () => choose(key),
        text: key === "last" ? `last position (${norms.position})` : "mean over positions" })));
    container.append(note("How much each ", term("block"), " writes into the ", term("residual stream"), ": the ",
      term("L2 norm"), " of the stream entering the block, of the ", term("attention"), " and ", term("MLP"),
      " outputs it adds, of their sum (added) and of the stream leaving it. " +
      `Bars share one scale: 0 to the largest value in the table (${num(largest, 3)}).`), toggle,
    V.table(["block", "‖in‖", el("span", {}, "+ ", term("attention")), el("span", {}, "+ ", term("MLP")), "added",
      "‖out‖"], rows.map((r) => el("tr", { class: "norm-row", "data-layer": r.layer, "data-in": r.residual_in,
      "data-attention": r.attention, "data-mlp": r.mlp, "data-added": r.added, "data-out": r.residual_out },
    el("td", { class: "num", text: r.layer }), cell(r.residual_in), cell(r.attention), cell(r.mlp), cell(r.added),
    cell(r.residual_out))), { class: "norms" }),
    norms.adds_up ? note("In every block, added = attention + MLP (a plain residual block).") :
      note("In this model a block's change is not exactly attention + MLP" + (norms.largest_mismatch === null ? "" :
        ` (largest mismatch ${V.percent(norms.largest_mismatch)})`) + ": it normalises a sublayer's output before " +
        "adding it, or llmscope could not find both sublayers."));
  };

  // ------------------------------------------------------------------------------------- attention, step by step

  function vectorText(values, count) {
    const shown = Array.from(values.slice(0, count), (v) => num(v, 3));
    return "[" + shown.join(", ") + (values.length > count ? `, … ${values.length - count} more]` : "]");
  }

  // The arithmetic of one query row, from q, k and v (float32 values, computed in float64 like the check).
  V.headArithmetic = function (steps, query) {
    const d = steps.head_dim, dv = steps.value_dim, n = steps.tokens;
    const Q = V.float32(steps.q).values, K = V.float32(steps.k).values, Vals = V.float32(steps.v).values;
    const rows = [];
    for (let j = 0; j < n; j += 1) {
      let dot = 0;
      for (let t = 0; t < d; t += 1) dot += Q[query * d + t] * K[j * d + t];
      let scaled = dot * steps.scale;
      if (steps.softcap) scaled = steps.softcap * Math.tanh(scaled / steps.softcap);
      const mask = j > query ? "future" : (steps.window && query - j >= steps.window ? "window" : "");
      rows.push({ key: j, dot, scaled, mask });
    }
    const seen = rows.filter((r) => !r.mask);
    const peak = Math.max(...seen.map((r) => r.scaled));
    let total = 0;
    for (const r of rows) { r.exp = r.mask ? 0 : Math.exp(r.scaled - peak); total += r.exp; }
    for (const r of rows) r.weight = r.exp / total;
    const output = new Array(dv).fill(0);
    for (const r of rows) {
      if (!r.weight) continue;
      for (let t = 0; t < dv; t += 1) output[t] += r.weight * Vals[r.key * dv + t];
    }
    return { rows, peak, total, output, q: Q.slice(query * d, (query + 1) * d) };
  };

  // `steps`: the attention route's head_steps; `tokens`: [{text, token_id}] by position; `query`: the position;
  // `on.query(q)` and `on.head(head)` report the reader's choices.
  V.headSteps = function (container, steps, tokens, query, on) {
    clear(container);
    const n = steps.tokens, i = Math.min(query === null || query === undefined ? n - 1 : query, n - 1);
    const math = V.headArithmetic(steps, i);
    const model = V.float32(steps.weights).values, modelOut = V.float32(steps.output).values;
    const tokenText = (p) => V.label(tokens[p].text, tokens[p].token_id);
    container.dataset.layer = steps.layer;
    container.dataset.head = steps.head;
    container.dataset.query = i;
    let largestGap = 0;
    for (const r of math.rows) largestGap = Math.max(largestGap, Math.abs(r.weight - model[i * n + r.key]));
    let outGap = 0;
    math.output.forEach((v, t) => { outGap = Math.max(outGap, Math.abs(v - modelOut[i * steps.value_dim + t])); });
    container.dataset.weightGap = largestGap;
    container.dataset.outputGap = outGap;

    const picker = el("select", { id: "steps-query", "aria-label": "query position",
      onchange: (event) => on.query(Number(event.target.value)) },
    tokens.slice(0, n).map((t, p) => el("option", { value: p, selected: p === i ? true : null,
      text: `${p}: ${tokenText(p)}` })));
    const masked = math.rows.filter((r) => r.mask);
    const future = masked.filter((r) => r.mask === "future").length;
    const outside = masked.length - future;
    const sqrtNote = Math.abs(steps.scale - 1 / Math.sqrt(steps.head_dim)) < 1e-9 ?
      `1/√${steps.head_dim} = ${num(steps.scale, 4)}` : `${num(steps.scale, 4)} (this model's own scale)`;
    const rowsTable = V.table(["key", term("token"), term("score", "q·k"), term("scaling", "scaled"),
      term("attention weight", "weight")], math.rows.map((r) => el("tr", {
      class: "step-row" + (r.mask ? " masked" : ""), "data-k": r.key, "data-dot": r.dot, "data-scaled": r.scaled,
      "data-mask": r.mask, "data-weight": r.weight, "data-model-weight": model[i * n + r.key] },
    el("td", { class: "num", text: r.key }), el("td", { class: "tok", text: tokenText(r.key) }),
    el("td", { class: "num", text: num(r.dot, 4) }),
    el("td", { class: "num", text: r.mask ? `−∞ (${r.mask === "future" ? "future" : "outside window"})` : num(r.scaled, 4) }),
    el("td", { class: "num pcell" }, el("span", { text: r.mask ? "0" : prob(r.weight) }), bar(r.weight)))),
    { class: "steps-table" });
    const top = math.rows.filter((r) => !r.mask).sort((a, b) => b.weight - a.weight).slice(0, 3);
    const outValues = el("div", { class: "vector" }, Array.from(math.output, (v, t) => el("span", { class: "out-value",
      "data-t": t, "data-value": v, "data-model": modelOut[i * steps.value_dim + t], text: num(v, 3) })));
    const groupBox = el("div", { class: "gqa", role: "group", "aria-label": "query heads by KV head" });
    const size = steps.num_heads / steps.num_kv_heads;
    for (let g = 0; g < steps.num_kv_heads; g += 1) {
      const heads = [];
      for (let h = 0; h < steps.num_heads; h += 1) if (Math.min(Math.floor(h / size), steps.num_kv_heads - 1) === g) heads.push(h);
      groupBox.append(el("span", { class: "gqa-group" + (g === steps.kv_head ? " current" : "") },
        el("span", { class: "gqa-kv", text: `KV ${g}` }), heads.map((h) => el("button", { type: "button",
          class: "gqa-head" + (h === steps.head ? " selected" : ""), "data-head": h, "aria-pressed": h === steps.head ?
            "true" : "false", "aria-label": `head ${h}`, text: String(h), onclick: () => on.head(h) }))));
    }
    const shared = steps.group.length > 1 ? `heads ${steps.group.join(", ")} share its keys and values, so the ` +
      `KV cache holds ${plural(steps.num_kv_heads, "KV head")} instead of ${steps.num_heads}` :
      "no other head reads them";
    container.append(
      el("h3", { text: `Layer ${steps.layer}, head ${steps.head}, query ${i} (${tokenText(i)}): step by step` }),
      el("div", { class: "controls" }, el("label", {}, "query ", picker)),
      el("div", { class: "gqa-box" }, note("Head ", String(steps.head), " reads ", term("KV head"), ` ${steps.kv_head}; ` +
        shared + "."), groupBox),
      el("ol", { class: "steps" },
        el("li", {}, el("strong", {}, term("score", "Scores")), ": the ", term("query"), ` of position ${i} (`,
          el("code", { text: vectorText(math.q, 6) }), `, ${steps.head_dim} values`,
          on.rotary ? el("span", {}, ", after ", term("RoPE"), " rotated it") : null, ") is multiplied with every ",
          term("key"),
          (on.rotary ? " (rotated too)" : "") + ": q·k = Σ qₜkₜ."),
        el("li", {}, el("strong", {}, term("scaling", "Scaling")), `: each score × ${sqrtNote}.` +
          (steps.softcap ? ` Then soft-capped: ${num(steps.softcap)} × tanh(score / ${num(steps.softcap)}).` : "")),
        el("li", {}, el("strong", {}, term("causal mask", "Mask")), `: ${plural(future, "later key")} ` +
          (outside ? `and ${plural(outside, "key")} outside the `: "") , outside ? term("sliding window") : null,
          outside ? ` of ${steps.window}` : "", masked.length ? ` ${masked.length === 1 ? "is" : "are"} set to −∞, so their weight is 0.` :
          " to hide: the last query sees every key."),
        el("li", {}, el("strong", {}, term("softmax", "Softmax")), `: the largest scaled score is ${num(math.peak, 4)}; ` +
          `Σ exp(score − ${num(math.peak, 4)}) = ${num(math.total, 4)}; each weight is its exp divided by that sum ` +
          `(they add up to 1). Largest difference from the model's own weights in this row: ${num(largestGap)}.`),
        el("li", {}, el("strong", {}, term("head output", "Weighted sum")), ": the ", term("head output"), " is Σ " +
          "weight × ", term("value"), ` (${steps.value_dim} values; most from ` + top.map((r) =>
          `${tokenText(r.key)}@${r.key} ${prob(r.weight)}`).join(", ") + "):", outValues,
        note(`Largest difference from the model's own head output: ${num(outGap)}. It is joined with the other ` +
          `${steps.num_heads - 1} heads' outputs, projected back to the hidden size and added to the residual stream.`))),
      el("div", { class: "steps-scroll" }, rowsTable));
  };
})();
