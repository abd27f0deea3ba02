"""The invariance self-test: on first use on a machine, probe the GEMM kernels a model uses (a row at every position of
a fixed-shape tile with random companions, against the row alone), decide how many rows each call takes, and cache
the answer as JSON beside the conversion cache. It installs through invariance.kernels; it never prints (it logs).

The answer is kept per machine key: CPU model, the ISA flags that pick kernels (avx*, amx*, fma), torch's version and
CPU capability, MKL's and oneDNN's versions, torch's thread count, the environment variables that steer those
libraries (MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY, ...) and a hash of llmscope's kernels and probes. Each kernel
shape is probed once per key; a later model with new shapes probes only those. Verdicts: "invariant" (every check
held at TILE_ROWS rows per call), "fallback" (one failed, so every GEMM runs one row per call, which holds by
construction: a lone row's product depends on the row only), "failed" (even that did not hold: no invariance is
claimed) and "off" (not installed: another device, or asked not to).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmscope.core.model_info import InvarianceInfo
from llmscope.invariance import kernels
from llmscope.loading.conversion_cache import cache_root

log = logging.getLogger("llmscope")

PROBE_FORMAT = 1  # bump when the checks' meaning changes (a changed kernels.py or selftest.py re-probes anyway)
PROBE_COLUMNS = 4096  # outputs probed per linear shape (a vocabulary-wide head is probed on its first 4096 rows)
ISA_PREFIXES = ("avx", "amx", "fma")
STEERING = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY",
            "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")
ATTENTION_POSITIONS = 260  # keys in the attention checks: more than one KEY_CHUNK, so chunks are summed
# Representative kernels for a machine-wide answer (`llmscope env`): SmolLM2-135M's shapes, the default model.
REPRESENTATIVE = ("linear float32 576x1536", "linear float32 1536x576", "linear float32 576x4096",
                  "int4 576x1536", "int8 576x1536", "attention kv3 groups3 depth64")


@dataclass(frozen=True)
class SelfTest:
    """What the self-test decided for a set of kernels on this machine."""

    verdict: str  # "invariant", "fallback" or "failed"
    tile_rows: int  # rows per dense GEMM call from now on
    packed_rows_independent: bool  # the packed int4 / int8 kernels computed each row on its own
    kernels: tuple[str, ...]  # the kernels checked (names as in REPRESENTATIVE)
    failed: tuple[str, ...]  # the checks that did not hold at kernels.TILE_ROWS rows per call
    unavailable: tuple[str, ...]  # kernels that cannot be built here (left out of the verdict: nothing runs them)
    probed_now: int  # checks run now (0: every answer came from the cache)
    seconds: float  # time spent probing now
    key: str  # the machine key (a hash of machine())
    threads: int  # torch's thread count, part of the key
    path: str  # the cache file

    @property
    def info(self) -> InvarianceInfo:
        """The verdict as every command's model_info carries it."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        how = (f"probed now ({self.probed_now} checks, {self.seconds:.2f} s)" if self.probed_now else
               "cached") + f" for machine key {self.key} ({threads}): {len(self.kernels)} kernels"
        if self.failed:
            how += f"; failed at {kernels.TILE_ROWS} rows per call: {', '.join(self.failed)}"
        if self.unavailable:
            how += f"; not available here: {', '.join(self.unavailable)}"
        return InvarianceInfo(verdict=self.verdict, tile_rows=self.tile_rows, probe=how)


# -------------------------------------------------------------------------------------- the machine key


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = "", []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and not model:
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = sorted(flag for flag in value.split() if flag.startswith(ISA_PREFIXES))
            if model and flags:
                break
    return model or platform.processor() or platform.machine(), flags


def cpu_flags() -> list[str]:
    """The ISA flags that pick kernels (avx*, amx*, fma) this CPU reports (empty where /proc/cpuinfo is absent)."""
    return _cpu_model_and_flags()[1]


def machine() -> dict[str, Any]:
    """Everything that picks the kernels a GEMM runs here."""
    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version (.+?) for", shown)
    onednn = re.search(r"MKL-DNN (v[\w.]+)(?: \(Git Hash (\w+)\))?", shown)
    model, flags = _cpu_model_and_flags()
    return {"cpu": model, "isa": flags, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl.group(1) if mkl else None,
            "onednn": " ".join(part for part in onednn.groups() if part) if onednn else None,
            "threads": torch.get_num_threads(),
            "environment": {name: os.environ[name] for name in STEERING if name in os.environ},
            "probe_format": PROBE_FORMAT, "llmscope_kernels": _source_digest()}


def _source_digest() -> str:
    """A hash of the code under test (the kernels and these probes): a changed kernel is probed again."""
    digest = hashlib.sha256()
    for module in (kernels.__file__, __file__):
        with contextlib.suppress(OSError, TypeError):
            digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:12]


def machine_key(described: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def answers_path(key: str) -> Path:
    """The cache file of one machine key: <cache root>/invariance/<key>.json."""
    return cache_root() / "invariance" / f"{key}.json"


UNAVAILABLE = "unavailable"  # an answer: the kernel cannot be built here (so no model here runs it)


class KernelUnavailable(Exception):
    """The kernel to probe cannot be built on this machine (a packed layout torch does not make here, ...)."""


def _read_answers(path: Path) -> dict[str, bool | str]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    checks = document.get("checks") if isinstance(document, dict) else None
    return {name: value for name, value in checks.items() if isinstance(value, bool) or value == UNAVAILABLE
            } if isinstance(checks, dict) else {}


def _write_answers(path: Path, described: dict[str, Any], answers: dict[str, bool | str]) -> None:
    """Write the file through a temporary one and a rename, so a concurrent reader sees an old or a new file, whole.
    A cache that cannot be written only costs a probe next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        staging.write_text(json.dumps({"machine": described, "checks": dict(sorted(answers.items()))}, indent=1))
        os.replace(staging, path)
    except OSError as error:
        log.info("the invariance self-test's answers were not cached (%s)", error)


# -------------------------------------------------------------------------------------- which kernels a model uses


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _kernel_of(module: nn.Module) -> str | None:
    """The name of the GEMM kernel a layer runs, with its shape (outputs capped at PROBE_COLUMNS); None: not a GEMM."""
    packed = getattr(module, "packed", None)
    if type(module).__name__ == "PackedLinear" and packed is not None:
        columns = min(packed.rows, PROBE_COLUMNS)
        return f"{packed.kind} {packed.columns}x{columns}"
    conv1d = type(module).__name__ == "Conv1D"
    if not (isinstance(module, nn.Linear) or conv1d):
        return None  # (a packed embedding's `weight` would dequantize the whole table: never read it here)
    weight = module.weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.is_meta:
        return None
    bias = " bias" if getattr(module, "bias", None) is not None else ""
    if conv1d:
        return f"conv1d {_dtype_name(weight.dtype)} {weight.shape[0]}x{min(weight.shape[1], PROBE_COLUMNS)}{bias}"
    return f"linear {_dtype_name(weight.dtype)} {weight.shape[1]}x{min(weight.shape[0], PROBE_COLUMNS)}{bias}"


def _attention_of(config: Any) -> str:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None) or 4
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None) or 64 * heads
    depth = getattr(text, "head_dim", None) or hidden // heads
    return f"attention kv{kv_heads} groups{max(heads // kv_heads, 1)} depth{depth}"


def model_kernels(model: nn.Module) -> tuple[str, ...]:
    """The distinct GEMM kernels (with shapes) a model's forward runs: its linear layers and its attention."""
    found = {name for module in model.modules() if (name := _kernel_of(module)) is not None}
    found.add(_attention_of(getattr(model, "config", None)))
    return tuple(sorted(found))


# -------------------------------------------------------------------------------------- probes


def _layer(kernel: str, generator: torch.Generator) -> tuple[nn.Module, int, torch.dtype]:
    """A layer of random weights that runs `kernel` (a name from _kernel_of), with its input width and dtype."""
    from llmscope.loading.quant.modules import PackedLinear
    from llmscope.loading.quant.packing import quantize

    words = kernel.split()
    kind = words[0]
    if kind in ("int4", "int8", "bfloat16"):
        width, outputs = map(int, words[1].split("x"))
        dense = torch.randn(outputs, width, generator=generator)
        try:
            weight = quantize(dense, kind)
        except (RuntimeError, ValueError) as error:
            raise KernelUnavailable(str(error)) from error
        if weight is None:
            raise KernelUnavailable(f"no packed {kind} kernel takes {width} x {outputs}")
        return PackedLinear(weight), width, torch.float32
    dtype = getattr(torch, words[1])
    width, outputs = map(int, words[2].split("x"))
    bias = "bias" in words[3:]
    if kind == "conv1d":
        from transformers.pytorch_utils import Conv1D

        layer: nn.Module = Conv1D(outputs, width)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(width, outputs, generator=generator))
            layer.bias.copy_(torch.randn(outputs, generator=generator))
    else:
        layer = nn.Linear(width, outputs, bias=bias)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(outputs, width, generator=generator))
            if bias:
                layer.bias.copy_(torch.randn(outputs, generator=generator))
    return layer.to(dtype), width, dtype


def _rows_hold(layer: nn.Module, width: int, dtype: torch.dtype, tile_rows: int, generator: torch.Generator) -> bool:
    """A row gets the same bits at every position of a tile (and of the next one), among random rows, as alone."""
    row = torch.randn(1, width, generator=generator).to(dtype)
    alone = layer(row)[0]
    for position in range(max(tile_rows, 4) + 1):
        count = position + 1 + (3 * position) % (tile_rows + 2)  # some companions after the row, too
        rows = torch.randn(count, width, generator=generator).to(dtype)
        rows[position] = row[0]
        if not torch.equal(layer(rows)[position], alone):
            return False
    return torch.equal(layer(torch.cat([row, row]).view(2, 1, width))[1, 0], alone)  # [batch, positions, width]


def probe_linear(kernel: str, tile_rows: int | None) -> bool:
    """Whether a layer running `kernel` gives a row the same bits whatever rows come with it: in fixed-shape tiles of
    `tile_rows` rows, or as the kernel comes (None: the packed int4 / int8 kernels, which should need no tiles)."""
    generator = torch.Generator().manual_seed(len(kernel))
    layer, width, dtype = _layer(kernel, generator)
    if tile_rows is not None:
        holder = nn.Sequential(layer)
        kernels.make_linears_invariant(holder, tile_rows, packed_rows_independent=False)
        layer = holder[0]
    with torch.inference_mode():
        return _rows_hold(layer, width, dtype, tile_rows or kernels.TILE_ROWS, generator)


def probe_attention(kernel: str, tile_rows: int) -> bool:
    """Whether invariant attention gives a query the same bits among the other queries of a prompt's tail, as a lone
    query against the keys so far (a cached decode step), and in a left-padded row of a batch beside a random row.
    The keys span two KEY_CHUNKs, so chunked sums are checked too."""
    kv_heads, groups, depth = (int(re.sub(r"\D", "", word)) for word in kernel.split()[1:])
    generator = torch.Generator().manual_seed(kv_heads * 100 + depth)
    module = nn.Module().eval()
    setattr(module, kernels.TILE_ATTRIBUTE, tile_rows)
    module.return_attention_weights = True  # the weights' path runs too (and transformers is not asked)
    queries, keys, padding = 2 * tile_rows + 3, ATTENTION_POSITIONS, 5
    query = torch.randn(1, kv_heads * groups, queries, depth, generator=generator)
    key, value = (torch.randn(1, kv_heads, keys, depth, generator=generator) for _ in range(2))
    attend = kernels.invariant_attention
    with torch.inference_mode():
        alone = attend(module, query, key, value, None)[0]  # [1, Q, H, D]: the last Q of `keys` positions
        if not torch.equal(attend(module, query[:, :, -1:], key, value, None)[0][0, 0], alone[0, -1]):
            return False
        shorter = keys - queries + 1  # the first of the Q queries alone, against the keys up to it
        if not torch.equal(attend(module, query[:, :, :1], key[:, :, :shorter], value[:, :, :shorter], None)[0][0, 0],
                           alone[0, 0]):
            return False
        batch_query = torch.randn(2, kv_heads * groups, queries, depth, generator=generator)
        batch_key, batch_value = (torch.randn(2, kv_heads, keys + padding, depth, generator=generator)
                                  for _ in range(2))
        batch_query[1], batch_key[1, :, padding:], batch_value[1, :, padding:] = query[0], key[0], value[0]
        index = torch.arange(keys + padding)
        visible = (index[None, :] <= index[-queries:, None])[None].repeat(2, 1, 1)  # [2, Q, K + padding]
        visible[1, :, :padding] = False  # nobody sees row 1's padding
        position_ids = torch.stack([index[-queries:], index[-queries:] - padding])
        batched = attend(module, batch_query, batch_key, batch_value, visible[:, None], position_ids=position_ids)[0]
        return torch.equal(batched[1], alone[0])


def probe(kernel: str, tile_rows: int) -> bool:
    """One check: `kernel` (a name from model_kernels) at `tile_rows` rows per call."""
    if kernel.startswith("attention"):
        return probe_attention(kernel, tile_rows)
    packed = kernel.split()[0] in ("int4", "int8")
    return probe_linear(kernel, None if packed and tile_rows != 1 else tile_rows)


# -------------------------------------------------------------------------------------- the verdict


def _check_name(kernel: str, tile_rows: int) -> str:
    if kernel.split()[0] in ("int4", "int8") and tile_rows != 1:
        return f"{kernel} per row"  # the packed kernels run untiled unless in the one-row fallback
    return f"{kernel} @{tile_rows}"


def self_test(kernel_names: tuple[str, ...] = REPRESENTATIVE) -> SelfTest:
    """The verdict for these kernels on this machine: from the cache where every answer is there, else probed now
    (only the kernels not yet probed under this machine key) and cached."""
    described = machine()
    key = machine_key(described)
    path = answers_path(key)
    answers = _read_answers(path)
    started, probed = time.perf_counter(), 0

    def passed(tile_rows: int) -> list[str]:
        nonlocal probed
        failing = []
        for kernel in kernel_names:
            name = _check_name(kernel, tile_rows)
            if name not in answers:
                try:
                    answers[name] = probe(kernel, tile_rows)
                except KernelUnavailable as error:
                    log.info("invariance check %s: the kernel is not available here (%s)", name, error)
                    answers[name] = UNAVAILABLE
                except (RuntimeError, ValueError) as error:  # a kernel that fails to run cannot be shown invariant
                    log.info("invariance check %s raised %s", name, error)
                    answers[name] = False
                probed += 1
            if answers[name] is False:
                failing.append(kernel)
            elif answers[name] == UNAVAILABLE and kernel not in unavailable:
                unavailable.append(kernel)
        return failing

    unavailable: list[str] = []

    failed = passed(kernels.TILE_ROWS)
    verdict, tile_rows = "invariant", kernels.TILE_ROWS
    if failed:
        verdict, tile_rows = ("fallback", 1) if not passed(1) else ("failed", 1)
    if probed:
        _write_answers(path, described, answers)
    packed_ok = not any(kernel.split()[0] in ("int4", "int8") for kernel in failed)
    return SelfTest(verdict=verdict, tile_rows=tile_rows, packed_rows_independent=packed_ok, kernels=kernel_names,
                    failed=tuple(failed), unavailable=tuple(unavailable), probed_now=probed,
                    seconds=time.perf_counter() - started, key=key, threads=described["threads"], path=str(path))


def _say(result: SelfTest) -> None:
    if result.probed_now:
        log.info("checked this machine's GEMM kernels for batch invariance: %s (%d checks, %.2f s, cached in %s)",
                 result.verdict, result.probed_now, result.seconds, result.path)
    if result.verdict == "fallback":
        log.warning("this machine's GEMM kernels give a row different bits depending on the rows beside it (%s): "
                    "llmscope computes every row on its own (one row per call, invariant by construction but "
                    "slower)", ", ".join(result.failed))
    elif result.verdict == "failed":
        log.warning("this machine's GEMM kernels give a row different bits depending on the rows beside it, even "
                    "one row per call: figures are NOT batch- or cache-invariant here (check-invariance measures "
                    "how much they differ)")


def install(model: nn.Module) -> bool:
    """Make a loaded CPU model invariant with the tile size the self-test allows on this machine, keep the verdict on
    the model (invariance_of) and re-check it when torch's thread count changes. Returns kernels.make_invariant's
    answer: False when the model's attention could not switch."""
    result = self_test(model_kernels(model))
    _say(result)
    switched = kernels.make_invariant(model, result.tile_rows, result.packed_rows_independent)
    model.llmscope_invariance = result.info if switched else InvarianceInfo(
        "off", None, "the model's attention could not switch to llmscope's invariant attention")
    if switched:
        model.llmscope_invariance_threads = torch.get_num_threads()
        model.register_forward_pre_hook(_recheck_threads)
    return switched


def _recheck_threads(model: nn.Module, _inputs: Any) -> None:
    """Before a forward pass: when torch's thread count changed since the verdict, get this count's verdict (cached
    after the first time) and tile accordingly."""
    threads = torch.get_num_threads()
    if getattr(model, "llmscope_invariance_threads", threads) == threads:
        return
    model.llmscope_invariance_threads = threads
    result = self_test(model_kernels(model))
    _say(result)
    kernels.make_linears_invariant(model, result.tile_rows, result.packed_rows_independent)
    model.llmscope_invariance = result.info


def invariance_of(model: Any) -> InvarianceInfo:
    """What the loaded model's figures are, as the self-test found: "off" when the invariant numerics are not
    installed."""
    found = getattr(model, "llmscope_invariance", None)
    if isinstance(found, InvarianceInfo):
        return found
    return InvarianceInfo("off", None, "not installed (a device other than the CPU, a device map, or invariant=False)")
