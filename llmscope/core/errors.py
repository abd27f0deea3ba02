"""Exceptions that llmscope turns into one readable line and an exit code (library code raises them; only the CLI
shows them). It imports no other llmscope module at run time: every module may import it, so no circle closes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmscope.core.model_info import ModelInfo

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it

_signals = {"terminated": False, "interrupted": False}


def handle_sigterm() -> None:
    """Make SIGTERM stop a run the way Ctrl-C does (clean-up runs, finished output stays), exiting 143; both signals
    are also recorded, so that one whose KeyboardInterrupt was swallowed (CPython prints and drops an exception
    raised in a weakref callback or finalizer, e.g. importlib's module-lock clean-up during a lazy import) still
    stops the run at its next check (stop_if_signalled) and sets its exit code."""
    import signal

    def on_signal(signum: int, _frame: object) -> None:
        _signals["terminated" if signum == signal.SIGTERM else "interrupted"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def terminated() -> bool:
    """True once SIGTERM has arrived in this process."""
    return _signals["terminated"]


def signalled() -> bool:
    """True once SIGINT or SIGTERM has arrived in this process (through handle_sigterm's handler)."""
    return _signals["terminated"] or _signals["interrupted"]


def stop_if_signalled() -> None:
    """Raise KeyboardInterrupt if a signal arrived: a check for long loops, in case its first raise was lost."""
    if signalled():
        raise KeyboardInterrupt


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM outside a command's own handling, carried past Typer (which would turn it into a silent
    exit 130) to the entry point, which says so in one line."""


class LlmscopeError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to do."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(LlmscopeError):
    """A bad option value or input: exit code 2."""

    exit_code = EXIT_USAGE


class ModelLoadError(LlmscopeError):
    """The model, tokenizer or config could not be found or loaded."""


class DeviceError(LlmscopeError):
    """The requested device or dtype cannot run here, or it ran out of memory."""


class MemoryLimitError(LlmscopeError):
    """A run's planned peak memory is more than the memory there is (or --max-memory): refused before it starts."""


def out_of_memory_error(device: str | None, model_name: str, parameters: int | None = None,
                        dtype: str | None = None) -> DeviceError:
    """A DeviceError that says how large the model is and how much memory the device has free."""
    import torch  # only when memory ran out: torch is loaded by then

    size_text = ""
    if parameters:
        bytes_per = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype or "", 4)
        size_text = f" ({parameters / 1e6:.1f}M parameters, {parameters * bytes_per / 2**30:.2f} GiB of weights" + (
            f" in {dtype})" if dtype else ")")
    free_text = ""
    if device and device.startswith("cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(torch.device(device))
        free_text = f"; {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
    elif device == "cpu":
        import psutil

        memory = psutil.virtual_memory()
        free_text = f"; {memory.available / 2**30:.1f} GiB free of {memory.total / 2**30:.1f} GiB RAM"
    return DeviceError(f"out of memory on {device or 'the device'} running {model_name}{size_text}{free_text}",
                       hint="use a smaller --dtype (bfloat16/float16), --device-map auto for CPU offload, "
                            "or a shorter prompt")


# ---------------------------------------------------------------------------------------------- by type

# Exceptions from the libraries under llmscope, keyed by type: (module, class name) -> message and hint. A type is
# looked up only when its module is already imported, so recognising an error never imports torch or jinja2.
ErrorTranslator = Callable[[BaseException, "ModelInfo | None"], LlmscopeError]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _out_of_memory(error: BaseException, info: ModelInfo | None) -> LlmscopeError:
    return out_of_memory_error(info.device if info else None, info.model if info else "the model",
                               info.parameters if info else None, info.dtype if info else None)


def _chat_template(error: BaseException, info: ModelInfo | None) -> LlmscopeError:
    return UsageError(f"the model's chat template failed: {_first_line(error)}",
                      hint="pass --no-chat to use the raw prompt")


def _safetensors(error: BaseException, info: ModelInfo | None) -> LlmscopeError:
    return ModelLoadError(f"a safetensors weight file is damaged or unreadable: {_first_line(error)}",
                          hint="download the model again")


def _unpickling(error: BaseException, info: ModelInfo | None) -> LlmscopeError:
    text = str(error)
    reason = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), _first_line(error))
    return ModelLoadError(f"refused to load pickled weights: {reason}",
                          hint="only load .bin weights you trust; prefer a model with safetensors weights")


def _hub(error: BaseException, info: ModelInfo | None) -> LlmscopeError:
    return ModelLoadError(f"the Hugging Face hub refused the request: {_first_line(error)}",
                          hint="check the model id and your token (`hf auth login`)")


ERROR_TYPES: dict[tuple[str, str], tuple[ErrorTranslator, int]] = {
    ("torch", "OutOfMemoryError"): (_out_of_memory, EXIT_RUNTIME),
    ("jinja2.exceptions", "TemplateError"): (_chat_template, EXIT_USAGE),
    ("safetensors", "SafetensorError"): (_safetensors, EXIT_RUNTIME),
    ("pickle", "UnpicklingError"): (_unpickling, EXIT_RUNTIME),
    ("huggingface_hub.errors", "HfHubHTTPError"): (_hub, EXIT_RUNTIME),
}


def translate(error: BaseException, info: ModelInfo | None = None) -> LlmscopeError | None:
    """The LlmscopeError that stands for a library exception, found by the exception's type, or None.
    info (the model that was loaded, if any) lets a message say how large the model is."""
    import sys

    for (module_name, class_name), (translator, exit_code) in ERROR_TYPES.items():
        module = sys.modules.get(module_name)
        kind = getattr(module, class_name, None) if module is not None else None
        if isinstance(kind, type) and isinstance(error, kind):
            translated = translator(error, info)
            translated.exit_code = exit_code
            return translated
    return None
class InputMismatchError(LlmscopeError):
    """Two models cannot be compared on this input (different tokens or vocabularies): exit code 1."""
