"""Activation patching, causal tracing and ablation: plan the runs (tokens, answers, cells, cost), then run the
patched cells in batched forward passes and return one grid per site. It never prints or loads a model.

plan_patch() runs the unpatched passes (clean and corrupted, capturing every activation the cells need) and says
what the rest will cost; run_plan() runs the cells, as many batch rows per forward pass as the budget allows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import UsageError
from llmscope.patching.passes import (
    RunInputs,
    embedding_std,
    forward_rows,
    metric_rows,
    run_unpatched,
    shown_tokens,
    single_token,
    subject_positions,
    token_texts,
    top_token,
)
from llmscope.patching.results import (
    Column,
    NoiseInfo,
    PatchCost,
    PatchResult,
    RunSummary,
    SiteGrid,
    Token,
)
from llmscope.patching.settings import PatchSettings, select
from llmscope.patching.sites import SITE_MEANINGS, Replacement, Site, SiteModules, find_site_modules

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

DEFAULT_ROWS = 64  # batch rows per forward pass on a GPU when memory allows more
CPU_ROWS = 16  # on the CPU: 16 rows cost 31 ms of CPU time per cell, 64 rows 37 ms (benchmarks/patch_bench.py)
MEMORY_SHARE = 0.25  # of the memory free now, what the batched passes may plan to use
METRIC_MEANINGS = {
    "logit-diff": "normalised logit difference: (patched - corrupted) / (clean - corrupted) of logit(answer) - "
                  "logit(corrupted answer); 1 = fully restored, 0 = not at all",
    "prob": "probability of the clean answer after patching",
    "logprob": "log-probability of the clean answer after patching",
}
MODE_MEANINGS = {
    "denoise": "each cell copies one clean activation into the corrupted run (does it bring the answer back?)",
    "noise": "each cell copies one corrupted activation into the clean run (does it take the answer away?)",
    "ablate": "each cell replaces one activation of the prompt's run (how much does the answer change?)",
}


Cell = tuple[Site, "int | None"]  # one site to write, and the position in the source run its value comes from
GridPlan = tuple[str, tuple[int, ...], tuple[Column, ...], "int | None"]  # (kind, layers, columns, heads' position)


@dataclass
class PatchPlan:
    """Everything run_plan needs: the runs, the captured activations, the answers, the cells and their cost.
    Holds tensors and the live model; not a result."""

    loaded: Any
    settings: PatchSettings
    sites: SiteModules
    base: RunInputs  # the run the cells are written into
    source: RunInputs | None  # the run the values come from (None for ablation)
    captured: dict[tuple[str, int], Any]  # source activations [variants, seq, width]; for ablation [width]
    runs: dict[str, tuple[RunInputs, dict[tuple[str, int], Any]]]  # "clean" / "corrupt": inputs and activations
    answer: Token
    foil: Token | None
    clean: RunSummary
    corrupt: RunSummary | None
    cells: list[Cell]
    grids: list[GridPlan]
    noise: NoiseInfo | None
    cost: PatchCost
    started: float


def _summary(loaded: LoadedModel, role: str, prompt: str, inputs: RunInputs, logits: Any, answer: Token,
             foil: Token | None, metric: str) -> RunSummary:
    import torch

    probabilities = torch.softmax(logits, dim=-1).double().mean(dim=0)
    top = int(probabilities.argmax())
    values = metric_rows(logits, metric, answer.id, foil.id if foil else None)
    return RunSummary(role=role, prompt=prompt, ids=inputs.ids, tokens=token_texts(loaded.tokenizer, inputs.ids),
                      top=Token(top, loaded.tokenizer.decode([top])), top_probability=float(probabilities[top]),
                      answer_probability=float(probabilities[answer.id]),
                      foil_probability=float(probabilities[foil.id]) if foil else None,
                      metric_value=math.fsum(values) / len(values))


def _activation_width(loaded: LoadedModel) -> int:
    from llmscope.loading.modelconfig import config_value, text_config

    return int(config_value(text_config(loaded.model.config), "hidden_size", "n_embd", default=1024))


def _check_lengths(loaded: LoadedModel, clean: tuple[int, ...], corrupt: tuple[int, ...], align: str | None) -> None:
    if len(clean) == len(corrupt) or align is not None:
        return
    tokenizer = loaded.tokenizer
    raise UsageError(f"the clean prompt is {len(clean)} tokens ({shown_tokens(tokenizer, clean)}) but the corrupted "
                     f"one is {len(corrupt)} ({shown_tokens(tokenizer, corrupt)}): patching needs positions that align",
                     hint="reword one prompt to the same token count, or pass --align start|end to pair positions "
                          "counted from the start or from the end")


def _elements(loaded: LoadedModel) -> int:
    """Bytes per activation value: 2 for bfloat16 / float16 compute (packed matmuls included), else 4."""
    low = ("bfloat16", "float16")
    return 2 if loaded.dtype in low or getattr(loaded, "activations", None) in low else 4


def _weights_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _rows_budget(loaded: LoadedModel, length: int, asked: int | None) -> tuple[int, int]:
    """(rows per forward pass, bytes one row is estimated to need): asked, else what MEMORY_SHARE of the free
    memory holds, at most CPU_ROWS on the CPU and DEFAULT_ROWS elsewhere."""
    from llmscope.loading.modelconfig import config_value, intermediate_size, text_config

    config = text_config(loaded.model.config)
    hidden = int(config_value(config, "hidden_size", "n_embd", default=1024))
    inner = intermediate_size(config) or 4 * hidden
    heads = int(config_value(config, "num_attention_heads", "n_head", default=1))
    vocab = int(config_value(config, "vocab_size", default=32000))
    per_row = length * (12 * hidden + 4 * inner + 2 * heads * length) * _elements(loaded) + 3 * vocab * 4
    if asked is not None:
        return asked, per_row
    free = _free_memory(loaded.device)
    cap = CPU_ROWS if loaded.device == "cpu" else DEFAULT_ROWS
    return max(1, min(cap, int(free * MEMORY_SHARE) // per_row)), per_row


def _free_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # no psutil: assume a modest 4 GiB free
        return 4 * 1024**3


def _columns(loaded: LoadedModel, settings: PatchSettings, base: RunInputs, source: RunInputs | None,
             clean_ids: tuple[int, ...], corrupt_ids: tuple[int, ...] | None) -> list[Column]:
    """The position columns: base positions with a counterpart in the source run, labelled with the clean token."""
    tokenizer = loaded.tokenizer
    shift = 0 if source is None or settings.align != "end" else len(source.ids) - len(base.ids)
    picked = select("--positions", settings.positions, len(base.ids))
    columns = []
    for position in picked:
        other = None if source is None else position + shift
        if other is not None and not 0 <= other < len(source.ids):  # type: ignore[union-attr]
            continue
        clean_position = position if settings.mode != "denoise" else other
        label = tokenizer.decode([clean_ids[clean_position]])  # type: ignore[index]
        corrupt_position = position if settings.mode == "denoise" else other
        corrupt_token = None
        if corrupt_ids is not None and corrupt_position is not None:
            token = tokenizer.decode([corrupt_ids[corrupt_position]])
            corrupt_token = token if corrupt_ids[corrupt_position] != clean_ids[clean_position] else None  # type: ignore[index]
        columns.append(Column(index=position, label=label, source_position=other, other_token=corrupt_token))
    if not columns:
        raise UsageError("--positions leaves no position that both prompts have", hint="widen --positions")
    return columns


def _inputs(loaded: LoadedModel, clean: str, corrupt: str | None, settings: PatchSettings
            ) -> tuple[RunInputs, RunInputs | None, NoiseInfo | None]:
    """The clean run, the corrupted one (a text, or the clean prompt with noise on its subject; None for ablation)
    and the noise drawn."""
    import torch

    from llmscope.generation.prompts import encode_prompt

    clean_ids = encode_prompt(loaded, clean).ids
    if settings.noise_subject is not None:
        positions = subject_positions(loaded, clean, clean_ids, settings.noise_subject)
        std, hidden = embedding_std(loaded.model)
        generator = torch.Generator().manual_seed(settings.seed)
        draws = torch.randn(settings.samples, len(positions), hidden, generator=generator) * (
            settings.noise_scale * std)
        noise = NoiseInfo(subject=settings.noise_subject, positions=positions, samples=settings.samples,
                          seed=settings.seed, scale=settings.noise_scale, embedding_std=std,
                          std=settings.noise_scale * std)
        return RunInputs(clean_ids), RunInputs(clean_ids, draws, positions), noise
    if corrupt is not None:
        corrupt_ids = encode_prompt(loaded, corrupt, what="--corrupt").ids
        _check_lengths(loaded, clean_ids, corrupt_ids, settings.align)
        return RunInputs(clean_ids), RunInputs(corrupt_ids), None
    if settings.ablate is None:
        raise UsageError("patch needs a corrupted run: --corrupt TEXT or --corrupt-noise SUBJECT, or --ablate")
    return RunInputs(clean_ids), None, None


def _layout(loaded: LoadedModel, settings: PatchSettings, sites: SiteModules, layers: tuple[int, ...],
            base: RunInputs, source: RunInputs | None, clean: RunInputs, corrupt: RunInputs | None
            ) -> tuple[list[Cell], list[GridPlan], int]:
    """The cells (every site x layer x column) with the grids they fill, and the position columns' count."""
    columns = _columns(loaded, settings, base, source, clean.ids, corrupt.ids if corrupt else None)
    cells: list[Cell] = []
    grids: list[GridPlan] = []
    for kind in settings.sites:
        if kind == "heads":
            position = len(base.ids) - 1
            other = None if source is None else len(source.ids) - 1
            head_columns = tuple(Column(index=h, label=f"h{h}") for h in range(sites.heads))
            grids.append((kind, layers, head_columns, position))
            cells.extend((Site(kind, layer, position, h), other) for layer in layers for h in range(sites.heads))
        else:
            grids.append((kind, layers, tuple(columns), None))
            cells.extend((Site(kind, layer, c.index), c.source_position) for layer in layers for c in columns)
    return cells, grids, len(columns)


def _answers(loaded: LoadedModel, settings: PatchSettings, clean_logits: Any, corrupt_logits: Any
             ) -> tuple[Token, Token | None]:
    """The clean answer (--target, else the clean run's top token) and the corrupted one (--corrupt-target, else
    the corrupted run's top token; None when ablating without one)."""
    tokenizer = loaded.tokenizer
    answer = single_token(tokenizer, "--target", settings.target) if settings.target else top_token(
        tokenizer, clean_logits)
    foil = None
    if settings.corrupt_target is not None:
        foil = single_token(tokenizer, "--corrupt-target", settings.corrupt_target)
    elif corrupt_logits is not None:
        foil = top_token(tokenizer, corrupt_logits)
    if settings.chosen_metric == "logit-diff" and foil is not None and foil.id == answer.id:
        raise UsageError(f"the clean and corrupted answers are the same token ({answer.text!r}): their logit "
                         "difference is 0 in both runs", hint="name them with --target / --corrupt-target, or use "
                         "--metric prob or logprob")
    return answer, foil


def fitting_ranges(settings: PatchSettings, layers: int, positions: int, heads: int, per_cell: int) -> str:
    """What to narrow so that the run fits --max-passes, with values that do fit: the first N layers, else one
    layer and the last N positions, else fewer sites or samples."""
    budget = settings.max_passes // per_cell  # cells that fit
    position_sites = sum(kind != "heads" for kind in settings.sites)
    head_cells = heads if "heads" in settings.sites else 0
    per_layer = positions * position_sites + head_cells
    fitting_layers = min(budget // per_layer, layers) if per_layer else layers
    if fitting_layers >= 1:
        chosen = "-1" if fitting_layers == 1 else f"0:{fitting_layers}"
        return f"narrow the blocks: --layers {chosen} fits ({fitting_layers * per_layer * per_cell:,} patched runs)"
    if position_sites and not head_cells and budget >= position_sites:  # --positions cannot go with --site heads
        fitting_positions = min(budget // position_sites, positions)
        chosen = "-1" if fitting_positions == 1 else f"-{fitting_positions}:"
        runs = fitting_positions * position_sites * per_cell
        return f"narrow both: --layers -1 --positions {chosen} fits ({runs:,} patched runs)"
    least = (position_sites + head_cells) * per_cell
    cut = "--samples" if per_cell > 1 else "--site kinds (run --site heads apart)" if head_cells else "--site kinds"
    return f"even one block at one position is {least:,} patched runs: fewer {cut}"


def plan_patch(loaded: LoadedModel, clean: str, corrupt: str | None, settings: PatchSettings) -> PatchPlan:
    """Tokenize both prompts, list the cells and check their cost against --max-passes, then run both prompts
    unpatched (capturing every activation the cells need) and pick the answers. Raises UsageError for prompts
    that do not align, answers that cannot be told apart, or a run past --max-passes."""
    started = time.perf_counter()
    sites = find_site_modules(loaded.model)
    layers = select("--layers", settings.layers, sites.layers)
    keys = [(kind, layer) for kind in settings.sites for layer in layers]
    for kind, layer in keys:
        sites.module(kind, layer)
    if "heads" in settings.sites and not sites.heads:
        raise UsageError("this model has no attention heads to patch", hint="use --site resid, attn or mlp")
    clean_inputs, corrupt_inputs, noise_info = _inputs(loaded, clean, corrupt, settings)
    if settings.mode == "denoise":
        base, source = corrupt_inputs, clean_inputs
    elif settings.mode == "noise":
        base, source = clean_inputs, corrupt_inputs
    else:
        base, source = clean_inputs, None
    assert base is not None
    cells, grids, positions = _layout(loaded, settings, sites, layers, base, source, clean_inputs, corrupt_inputs)
    per_cell = max(base.variants, source.variants if source is not None else 1)
    rows = len(cells) * per_cell
    if rows > settings.max_passes:
        sizes = " x ".join(f"{n} {what}" for n, what in ((len(layers), "layers"), (positions, "positions"),
                                                        (len(settings.sites), "sites"), (per_cell, "samples"))
                           if n > 1)
        raise UsageError(f"{rows:,} patched runs ({sizes}) exceed --max-passes {settings.max_passes:,}",
                         hint=f"{fitting_ranges(settings, len(layers), positions, sites.heads, per_cell)}, "
                              f"or raise --max-passes to {rows}")
    longest = max(len(clean_inputs.ids), len(corrupt_inputs.ids) if corrupt_inputs else 0)
    budget, per_row = _rows_budget(loaded, longest, settings.rows_per_pass)
    width = min(budget, rows)
    weights = _weights_bytes(loaded.model)
    captured_bytes = len(keys) * (per_cell + 1) * longest * _activation_width(loaded) * _elements(loaded)
    cost = PatchCost(cells=len(cells), rows=rows, rows_per_pass=width, passes=math.ceil(rows / width),
                     peak_bytes_estimate=weights + captured_bytes + width * per_row, weights_bytes=weights)
    # The unpatched runs, capturing what the cells will need, at the cells' batch size.
    clean_logits, clean_capture = run_unpatched(loaded, clean_inputs, sites, keys, width)
    corrupt_logits, corrupt_capture = None, {}
    if corrupt_inputs is not None:
        corrupt_logits, corrupt_capture = run_unpatched(loaded, corrupt_inputs, sites, keys, width)
    answer, foil = _answers(loaded, settings, clean_logits, corrupt_logits)
    metric = settings.chosen_metric
    clean_summary = _summary(loaded, "clean" if settings.ablate is None else "prompt", clean, clean_inputs,
                             clean_logits, answer, foil, metric)
    corrupt_summary = None
    if corrupt_inputs is not None:
        corrupt_summary = _summary(loaded, "corrupt", corrupt if corrupt is not None else clean, corrupt_inputs,
                                   corrupt_logits, answer, foil, metric)
        if metric == "logit-diff" and clean_summary.metric_value == corrupt_summary.metric_value:
            raise UsageError("the logit difference is the same in the clean and corrupted runs: nothing to restore",
                             hint="use --metric prob or logprob")
    runs = {"clean": (clean_inputs, clean_capture)}
    if corrupt_inputs is not None:
        runs["corrupt"] = (corrupt_inputs, corrupt_capture)
    if settings.mode == "ablate":
        captured = _ablation_values(loaded, sites, keys, settings, clean_capture)
    else:
        captured = runs["clean" if settings.mode == "denoise" else "corrupt"][1]
    return PatchPlan(loaded=loaded, settings=settings, sites=sites, base=base, source=source, captured=captured,
                     runs=runs, answer=answer, foil=foil, clean=clean_summary, corrupt=corrupt_summary,
                     cells=cells, grids=grids, noise=noise_info, cost=cost, started=started)


def _ablation_values(loaded: LoadedModel, sites: SiteModules, keys: list[tuple[str, int]],
                     settings: PatchSettings, shapes: dict[tuple[str, int], Any]) -> dict[tuple[str, int], Any]:
    """--ablate zero: zeros; --ablate mean: each site's mean over the --reference text's positions. [width]"""
    import torch

    from llmscope.generation.prompts import encode_prompt

    if settings.ablate == "mean":
        assert settings.reference is not None
        reference = RunInputs(encode_prompt(loaded, settings.reference, what="--reference").ids)
        capture: dict[tuple[str, int], Any] = dict.fromkeys(keys)
        forward_rows(loaded, reference, [0], sites, 1, capture=capture)
        return {key: value[0].double().mean(dim=0).float() for key, value in capture.items()}
    return {key: torch.zeros_like(shapes[key][0, 0]) for key in keys}


def _cell_value(plan: PatchPlan, site: Site, source_position: int | None, variant: int) -> Any:
    """The value one row writes: the source's activation (one head's slice for heads), or the ablation value."""
    value = plan.captured[(site.kind, site.layer)]
    if plan.source is not None:
        value = value[variant, source_position]
    if site.head is not None:
        size = value.shape[-1] // plan.sites.heads
        value = value[site.head * size:(site.head + 1) * size]
    return value


def run_plan(plan: PatchPlan) -> PatchResult:
    """Run every cell of the plan (cells x samples batch rows, rows_per_pass at a time) and build the grids."""
    import torch

    settings = plan.settings
    metric = settings.chosen_metric
    base, source = plan.base, plan.source
    per_cell = max(base.variants, source.variants if source is not None else 1)
    rows = [(cell, k) for cell in range(len(plan.cells)) for k in range(per_cell)]
    parts: list[list[float]] = [[] for _ in plan.cells]
    for start in range(0, len(rows), plan.cost.rows_per_pass):
        chunk = rows[start:start + plan.cost.rows_per_pass]
        grouped: dict[tuple[str, int], list[tuple[int, int, int | None, Any]]] = {}
        variants = []
        for row, (cell, k) in enumerate(chunk):
            site, other = plan.cells[cell]
            source_variant = k if source is not None and source.variants > 1 else 0
            value = _cell_value(plan, site, other, source_variant)
            grouped.setdefault((site.kind, site.layer), []).append((row, site.position, site.head, value))
            variants.append(k if base.variants > 1 else 0)
        replace = {key: Replacement(rows=torch.tensor([e[0] for e in edits]),
                                    positions=torch.tensor([e[1] for e in edits]),
                                    values=torch.stack([e[3] for e in edits]),
                                    heads=torch.tensor([e[2] for e in edits]) if key[0] == "heads" else None)
                   for key, edits in grouped.items()}
        logits = forward_rows(plan.loaded, base, variants, plan.sites, plan.cost.rows_per_pass, replace=replace)
        for (cell, _), value in zip(chunk, metric_rows(logits, metric, plan.answer.id,
                                                        plan.foil.id if plan.foil else None)):
            parts[cell].append(value)
    return _result(plan, [math.fsum(values) / len(values) for values in parts])


def _finish(plan: PatchPlan, value: float) -> float:
    """A cell's mean metric as shown: normalised for logit-diff patching, a change for ablation, raw otherwise."""
    if plan.settings.ablate is not None:
        return value - plan.clean.metric_value + 0.0
    if plan.settings.chosen_metric == "logit-diff":
        assert plan.corrupt is not None
        return (value - plan.corrupt.metric_value) / (plan.clean.metric_value - plan.corrupt.metric_value) + 0.0
    return value


def _result(plan: PatchPlan, means: list[float]) -> PatchResult:
    settings = plan.settings
    index = {site: number for number, (site, _) in enumerate(plan.cells)}
    grids = []
    for kind, layers, columns, position in plan.grids:
        values = []
        for layer in layers:
            if kind == "heads":
                row = [means[index[Site(kind, layer, position, c.index)]] for c in columns]
            else:
                row = [means[index[Site(kind, layer, c.index)]] for c in columns]
            values.append(tuple(_finish(plan, v) for v in row))
        grids.append(SiteGrid(site=kind, meaning=SITE_MEANINGS[kind], layers=layers, columns=columns,
                              column_kind="head" if kind == "heads" else "position", position=position,
                              values=tuple(values)))
    metric = settings.chosen_metric
    meaning = METRIC_MEANINGS[metric]
    if settings.ablate is not None:
        meaning = f"change in the {metric} of the answer when the site is ablated (ablated - original)"
        if metric == "logit-diff":
            meaning = "change in logit(answer) - logit(foil) when the site is ablated (ablated - original)"
    corruption = settings.ablate or ("noise" if plan.noise is not None else "text")
    return PatchResult(
        model=plan.loaded.spec.name, mode=settings.mode, mode_meaning=MODE_MEANINGS[settings.mode],
        corruption=corruption, metric=metric, metric_meaning=meaning,
        normalised=metric == "logit-diff" and settings.ablate is None, answer=plan.answer, foil=plan.foil,
        clean=plan.clean, corrupt=plan.corrupt,
        patched_run={"denoise": "corrupt", "noise": "clean", "ablate": "prompt"}[settings.mode],
        align=settings.align, noise=plan.noise, reference=settings.reference, grids=tuple(grids), cost=plan.cost,
        seconds=time.perf_counter() - plan.started)


def patch(loaded: LoadedModel, clean: str, corrupt: str | None = None, settings: PatchSettings | None = None
          ) -> PatchResult:
    """Plan and run one patching (or ablation) job (library entry: plan_patch, then run_plan)."""
    return run_plan(plan_patch(loaded, clean, corrupt, settings or PatchSettings()))
