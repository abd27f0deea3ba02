"""Activation patching and ablation on tiny models: self-patching gives exactly 1 and 0, one cell against a
hand-written torch hook, batched cells against single ones, zero / mean ablation and seeded noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from llmscope.core.errors import UsageError
from llmscope.patching.settings import PatchSettings, select, site_list

CLEAN = "The capital of France is"


CORRUPT = "The capital of Rome is"  # the same 8 tokens in the tiny tokenizer


ANSWERS = {"target": " capital", "corrupt_target": " of"}  # single tokens of the tiny tokenizer


ALL_SITES = ("resid", "attn", "mlp", "heads")


def plan(loaded: Any, **changes: Any) -> Any:
    from llmscope.patching.patcher import plan_patch

    options = {"sites": ALL_SITES, **ANSWERS, **changes}
    return plan_patch(loaded, CLEAN, options.pop("corrupt", CORRUPT), PatchSettings(**options))


def values(result: Any) -> list[float]:
    return [v for grid in result.grids for row in grid.values for v in row]


def reference_logits(model: Any, clean_ids: list[int], corrupt_ids: list[int], module: Any, position: int,
                     width: slice | None, pre: bool) -> Any:
    """Plain torch: capture `module`'s output (or input) in the clean run, write it at `position` (the `width`
    slice only) into the corrupted run, and return the last position's logits."""
    import torch

    saved: dict[str, Any] = {}

    def first(value: Any) -> Any:
        return value[0] if isinstance(value, tuple) else value

    def keep(_module: Any, args: Any, output: Any = None) -> None:
        saved["clean"] = first(args if pre else output).detach().clone()

    def write(_module: Any, args: Any, output: Any = None) -> Any:
        tensor = first(args if pre else output).clone()
        columns = width or slice(None)
        tensor[0, position, columns] = saved["clean"][0, position, columns]
        if pre:
            return (tensor, *args[1:])
        return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

    with torch.no_grad():
        handle = module.register_forward_pre_hook(keep) if pre else module.register_forward_hook(keep)
        model(torch.tensor([clean_ids]))
        handle.remove()
        handle = module.register_forward_pre_hook(write) if pre else module.register_forward_hook(write)
        logits = model(torch.tensor([corrupt_ids])).logits[0, -1].double()
        handle.remove()
    return logits


def test_selections_read_like_python_slices() -> None:
    assert select("--layers", None, 4) == (0, 1, 2, 3)
    assert select("--layers", "1:3", 4) == (1, 2)
    assert select("--layers", "-1", 4) == (3,)
    assert select("--layers", "2:", 5) == (2, 3, 4)
    assert select("--positions", "0,-1,0", 6) == (0, 5)
    with pytest.raises(UsageError, match="out of range"):
        select("--layers", "7", 4)
    with pytest.raises(UsageError, match="not an index or a range"):
        PatchSettings(layers="a:b")
    assert site_list(["all"]) == ("resid", "attn", "mlp")
    assert site_list(["heads,resid", "mlp"]) == ("heads", "resid", "mlp")
    with pytest.raises(UsageError, match="unknown site"):
        site_list(["neurons"])


def test_settings_refuse_what_cannot_run() -> None:
    with pytest.raises(UsageError, match="--reference"):
        PatchSettings(ablate="mean")
    with pytest.raises(UsageError, match="--positions"):
        PatchSettings(sites=("heads",), positions="0:2")
    with pytest.raises(UsageError, match="--metric"):
        PatchSettings(metric="kl")
    assert PatchSettings().chosen_metric == "logit-diff"
    assert PatchSettings(ablate="zero").chosen_metric == "logprob"


def test_sites_are_found_in_every_tiny_architecture(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from llmscope.patching.sites import find_site_modules

    for name, folder in tiny_models.items():
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        sites = find_site_modules(model)
        assert sites.layers == 2, name
        assert all(m is not None for m in (*sites.attention, *sites.mlp, *sites.output_projection)), name
        assert sites.heads == 4, name


@pytest.mark.parametrize("site", ALL_SITES)
def test_every_site_of_a_run_patched_into_itself_gives_exactly_one_or_zero(tiny: Any, site: str) -> None:
    from llmscope.patching.patcher import run_plan

    planned = plan(tiny, sites=(site,), rows_per_pass=1)
    for role, expected in (("clean", 1.0), ("corrupt", 0.0)):
        inputs, captured = planned.runs[role]
        result = run_plan(dataclasses.replace(planned, base=inputs, source=inputs, captured=captured))
        assert set(values(result)) == {expected}, role


def test_batched_self_patching_stays_within_1e5(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    planned = plan(tiny, rows_per_pass=7)  # 8 passes of 7 rows
    for role, expected in (("clean", 1.0), ("corrupt", 0.0)):
        inputs, captured = planned.runs[role]
        result = run_plan(dataclasses.replace(planned, base=inputs, source=inputs, captured=captured))
        span = result.clean.metric_value - result.corrupt.metric_value
        assert max(abs(v - expected) * abs(span) for v in values(result)) < 1e-5


def test_the_last_layers_residual_at_the_last_position_restores_exactly_one(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    result = run_plan(plan(tiny, sites=("resid",), rows_per_pass=1))
    grid = result.grids[0]
    assert grid.values[-1][-1] == 1.0
    assert all(v == 0.0 for v in grid.values[-1][:-1])  # nothing after the last block reads other positions


def test_batched_cells_equal_single_cell_runs(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    for metric in ("logit-diff", "logprob"):
        single = run_plan(plan(tiny, rows_per_pass=1, metric=metric))
        for rows in (5, 64):
            batched = run_plan(plan(tiny, rows_per_pass=rows, metric=metric))
            assert batched.cost.passes == -(-single.cost.rows // min(rows, single.cost.rows))
            span = single.clean.metric_value - single.corrupt.metric_value if metric == "logit-diff" else 1.0
            assert max(abs(a - b) * abs(span) for a, b in zip(values(single), values(batched))) < 1e-5


def test_one_patched_cell_equals_a_hand_written_hook(tiny: Any) -> None:
    import torch

    from llmscope.patching.patcher import run_plan

    model, tokenizer = tiny.model, tiny.tokenizer
    clean_ids = tokenizer(CLEAN)["input_ids"]
    corrupt_ids = tokenizer(CORRUPT)["input_ids"]
    answer, foil = (tokenizer(ANSWERS[k], add_special_tokens=False)["input_ids"][0]
                    for k in ("target", "corrupt_target"))
    with torch.no_grad():
        clean = model(torch.tensor([clean_ids])).logits[0, -1].double()
        corrupt = model(torch.tensor([corrupt_ids])).logits[0, -1].double()
    clean_diff, corrupt_diff = float(clean[answer] - clean[foil]), float(corrupt[answer] - corrupt[foil])
    result = run_plan(plan(tiny))
    grids = {grid.site: grid for grid in result.grids}
    layer, position, head = 1, 4, 2
    head_size = model.config.hidden_size // model.config.num_attention_heads
    block = model.model.layers[layer]
    cases = {"resid": (block, position, None, False), "attn": (block.self_attn, position, None, False),
             "mlp": (block.mlp, position, None, False),
             "heads": (block.self_attn.o_proj, len(clean_ids) - 1,
                       slice(head * head_size, (head + 1) * head_size), True)}
    for site, (module, where, width, pre) in cases.items():
        logits = reference_logits(model, clean_ids, corrupt_ids, module, where, width, pre)
        expected = (float(logits[answer] - logits[foil]) - corrupt_diff) / (clean_diff - corrupt_diff)
        column = head if site == "heads" else position
        assert grids[site].values[layer][column] == pytest.approx(expected, abs=1e-5), site


def test_ablation_writes_zeros_and_reference_means(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    result = run_plan(plan(tiny, corrupt=None, sites=("heads", "resid"), ablate="zero", metric="prob", target=None,
                           corrupt_target=None))
    assert result.corrupt is None and result.foil is None and result.metric == "prob"
    heads = result.grids[0]
    assert len(heads.columns) == 4 and len(heads.layers) == 2
    assert any(v != 0.0 for v in values(result))
    # Zeroing the last block's residual at the last position leaves the final norm a zero vector: the logits are
    # the LM head's bias-free output of zeros, a uniform distribution.
    vocab = tiny.model.config.vocab_size
    resid = result.grids[1]
    assert resid.values[-1][-1] + result.clean.metric_value == pytest.approx(1 / vocab, rel=1e-5)
    mean = run_plan(plan(tiny, corrupt=None, sites=("heads",), ablate="mean", reference="Hello world! Tokens",
                         target=None, corrupt_target=None))
    assert mean.reference == "Hello world! Tokens" and values(mean) != values(result)[:8]


def test_noise_corruption_is_seeded_and_averaged(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    first = run_plan(plan(tiny, corrupt=None, noise_subject="France", samples=3, sites=("resid",), metric="prob"))
    again = run_plan(plan(tiny, corrupt=None, noise_subject="France", samples=3, sites=("resid",), metric="prob"))
    assert first.noise is not None and first.noise.positions == (4, 5, 6)  # " ", "Fr", "an", "ce" -> Fr an ce
    assert first.noise.std == pytest.approx(3 * first.noise.embedding_std)
    assert values(first) == values(again)
    assert first.cost.rows == 3 * first.cost.cells
    # Patching a position before the subject changes nothing: the noised run's own value, averaged
    assert first.grids[0].values[0][0] == pytest.approx(first.corrupt.metric_value, abs=1e-6)
    assert first.grids[0].values[-1][-1] == pytest.approx(first.clean.metric_value, abs=1e-6)


def test_noising_writes_corrupted_values_into_the_clean_run(tiny: Any) -> None:
    from llmscope.patching.patcher import run_plan

    result = run_plan(plan(tiny, sites=("resid",), noise=True, rows_per_pass=1))
    assert result.mode == "noise" and result.patched_run == "clean"
    assert result.grids[0].values[-1][-1] == 0.0  # the corrupted last state gives the corrupted answer exactly
    assert result.grids[0].values[0][0] == 1.0  # "The" is the same token in both prompts
