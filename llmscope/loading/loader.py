"""The one model loader: a model spec (hub id, folder, .gguf file or alias) -> config, tokenizer, model.
It picks device and dtype and keeps the GGUF conversion cache; it never prints (it logs to "llmscope")."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import DeviceError, ModelLoadError
from llmscope.core.model_info import ModelInfo
from llmscope.loading import conversion_cache
from llmscope.loading.devices import DEVICE_CHOICES as DEVICE_CHOICES
from llmscope.loading.devices import DTYPE_CHOICES as DTYPE_CHOICES
from llmscope.loading.devices import dtype_name as dtype_name
from llmscope.loading.devices import out_of_memory_error as out_of_memory_error
from llmscope.loading.devices import resolve_device as resolve_device
from llmscope.loading.devices import resolve_dtype as resolve_dtype
from llmscope.loading.load_errors import check_hub_reachable, first_line, warn_remote_code
from llmscope.loading.load_errors import require_causal_lm as require_causal_lm
from llmscope.loading.load_errors import translate_load_error as _translate_load_error
from llmscope.loading.memory import check_enabled
from llmscope.loading.memory_check import check_load_fits, tensor_table
from llmscope.loading.modelspec import ALIASES as ALIASES
from llmscope.loading.modelspec import EMBEDDED_ALIAS as EMBEDDED_ALIAS
from llmscope.loading.modelspec import EMBEDDED_INSTALL as EMBEDDED_INSTALL
from llmscope.loading.modelspec import ModelSpec as ModelSpec
from llmscope.loading.modelspec import default_model_spec as default_model_spec
from llmscope.loading.modelspec import embedded_gguf_path as embedded_gguf_path
from llmscope.loading.modelspec import resolve_model_spec as resolve_model_spec
from llmscope.loading.quant.mode import PACKED_MODES, cache_part
from llmscope.loading.quant.mode import resolve_quantize as resolve_quantize

if TYPE_CHECKING:
    import torch

log = logging.getLogger("llmscope")


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and how it was loaded. Holds live objects; not a result."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    config: Any
    device: str
    dtype: str
    parameters: int
    load_seconds: float
    from_cache: bool | None
    quantize: str = "none"  # the --quantize mode that ran: none, auto, int8 or int4
    weights: str | None = None  # how the weights are held, when any are packed ("int4 from Q4_1 x210, ...")
    activations: str | None = None  # the dtype packed matmuls take their input in
    kept_exact: str | None = None  # linear layers --quantize left dense (no packed kernel takes their shape)
    packed_layers: int | None = None  # weight matrices held packed (None with --quantize none)
    warnings: tuple[str, ...] = ()  # what the load did not do as asked (--quantize int4 that packed nothing)
    invariant: bool = False  # invariance.kernels' numerics are installed (same numbers alone, batched or cached)

    @property
    def info(self) -> ModelInfo:
        from llmscope.invariance.selftest import invariance_of

        return ModelInfo(
            model=self.spec.name,
            source=self.spec.kind,
            device=self.device,
            dtype=self.dtype,
            parameters=self.parameters,
            load_seconds=round(self.load_seconds, 3),
            from_cache=self.from_cache,
            quantize=self.quantize,
            weights=self.weights,
            activations=self.activations,
            kept_exact=self.kept_exact,
            packed_layers=self.packed_layers,
            load_warnings=self.warnings,
            invariance=invariance_of(self.model),
        )

    @property
    def input_device(self) -> torch.device:
        """The device that input ids must live on (the embedding's device under a device map)."""
        from llmscope.loading.quant.modules import layer_placement

        return layer_placement(self.model.get_input_embeddings())[0]



# ---------------------------------------------------------------------------------------------- cache


def gguf_cache_dir(spec: ModelSpec, part: str = "model") -> Path:
    """The cache entry for a GGUF source: part "model" holds model + tokenizer (float), "tokenizer" the tokenizer
    only, "packed-MODE" the weights packed as --quantize MODE (auto, int8, int4) with the config."""
    assert spec.gguf_path is not None
    return conversion_cache.entry_dir(spec.gguf_path, part)


def gguf_entry_for(spec: ModelSpec, quantize: str) -> Path:
    """The entry a load of this GGUF under --quantize `quantize` (already resolved) reads or writes."""
    return gguf_cache_dir(spec, cache_part(quantize))


def cache_entry_is_whole(entry: Path) -> bool:
    """True when the entry verifies (see llmscope.loading.conversion_cache for what that checks and costs)."""
    return conversion_cache.entry_is_whole(entry)


def _usable_entry(entry: Path) -> bool:
    """True when the entry verifies; a damaged one is removed with a warning (the caller rebuilds it)."""
    problem = conversion_cache.verify_entry(entry)
    if problem is None:
        conversion_cache.touch(entry)
        return True
    if entry.exists():
        conversion_cache.remove_entry(entry, problem)
    return False


def _write_entry(entry: Path, spec: ModelSpec, what: str, *savers: Any) -> bool:
    """Run each saver(folder) into a staging folder for `entry`; False (with a warning naming the cause) on failure.

    Any failure counts, not only OSError: safetensors and tokenizers raise their own errors on a full disk.
    """
    try:
        with conversion_cache.staging(entry, spec.gguf_path) as folder:
            for save in savers:
                save(str(folder))
        return True
    except Exception as error:
        log.warning("could not write the %s to the conversion cache (%s: %s); using it from memory, and the next "
                    "run reads the GGUF file again", what, type(error).__name__, first_line(error))
        return False


# ---------------------------------------------------------------------------------------------- loading


def load_config(spec: ModelSpec | str | None, trust_remote_code: bool = False) -> Any:
    """Load only the configuration (a few KB: config.json from the hub, folder or GGUF header)."""
    from transformers import AutoConfig

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    warn_remote_code(spec, trust_remote_code)
    check_hub_reachable(spec)
    try:
        if spec.is_gguf:
            for mode in ("none", *PACKED_MODES):  # any entry of this file holds its config.json
                entry = gguf_entry_for(spec, mode)
                if entry.is_dir() and _usable_entry(entry):
                    try:
                        return AutoConfig.from_pretrained(str(entry))
                    except Exception as error:  # a damaged config.json: drop the entry, read the GGUF header
                        conversion_cache.remove_entry(entry, f"config.json: {first_line(error)}")
            return AutoConfig.from_pretrained(spec.location, gguf_file=spec.gguf_file)
        return AutoConfig.from_pretrained(spec.location, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers / huggingface_hub raise many kinds; all become one line
        raise _translate_load_error(error, spec, "config") from error


def _prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: ModelSpec | str | None, trust_remote_code: bool = False, light: bool = False) -> Any:
    """Load the tokenizer alone, never the weights. A GGUF's tokenizer is cached after the first read.

    light=True returns a LightTokenizer (the `tokenizers` library only, no torch import) when the tokenizer
    comes from the conversion cache; it has no chat template. Otherwise a transformers tokenizer.
    """
    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    warn_remote_code(spec, trust_remote_code)
    check_hub_reachable(spec)
    try:
        if spec.is_gguf:
            conversion_cache.touch(gguf_cache_dir(spec, "tokenizer"))  # a use of it even when the model entry serves
            for entry in (gguf_cache_dir(spec), gguf_cache_dir(spec, "tokenizer")):
                if _usable_entry(entry):
                    try:
                        return _cached_tokenizer(entry, light)
                    except Exception as error:  # the tokenizers library raises plain Exception
                        conversion_cache.remove_entry(entry, first_line(error))
        from transformers import AutoTokenizer

        if not spec.is_gguf:
            _require_tokenizer_files(spec)
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(spec.location,
                                                                    trust_remote_code=trust_remote_code))
        log.info("reading the tokenizer from %s (not in the conversion cache; it is cached afterwards)",
                 spec.gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(spec.location, gguf_file=spec.gguf_file)
        _write_entry(gguf_cache_dir(spec, "tokenizer"), spec, "tokenizer", tokenizer.save_pretrained)
        return _prepare_tokenizer(tokenizer)
    except ModelLoadError:
        raise
    except Exception as error:  # a corrupt file fails in many ways (struct.error, IndexError, ...)
        raise _translate_load_error(error, spec, "tokenizer") from error


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model",
                   "vocab.txt")


def _require_tokenizer_files(spec: ModelSpec) -> None:
    """A local folder without any tokenizer file gets a sentence saying so, not transformers' cut-off line."""
    if spec.kind == "folder" and not any((Path(spec.location) / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{spec.name} has no tokenizer: none of {', '.join(TOKENIZER_FILES[:3])} is in the folder",
            hint="copy the tokenizer files next to config.json (`architecture` works from config.json alone)")


def _cached_tokenizer(entry: Path, light: bool) -> Any:
    if light and (entry / "tokenizer.json").is_file():
        from llmscope.loading.tokenization import LightTokenizer

        return LightTokenizer(str(entry))
    from transformers import AutoTokenizer

    return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(entry)))


def _convert_gguf(spec: ModelSpec, entry: Path) -> tuple[Any, Any, bool]:
    """Dequantize a GGUF file into float32 and write model + tokenizer into the cache entry.

    Returns (model, tokenizer, written): written is False when the cache could not be written (then the model
    is used from memory and a warning said why).
    """
    import torch
    from transformers import AutoModelForCausalLM

    log.info("converting %s to safetensors (not in the conversion cache; later loads read it)", spec.gguf_file)
    tokenizer = load_tokenizer(spec)
    model = AutoModelForCausalLM.from_pretrained(spec.location, gguf_file=spec.gguf_file, dtype=torch.float32)
    # The weights are dense float32 now; the GGUF quantizer only blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    written = _write_entry(entry, spec, "converted model", model.save_pretrained, tokenizer.save_pretrained)
    return model, tokenizer, written


def hide_library_progress_bars() -> None:
    """Turn off transformers' tqdm bars: loading and saving weights, and the GGUF conversion's bar. That one calls
    tqdm directly (not transformers' switchable wrapper) and tqdm reads TQDM_DISABLE only when first imported, so
    in a process that imported tqdm already it is pointed at the wrapper, which the switch below turns off."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from transformers import modeling_gguf_pytorch_utils

        if hasattr(modeling_gguf_pytorch_utils, "tqdm"):
            modeling_gguf_pytorch_utils.tqdm = transformers_logging.tqdm


def count_parameters(model: Any) -> int:
    """Unique parameters (tied weights counted once), a packed weight counted as the matrix it stands for."""
    from llmscope.loading.quant.modules import packed_parameters

    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total + packed_parameters(model)


def load_model(
    spec: ModelSpec | str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    trust_remote_code: bool = False,
    quantize: str = "auto",
    invariant: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer on the chosen device and dtype.

    Args:
        spec: hub id, folder, .gguf file, alias, or None for the default ($LLMSCOPE_MODEL or embedded).
        device: auto|cpu|cuda|cuda:N|mps; auto picks CUDA, then MPS, then CPU.
        dtype: auto|float32|bfloat16|float16; auto is bfloat16/float16 on CUDA, float16 on MPS, float32 on CPU.
            With packed weights it is the dtype of everything else (norms, attention, the residual stream).
        device_map: "auto" hands placement to accelerate (several GPUs, CPU offload).
        trust_remote_code: run Python code shipped with the model (off unless asked for).
        quantize: auto|none|int8|int4 (see llmscope.loading.quant): auto keeps a GGUF's 4/8-bit blocks packed and loads
            other models as stored; none dequantizes a GGUF exactly; int8/int4 pack every linear layer at load.
        invariant: on the CPU, install batch- and cache-invariant numerics (llmscope.invariance.kernels): a prompt's
            logits, hidden states and attention weights are the same alone, in any padded batch and with the KV cache.
            Other devices keep the model's own attention (their GEMMs give no such guarantee).
    Returns:
        LoadedModel with the model in eval mode.
    Raises:
        ModelLoadError, DeviceError, UsageError; MemoryLimitError before any weights are read when the planned
        peak (loading.memory_check) is more than the memory free ($LLMSCOPE_MEMORY_CHECK=0 skips that check).
    """
    import torch

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    target = resolve_device(device)
    torch_dtype = _load_dtype(dtype, target, device_map)
    table = tensor_table(spec)  # a GGUF file's header, read once: the mode and the memory check both need it
    mode = resolve_quantize(quantize, spec, target, device_map, table)
    if device_map is None and check_enabled():  # accelerate places a device map's layers where they fit
        converting = spec.is_gguf and mode == "none" and not cache_entry_is_whole(gguf_cache_dir(spec))
        check_load_fits(spec, quantize, mode, dtype_name(torch_dtype), target, converting, table)
    started = time.perf_counter()
    if not spec.is_gguf:  # a GGUF file always holds a causal LM; reading its header first would cost seconds
        require_causal_lm(load_config(spec, trust_remote_code), spec)
    try:
        if spec.is_gguf and mode != "none":
            model, tokenizer, from_cache = _load_packed_gguf(spec, mode, torch_dtype, target)
        elif spec.is_gguf:
            model, tokenizer, from_cache = _load_dequantized_gguf(spec, torch_dtype, target, device_map)
        else:
            model, tokenizer, from_cache = _load_pretrained(spec, mode, torch_dtype, target, device_map,
                                                            trust_remote_code)
    except (ModelLoadError, DeviceError):
        raise
    except torch.OutOfMemoryError as error:
        raise out_of_memory_error(target, spec.name) from error
    except Exception as error:  # a corrupt file fails in many ways (struct.error, IndexError, ...)
        raise _translate_load_error(error, spec, "model") from error
    model.eval()
    from llmscope.loading.stop_points import stop_on_signals

    stop_on_signals(model)  # Ctrl-C / SIGTERM stop a pass within one sublayer, even if their interrupt was lost
    exact = False
    if invariant and target == "cpu" and device_map is None:
        from llmscope.invariance.selftest import install

        exact = install(model)
    return _loaded_model(spec, model, _prepare_tokenizer(tokenizer), _device_label(model, target, device_map),
                         torch_dtype, mode, started, from_cache, exact)


Loaded = tuple[Any, Any, "bool | None"]  # (model, tokenizer, from_cache) as each source's loader returns them


def _load_dtype(dtype: str, target: str, device_map: str | None) -> torch.dtype:
    """The dtype to load in: the one asked for, else the device's default (a device map on CUDA: bfloat16 where
    the GPUs have it, else float16)."""
    import torch

    torch_dtype = resolve_dtype(dtype, target if device_map is None else "cpu")
    if dtype in ("auto", None) and device_map == "auto" and torch.cuda.is_available():
        torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch_dtype


def _load_pretrained(spec: ModelSpec, mode: str, dtype: torch.dtype, target: str, device_map: str | None,
                     trust_remote_code: bool) -> Loaded:
    """A hub id or folder through transformers, its linear layers packed afterwards under --quantize int8/int4."""
    from transformers import AutoModelForCausalLM

    _warn_if_pickle_weights(spec)
    tokenizer = load_tokenizer(spec, trust_remote_code)
    placement: dict[str, Any] = {"device_map": device_map} if device_map else (
        {"device_map": target} if target != "cpu" else {})
    model = AutoModelForCausalLM.from_pretrained(spec.location, dtype=dtype, trust_remote_code=trust_remote_code,
                                                 **placement)
    if mode in ("int8", "int4"):
        from llmscope.loading.quant.modules import quantize_linears

        quantize_linears(model, mode)
    return model, tokenizer, None


def _load_dequantized_gguf(spec: ModelSpec, dtype: torch.dtype, target: str, device_map: str | None) -> Loaded:
    """A GGUF file dequantized exactly (--quantize none): its float32 conversion from the cache, else converted
    from the file now and cached (from_cache None when the cache could not be written)."""
    import torch

    from llmscope.loading.cached_model import load_cached_model

    entry = gguf_cache_dir(spec)
    if _usable_entry(entry):
        try:
            tokenizer = load_tokenizer(spec)
            return load_cached_model(entry, dtype, target, device_map), tokenizer, True
        except (ModelLoadError, DeviceError, torch.OutOfMemoryError):
            raise
        except Exception as error:  # a damaged entry that passed the checks: rebuild, never use it
            if target != "cpu" and isinstance(error, RuntimeError) and ("CUDA" in str(error) or "MPS" in str(error)):
                raise  # the device failed, not the entry
            conversion_cache.remove_entry(entry, first_line(error))
    model, tokenizer, written = _convert_gguf(spec, entry)
    model = model.to(dtype=dtype, device=target if device_map is None else "cpu")
    return model, tokenizer, False if written else None


def _load_packed_gguf(spec: ModelSpec, mode: str, dtype: Any, device: str) -> Loaded:
    """A GGUF model with packed weights: from its cache entry, else built from the file and cached."""
    import torch

    from llmscope.loading.quant.packedmodel import build_from_gguf, load_packed, save_packed

    tokenizer = load_tokenizer(spec)
    entry = gguf_entry_for(spec, mode)
    if _usable_entry(entry):
        try:
            return load_packed(entry, dtype, device), tokenizer, True
        except (ModelLoadError, DeviceError, MemoryError, torch.OutOfMemoryError):
            raise  # the device failed, not the entry
        except Exception as error:  # a damaged entry that passed the checks: rebuild, never use it
            conversion_cache.remove_entry(entry, first_line(error))
    log.info("packing %s's weights (first use of this file with --quantize %s; later loads read the cache)",
             spec.gguf_file, mode)
    model = build_from_gguf(spec.gguf_path, load_config(spec), mode, dtype, device)
    written = _write_entry(entry, spec, "packed model", lambda folder: save_packed(model, Path(folder)))
    return model, tokenizer, False if written else None


def _device_label(model: Any, target: str, device_map: str | None) -> str:
    """Where the model is: the device, or the device map with the devices it placed layers on."""
    if not device_map:
        return target
    placed = sorted({str(where) for where in (getattr(model, "hf_device_map", None) or {}).values()})
    return f"{device_map} ({', '.join(placed)})" if placed else str(device_map)


def _loaded_model(spec: ModelSpec, model: Any, tokenizer: Any, device: str, dtype: torch.dtype, mode: str,
                  started: float, from_cache: bool | None, invariant: bool) -> LoadedModel:
    """The LoadedModel of a model in eval mode, with how its weights are held (packed forms, layers kept dense);
    its load time counted from `started` (time.perf_counter())."""
    from llmscope.loading.quant.modules import packed_summary, unpackable_layers

    held = packed_summary(model)
    weights = ", ".join(f"{form} x{count}" for form, count in held.items()) or None
    kept = unpackable_layers(model, "int4" if mode == "auto" else mode) if mode != "none" else {}
    kept_exact = ", ".join(f"{form} x{count}" for form, count in kept.items()) or None
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, config=model.config, device=device,
                       dtype=dtype_name(dtype), parameters=count_parameters(model),
                       load_seconds=time.perf_counter() - started,
                       from_cache=from_cache, quantize=mode, weights=weights,
                       activations=KERNEL_DTYPE_NAME if held else None, kept_exact=kept_exact,
                       packed_layers=sum(held.values()) if mode != "none" else None,
                       warnings=nothing_packed(mode, held, kept), invariant=invariant)


def nothing_packed(mode: str, held: dict[str, int], kept: dict[str, int]) -> tuple[str, ...]:
    """The warning for --quantize int8 / int4 that packed no layer (every input width is one no kernel takes):
    the run is the unquantized model, which the user did not ask for and must not take for a quantized one."""
    if mode not in ("int8", "int4") or held:
        return ()
    layers = sum(kept.values())
    forms = "; ".join(kept) or "no linear layers"
    return (f"--quantize {mode} packed nothing: {'all ' if layers else ''}{layers} linear layer"
            f"{'s' if layers != 1 else ''} stay as loaded ({forms}), since no {mode} kernel takes "
            f"{'their input widths' if layers != 1 else 'its input width'}; the figures are the unquantized "
            "model's",)


KERNEL_DTYPE_NAME = "bfloat16"


def _warn_if_pickle_weights(spec: ModelSpec) -> None:
    if spec.kind != "folder":
        return
    folder = Path(spec.location)
    if not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        log.warning("%s has no safetensors weights: falling back to pickle-based .bin files "
                    "(transformers loads them with weights_only=True)", spec.name)
