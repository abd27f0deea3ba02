"""Where a running forward pass can be stopped: torch cannot interrupt a pass from outside, so a check runs as a
forward pre-hook before the model, each decoder block and each of the block's sublayers (attention, MLP, norms).
A pass then stops within one sublayer of being asked. Hooks only: no model code is changed, nothing is printed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

SIGNAL_HOOKED = "_llmscope_signal_stops"  # set on a model whose passes already stop on Ctrl-C / SIGTERM


def stop_points(model: Any) -> list[Any]:
    """The model, its decoder blocks (the list of modules as long as the config's layers, else the longest list)
    and each block's direct children."""
    from torch import nn

    from llmscope.loading.modelconfig import config_value, text_config

    layers = int(config_value(text_config(model.config), "num_hidden_layers", "n_layer", "num_layers", default=0) or 0)
    lists = [module for module in model.modules() if isinstance(module, nn.ModuleList)]
    exact = [module for module in lists if len(module) == layers]
    blocks = exact[0] if exact else max(lists, key=len, default=())
    points = [model]
    for block in blocks:
        points.append(block)
        points.extend(block.children())
    return points


@contextlib.contextmanager
def checked_passes(model: Any, check: Callable[[], None]) -> Iterator[None]:
    """Within the block, check() runs before the model and before every block and sublayer; whatever it raises
    ends the pass there."""
    handles = [point.register_forward_pre_hook(lambda _module, _args: check()) for point in stop_points(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def stop_on_signals(model: Any) -> None:
    """From now on, a pass of `model` stops within one sublayer once Ctrl-C or SIGTERM has arrived (through
    core.errors.handle_sigterm's handler), even when the KeyboardInterrupt that the signal raised was swallowed or
    is waiting for a long torch call to return. Installed once per model."""
    from llmscope.core.errors import stop_if_signalled

    if getattr(model, SIGNAL_HOOKED, False):
        return
    for point in stop_points(model):
        point.register_forward_pre_hook(lambda _module, _args: stop_if_signalled())
    setattr(model, SIGNAL_HOOKED, True)
