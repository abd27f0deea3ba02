"""The architecture command: a model described from its config alone (or its loaded weights with --weights), with
the memory plan. It parses and checks options, then calls llmscope.architecture and the renderer; no compute here."""

from __future__ import annotations

from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ModelOpt,
    command,
    example,
    load,
)
from llmscope.core.command_settings import quantize_from


@app.command(epilog=EXIT_CODES_HELP)
@example("-m", "{model}")
@grouped(load=True)
def architecture(
    model: ModelOpt = None,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Load the real model for its dtypes and devices (default: config only, no weights).")
    ] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", metavar="N", help="Show the module tree this many levels deep.", show_default=False)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", metavar="TOKENS",
        help="Memory plan up to this many tokens: 4096, 32k, 128k (default: the model's context).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", metavar="N", help="Memory plan for this many sequences at once (B).")] = 1,
    kv_dtype: Annotated[str | None, typer.Option(
        "--kv-dtype", metavar="DTYPE",
        help="KV cache dtype for the plan: float32 | bfloat16 | float16 | float8 | int8 | int4 "
        "(default: the weights' dtype).", show_default=False)] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        "--gpu-memory", metavar="SIZE",
        help="Check the plan against this GPU size, e.g. 80GB (GB = GiB, as GPU makers mean it; "
        "default: 24, 40 and 80 GiB).", show_default=False)] = None,
    *,
    shared: Shared,
) -> None:
    """Describe a model from its config alone: sizes, attention per layer type, parameters (active ones for MoE),
    KV cache, a memory plan (weights + KV + state at --context x --batch-size; --dtype sets the weights' dtype)
    and the module tree."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.architecture.moduletree import check_depth
        from llmscope.architecture.planner import PlannerSettings

        check_depth(depth)

        plan = PlannerSettings.from_options(context, batch_size, kv_dtype, gpu_memory,
                                            shared.load.dtype if not weights else "auto")
        from llmscope.architecture import describe as arch
        from llmscope.render import architecture as show
        from llmscope.render.display import human_count

        if weights:
            loaded = load(display, shared.load.settings(model))
            report = arch.describe_loaded_model(loaded, depth, plan)
            info = loaded.info
        else:
            from llmscope.core.model_info import ModelInfo
            from llmscope.loading.loader import resolve_model_spec

            if (shared.load.device, shared.load.device_map) != ("auto", None):
                display.warning("--device and --device-map only matter with --weights")
            spec = resolve_model_spec(model)
            with display.spinner(f"reading the config of {spec.name}"):
                report = arch.describe_config_model(spec, depth, shared.load.trust_remote_code, plan,
                                                    quantize_from(shared.load.quantize))
            info = ModelInfo(model=spec.name, source=spec.kind, device="meta", dtype=report.summary.dtype,
                             parameters=report.parameters.total)
            display.status(f"built {report.summary.model_class} from the config on the meta device (no weights): "
                           f"{human_count(report.parameters.total)} parameters")
        show.show_architecture(display, info, report)
