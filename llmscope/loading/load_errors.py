"""Why a load failed, in one readable line: transformers / huggingface_hub exceptions -> ModelLoadError, the
causal-LM check, and the one-time hub reachability probe. It loads nothing itself and never prints."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from llmscope.core.errors import ModelLoadError
from llmscope.loading.modelspec import ModelSpec

log = logging.getLogger("llmscope")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


HUB_PROBE_TIMEOUT_S = 3.0


_probe: dict[str, str | None] = {}  # the one probe of this process: {"result": None or why not}


def _hub_unreachable(repo: str = "") -> str | None:
    """The probe's answer, asked once per process (see _probe_hub)."""
    if "result" not in _probe:
        _probe["result"] = _probe_hub(repo)
    return _probe["result"]


def _probe_hub(repo: str) -> str | None:
    """None when the hub answers a request for `repo`'s page of its API within HUB_PROBE_TIMEOUT_S (any status:
    even a 404 is an answer), else why not.

    Asked once per process before the first hub request, so an unreachable network, a hub endpoint that accepts
    and never answers, or a refusing proxy costs seconds and one line naming the cause, instead of
    huggingface_hub's retries (27-50 s of "Retrying...") or a read that waits for ever. The request goes through
    the proxy that $HTTPS_PROXY / $HTTP_PROXY name, as the hub's own requests do.
    """
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    where = f"{host}:{url.port or (80 if url.scheme == 'http' else 443)}"
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        where = f"proxy {urlparse(proxy).netloc or proxy}"
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models/{repo}", method="HEAD"),
                                    timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # an answer, even an error status: the hub is there
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ssl.SSLError):
            return None  # it answered; certificates are huggingface_hub's own business
        if isinstance(reason, TimeoutError):
            return f"{where}: no answer within {HUB_PROBE_TIMEOUT_S:g} s"
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return f"{where}: {text}"


HUB_READ_TIMEOUT_S = 15.0  # the longest wait for a byte from the hub (per read: a long download goes on)


@functools.lru_cache(maxsize=1)
def _bound_hub_requests() -> None:
    """Give every huggingface_hub request a timeout: some (model_info, ...) pass none, and its shared client has
    none, so an endpoint that answers the first request and not the next one would be waited for without end."""
    import huggingface_hub

    def bounded(request: Any) -> None:
        timeout = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {part: timeout.get(part) or HUB_READ_TIMEOUT_S
                                         for part in ("connect", "read", "write", "pool")}

    session = huggingface_hub.get_session()
    hooks = dict(session.event_hooks)
    hooks["request"] = [*hooks.get("request", []), bounded]
    session.event_hooks = hooks


def check_hub_reachable(spec: ModelSpec) -> None:
    """For a hub model with downloads on: go offline (local cache only) when the hub cannot be reached, and bound
    every later hub request in time."""
    if spec.kind != "hub" or offline():
        return
    why = _hub_unreachable(spec.name)
    if why is None:
        _bound_hub_requests()
        return
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    log.debug("the Hugging Face hub is unreachable (%s): using the local cache only", why)


def translate_load_error(error: Exception, spec: ModelSpec, what: str) -> Exception:
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
                               and (offline() or "offline" in text.lower() or "connect" in text.lower())):
        unreachable = _probe.get("result")
        return ModelLoadError(
            f"{name} is not in the local Hugging Face cache and "
            + (f"the hub is unreachable ({unreachable})" if unreachable else "downloading is off"
               + (" (HF_HUB_OFFLINE=1)" if offline() else " (no connection)")),
            hint=f"download it once with `hf download {name}`, or pass a local folder or .gguf file")
    if "weights only load failed" in text.lower() or "weights_only" in text:
        blocked = next((line.strip() for line in text.splitlines()
                        if "unsupported" in line.lower() or "not an allowed global" in line.lower()), None)
        return ModelLoadError(
            f"{name}'s pickle weights were refused: they load Python objects that are not tensors"
            + (f" ({blocked.rstrip('.')})" if blocked else ""),
            hint="a weights file that runs code is unsafe to load: use a safetensors copy of the model")
    if spec.is_gguf and what != "config":
        return ModelLoadError(f"could not read the GGUF file {spec.gguf_path}: {first_line(error)}",
                              hint="the file may be corrupt or truncated: download it again")
    return ModelLoadError(f"could not load the {what} of {name}: {first_line(error)}")


def _is_causal_lm(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any("CausalLM" in arch or "LMHeadModel" in arch for arch in architectures)
    auto_map = getattr(config, "auto_map", None) or {}
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in auto_map


def require_causal_lm(config: Any, spec: ModelSpec) -> None:
    """Raise a ModelLoadError when the config describes a model that is not a causal LM, or sizes that cannot be
    (a layer count below 1); warn when config.json gives no size at all (every figure is a library default)."""
    if not _is_causal_lm(config):
        kind = ", ".join(getattr(config, "architectures", None) or [type(config).__name__])
        raise ModelLoadError(f"{spec.name} is not a causal language model ({kind})",
                             hint="llmscope inspects decoder-only models that predict the next token")
    check_config_sizes(config, spec)


SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
               "vocab_size", "max_position_embeddings", "head_dim", "n_layer", "n_embd", "n_head", "n_positions",
               "num_layers", "d_model")


def check_config_sizes(config: Any, spec: ModelSpec) -> None:
    """Refuse a size below 1 in the (text) config; warn when config.json sets none (all are defaults)."""
    from llmscope.loading.modelconfig import text_config

    for part in {id(config): config, id(text_config(config)): text_config(config)}.values():
        for name in SIZE_FIELDS:
            value = getattr(part, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1:
                raise ModelLoadError(f"{spec.name}'s config sets {name} to {value}: a size must be at least 1",
                                     hint="fix config.json")
    if spec.is_gguf:  # the GGUF header always gives the sizes
        return
    try:  # config.json as written (transformers fills in its defaults when it builds the config object)
        from transformers import PretrainedConfig

        given = set(PretrainedConfig.get_config_dict(spec.location)[0])
    except Exception:  # unreadable as a plain file here: nothing to say
        return
    if not given & {*SIZE_FIELDS, "text_config"}:
        log.warning("%s's config.json sets no size: every figure shown is transformers' default for %s",
                    spec.name, getattr(config, "model_type", "this model type"))


def warn_remote_code(spec: ModelSpec, trust_remote_code: bool) -> None:
    if trust_remote_code:
        log.warning("--trust-remote-code: running Python code shipped with %s on this machine", spec.name)
