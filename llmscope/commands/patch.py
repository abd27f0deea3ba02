"""The patch command: activation patching, causal tracing and ablation from the command line (one pair, or --batch
of JSON Lines pairs). It parses and checks options, then calls llmscope.patching and the renderer; no compute."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ModelOpt,
    OptionalPromptArg,
    command,
    example,
    load,
    prompt_or_batch,
    read_batch,
    write_batch,
)
from llmscope.core.errors import UsageError
from llmscope.core.output_files import PLOT_FILE


@app.command(epilog=EXIT_CODES_HELP)
@example("The capital of France is", "-m", "{model}", "--corrupt", "The capital of Rome is", "--metric", "prob",
         "--layers", "-1")
@grouped(load=True, batch=True, endpoint=True)
def patch(
    prompt: OptionalPromptArg = None,
    model: ModelOpt = None,
    corrupt: Annotated[str | None, typer.Option(
        "--corrupt", metavar="TEXT", help="The corrupted prompt (same token count as PROMPT unless --align).",
        show_default=False)] = None,
    corrupt_noise: Annotated[str | None, typer.Option(
        "--corrupt-noise", metavar="SUBJECT", help="Corrupt PROMPT itself: Gaussian noise on the embeddings of the "
        "tokens of SUBJECT (ROME's causal tracing), --samples draws averaged.", show_default=False)] = None,
    site: Annotated[list[str] | None, typer.Option(
        "--site", metavar="SITE",
        help="resid | attn | mlp | heads, repeated or a comma list ('all': resid, attn, mlp). heads: "
        "each attention head at the last position. Default: resid.", show_default=False)] = None,
    layers: Annotated[str | None, typer.Option(
        "--layers", metavar="A:B", help="Blocks to patch: N, A:B (Python slice, B excluded, negative from the end) "
        "or a comma list. Default: all.", show_default=False)] = None,
    positions: Annotated[str | None, typer.Option(
        "--positions", metavar="A:B", help="Token positions to patch, as --layers. Default: all.",
        show_default=False)] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", metavar="logit-diff|prob|logprob",
        help="logit-diff (normalised: 1 = clean answer fully restored, 0 = not at all) | prob | logprob "
        "(of the clean answer). Default: logit-diff; logprob with --ablate.", show_default=False)] = None,
    noise: Annotated[bool, typer.Option(
        "--noise/--denoise", help="--denoise: clean activations into the corrupted run (does the answer come "
        "back?); --noise: corrupted ones into the clean run (does it go away?).")] = False,
    target: Annotated[str | None, typer.Option(
        "--target", metavar="TOKEN", help="The clean answer (default: the clean run's top token), e.g. ' Paris'.",
        show_default=False)] = None,
    corrupt_target: Annotated[str | None, typer.Option(
        "--corrupt-target", metavar="TOKEN", help="The corrupted answer (default: the corrupted run's top token).",
        show_default=False)] = None,
    align: Annotated[str | None, typer.Option(
        "--align", metavar="start|end",
        help="start | end: pair positions of prompts of different lengths counted from the start or "
        "the end.", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", metavar="N", help="--corrupt-noise: noise draws averaged.")] = 10,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="--corrupt-noise: the noise's random seed.")] = 0,
    noise_scale: Annotated[float, typer.Option(
        "--noise-scale", metavar="NUMBER",
        help="--corrupt-noise: the noise's standard deviation in embedding standard deviations.")
    ] = 3.0,
    ablate: Annotated[str | None, typer.Option(
        "--ablate", metavar="zero|mean",
        help="zero | mean: replace each site of PROMPT's run instead of patching (mean: over "
        "--reference's activations); shows the change in the metric.", show_default=False)] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="TEXT", help="--ablate mean: the text whose mean activation each site takes.",
        show_default=False)] = None,
    max_passes: Annotated[int, typer.Option(
        "--max-passes", metavar="N", help="Refuse runs of more patched runs (cells x samples) than this.")] = 4096,
    cells_per_pass: Annotated[int | None, typer.Option(
        "--cells-per-pass", metavar="N",
        help="Batch rows per forward pass (default: as many as fit, up to 16 on the CPU, 64 on a "
        "GPU).",
        show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", help="Strongest cells named under each table.")] = 5,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="Also write the heatmaps, one per site (.png or .svg).",
        show_default=False), PLOT_FILE] = None,
    *,
    shared: Shared,
) -> None:
    """Find which layer and position carry the answer: copy one activation at a time from the clean run into the
    corrupted one (or back, or ablate it) and measure how much of the answer comes back."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import ModelSettings
        from llmscope.patching.settings import PatchCommand, PatchSettings, site_list

        if shared.endpoint.endpoint is not None:
            raise UsageError("patch needs a local model: activations do not travel over an endpoint's API",
                             hint="drop --endpoint (and -m names a local model)")
        batch_settings = shared.batch.settings(8)
        model_settings: ModelSettings = shared.load.settings(model)
        settings = PatchCommand(
            patching=PatchSettings(
                sites=site_list(site), layers=layers, positions=positions, metric=metric, noise=noise,
                target=target, corrupt_target=corrupt_target, noise_subject=corrupt_noise, samples=samples,
                seed=seed, noise_scale=noise_scale, ablate=ablate, reference=reference, align=align,
                max_passes=max_passes, rows_per_pass=cells_per_pass, top=top),
            model=model_settings, corrupt=corrupt, mode=shared.output.mode(batch=batch_settings is not None),
            plot=plot, batch=batch_settings, given=_typed(shared.given, noise))
        text = prompt_or_batch(prompt, batch_settings)
        display.mode = settings.mode
        items = read_batch(batch_settings)
        _run_patch(display, settings, text, items)


def _typed(given: frozenset[str], noise: bool) -> frozenset[str]:
    """The options that only some ways of corrupting use, as the user typed them (--noise or --denoise)."""
    flags = {"samples": "--samples", "seed": "--seed", "noise_scale": "--noise-scale", "align": "--align",
             "reference": "--reference", "noise": "--noise" if noise else "--denoise"}
    return frozenset(flag for name, flag in flags.items() if name in given)


def _pair(item: Any, settings: Any) -> tuple[str, str | None, Any]:
    """One --batch record as (clean, corrupt, settings): a JSON Lines record may carry "corrupt" or "subject" (noise
    on that subject), "target" and "corrupt_target" of its own; the command's options fill in the rest."""
    from dataclasses import replace

    from llmscope.cli.kit import require_text

    fields = item.fields or {}
    for key in ("corrupt", "subject", "target", "corrupt_target"):
        if key in fields and not isinstance(fields[key], str):
            raise UsageError(f'record {item.index + 1}: "{key}" must be a string')
    if "corrupt" in fields and "subject" in fields:
        raise UsageError(f'record {item.index + 1}: give "corrupt" or "subject", not both')
    options, corrupt = settings.patching, settings.corrupt
    if "corrupt" in fields:
        options, corrupt = replace(options, noise_subject=None), fields["corrupt"]
    elif "subject" in fields:
        options, corrupt = replace(options, noise_subject=fields["subject"]), None
    options = replace(options, **{name: fields[key] for key, name in (("target", "target"),
                                                                       ("corrupt_target", "corrupt_target"))
                                  if key in fields})
    if corrupt is None and options.noise_subject is None and options.ablate is None:
        raise UsageError(f'record {item.index + 1} has no "corrupt" or "subject", and no --corrupt or '
                         "--corrupt-noise was given")
    return require_text(item.prompt), corrupt, options


def _run_patch(display: Any, settings: Any, text: str | None, items: list[Any] | None) -> None:
    from llmscope.patching.patcher import plan_patch, run_plan
    from llmscope.render import patching as show

    loaded = load(display, settings.model)
    options = settings.patching
    if items is None:
        plan = plan_patch(loaded, text, settings.corrupt, options)  # type: ignore[arg-type]
        display.status(f"about to run: {show.cost_line(plan.cost)}")
        result = run_plan(plan)
        show.show_patch(display, loaded.info, result, top=options.top, plot=settings.plot)
        return
    from llmscope.cli.batch import run_batch

    def run_one(item: Any) -> Any:
        clean, corrupt, chosen = _pair(item, settings)
        return run_plan(plan_patch(loaded, clean, corrupt, chosen))

    outcomes = run_batch(items, 1, prepare=lambda item: item, run_chunk=lambda chunk: [run_one(i) for i in chunk])
    write_batch(display, items, outcomes, lambda result, keys: show.show_patch(display, loaded.info, result,
                                                                               top=options.top, **keys))
