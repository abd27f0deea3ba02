"""How much each block writes into the residual stream: the L2 norms of the stream entering and leaving every block,
of what the block adds, and of its attention and MLP sublayer outputs, at the last position and averaged over
positions, from one forward pass. It returns frozen dataclasses of plain values and never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import UsageError

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

ADDS_UP_TOLERANCE = 1e-3  # relative: the block's change equals attention + MLP outputs (a plain residual block)


@dataclass(frozen=True)
class BlockNorm:
    """One block's norms at one position (or averaged over positions). attention / mlp are None when the block has no
    such sublayer that llmscope can find."""

    layer: int
    residual_in: float  # ‖h‖ entering the block
    attention: float | None  # ‖attention sublayer output‖ (after its output projection)
    mlp: float | None  # ‖MLP sublayer output‖
    added: float  # ‖h_out − h_in‖: what the block wrote into the stream
    residual_out: float  # ‖h‖ leaving the block


@dataclass(frozen=True)
class BlockNorms:
    tokens: int
    hidden_size: int
    position: int  # the position of `last` (the one whose next token is predicted)
    last: tuple[BlockNorm, ...]
    mean: tuple[BlockNorm, ...]  # each norm averaged over every position
    adds_up: bool  # every block's change equals its attention + MLP outputs (relative ADDS_UP_TOLERANCE)
    largest_mismatch: float | None  # the largest relative ‖added − (attention + mlp)‖ / ‖added‖, when both exist
    blocks_path: str  # where the blocks sit in the model, e.g. "model.layers"


def _hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("hidden_states")


def _norm_pair(rows: Any) -> tuple[float, float]:
    """‖row‖ at the last position and the mean of ‖row‖ over positions, for a [positions, hidden] tensor."""
    norms = rows.double().norm(dim=-1)
    return float(norms[-1]), float(norms.mean())


def block_norms(loaded: LoadedModel, ids: list[int] | tuple[int, ...]) -> BlockNorms:
    """One forward pass over `ids`, with hooks on every block and its attention and MLP sublayers.

    Raises:
        UsageError for an empty prompt or a model whose blocks llmscope cannot find.
    """
    import torch

    from llmscope.generation.prompts import check_ids_fit
    from llmscope.patching.sites import find_site_modules, first_tensor

    if not ids:
        raise UsageError("the prompt is empty", hint="type some text")
    model = loaded.model
    check_ids_fit(model, list(ids))
    sites = find_site_modules(model)
    seen: dict[tuple[str, int], Any] = {}

    def keep_input(name: str, layer: int) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = _hidden_of(args, kwargs)
            if hidden is not None:
                seen[(name, layer)] = hidden[0].detach().float().cpu()
        return hook

    def keep_output(name: str, layer: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            seen[(name, layer)] = first_tensor(output)[0].detach().float().cpu()
        return hook

    handles = []
    for layer, block in enumerate(sites.blocks):
        handles.append(block.register_forward_pre_hook(keep_input("in", layer), with_kwargs=True))
        handles.append(block.register_forward_hook(keep_output("out", layer)))
        for name, modules in (("attention", sites.attention), ("mlp", sites.mlp)):
            if modules[layer] is not None:
                handles.append(modules[layer].register_forward_hook(keep_output(name, layer)))
    try:
        input_ids = torch.tensor([list(ids)], device=loaded.input_device)
        with torch.inference_mode():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    last, mean, mismatches = [], [], []
    for layer in range(sites.layers):
        if ("in", layer) not in seen or ("out", layer) not in seen:
            raise UsageError(f"block {layer} of this model did not run as one module llmscope can read")
        before, after = seen[("in", layer)], seen[("out", layer)]
        added = after - before
        parts = [seen.get((name, layer)) for name in ("attention", "mlp")]
        pairs = [_norm_pair(before), *(None if p is None else _norm_pair(p) for p in parts), _norm_pair(added),
                 _norm_pair(after)]
        for index, out in ((0, last), (1, mean)):
            out.append(BlockNorm(layer, pairs[0][index], None if pairs[1] is None else pairs[1][index],
                                 None if pairs[2] is None else pairs[2][index], pairs[3][index], pairs[4][index]))
        if parts[0] is not None and parts[1] is not None and parts[0].shape == added.shape == parts[1].shape:
            gap = (added.double() - parts[0].double() - parts[1].double()).norm() / added.double().norm().clamp_min(
                1e-30)
            mismatches.append(float(gap))
    largest = max(mismatches) if mismatches else None
    return BlockNorms(tokens=len(ids), hidden_size=int(seen[("in", 0)].shape[-1]), position=len(ids) - 1,
                      last=tuple(last), mean=tuple(mean),
                      adds_up=largest is not None and len(mismatches) == sites.layers and largest < ADDS_UP_TOLERANCE,
                      largest_mismatch=largest, blocks_path=sites.path)
