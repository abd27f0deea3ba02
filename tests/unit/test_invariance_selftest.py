"""The invariance self-test: it probes the kernels a model uses once per machine key, caches the answer beside the
conversion cache, says its verdict in every model_info, `env` and check-invariance, and where a probe fails it says
so and computes one row per call, which keeps a prompt's numbers the same alone and batched."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from llmscope.loading.loader import load_model


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path))
    return tmp_path


def test_the_machine_key_names_what_picks_the_kernels() -> None:
    """CPU, ISA flags, torch and its CPU capability, MKL and oneDNN versions, threads and the variables that steer
    them; under ATEN_CPU_CAPABILITY / MKL_ENABLE_INSTRUCTIONS (tests/test_invariance_cpus.py) they are in force."""
    import torch

    from llmscope.invariance.selftest import machine, machine_key

    described = machine()
    assert described["torch"] == torch.__version__ and described["threads"] == torch.get_num_threads()
    assert described["cpu"] and described["mkl"] and described["onednn"]
    assert described["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        assert described["cpu_capability"] == os.environ["ATEN_CPU_CAPABILITY"].upper()
    for name in ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        assert described["environment"].get(name) == os.environ.get(name)
    assert machine_key(described) == machine_key(machine())
    assert machine_key(described) != machine_key({**described, "threads": described["threads"] + 1})


def test_the_self_test_probes_once_per_machine_key_and_caches_its_answers(fresh_cache: Path) -> None:
    from llmscope.invariance.kernels import TILE_ROWS
    from llmscope.invariance.selftest import REPRESENTATIVE, answers_path, self_test

    first = self_test()
    assert first.probed_now == len(REPRESENTATIVE) and first.verdict in ("invariant", "fallback")
    assert first.tile_rows == (TILE_ROWS if first.verdict == "invariant" else 1)
    stored = json.loads(answers_path(first.key).read_text())
    assert Path(first.path) == answers_path(first.key) and str(fresh_cache) in first.path
    assert stored["machine"]["cpu"] and set(stored["checks"]) >= {
        "int4 576x1536 per row", f"linear float32 576x1536 @{TILE_ROWS}", f"attention kv3 groups3 depth64 @{TILE_ROWS}"}
    again = self_test()
    assert again.probed_now == 0 and again.verdict == first.verdict and "cached" in again.info.probe
    more = self_test(("linear float32 64x32 bias",))  # a new shape: only it is probed
    assert more.probed_now == 1 and f"linear float32 64x32 bias @{TILE_ROWS}" in json.loads(
        answers_path(first.key).read_text())["checks"]


@pytest.mark.parametrize("kernel", ["linear float32 576x1536", "linear float32 100x96 bias",
                                    "conv1d float32 64x192 bias", "bfloat16 576x192", "linear bfloat16 256x192",
                                    "int4 576x1536", "int8 576x192", "attention kv3 groups3 depth64",
                                    "attention kv1 groups4 depth16"])
def test_each_probe_holds_on_this_machine_in_tiles_or_one_row_per_call(kernel: str) -> None:
    """Tiles where the self-test says so, and one row per call always (the fallback is invariant by construction)."""
    from llmscope.invariance.kernels import TILE_ROWS
    from llmscope.invariance.selftest import KernelUnavailable, probe, self_test

    try:
        assert probe(kernel, 1)
    except KernelUnavailable as error:
        pytest.skip(f"{kernel} cannot be built on this machine: {error}")
    if self_test((kernel,)).verdict == "invariant":
        assert probe(kernel, TILE_ROWS)


def test_a_probe_that_fails_falls_back_to_one_row_per_call_and_says_so(fresh_cache: Path, tiny_model_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A kernel whose tiles gave a row other bits: the loader says so on stderr, computes each row on its own, and
    the prompt's logits are still the same alone and in a batch."""
    import torch

    from llmscope.generation.decoding import pad_token_id, prompt_batch
    from llmscope.invariance import selftest

    real = selftest.probe
    monkeypatch.setattr(selftest, "probe", lambda kernel, rows: rows == 1 and real(kernel, rows))
    with caplog.at_level(logging.WARNING, logger="llmscope"):
        loaded = load_model(str(tiny_model_dir), device="cpu", quantize="none")
    assert loaded.invariant and loaded.info.invariance.verdict == "fallback"
    verdict = loaded.info.invariance
    assert verdict.tile_rows == 1 and "failed at 8 rows per call: attention" in verdict.probe
    assert any("one row per call" in record.getMessage() for record in caplog.records)
    rows = [loaded.tokenizer(text)["input_ids"] for text in ("The capital of France is", "Hi", "1, 2, 3, 4, 5")]

    def logits(chosen: list[list[int]]) -> list[torch.Tensor]:
        batch = prompt_batch(chosen, pad_token_id(loaded.tokenizer), "cpu")
        with torch.inference_mode():
            out = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False).logits
        return [out[row, out.shape[1] - len(ids):] for row, ids in enumerate(chosen)]

    together = logits(rows)
    assert all(torch.equal(logits([ids])[0], batched) for ids, batched in zip(rows, together))


def test_a_probe_that_fails_even_one_row_per_call_claims_nothing(fresh_cache: Path, tiny_model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from llmscope.invariance import selftest

    monkeypatch.setattr(selftest, "probe", lambda kernel, rows: not kernel.startswith("attention"))
    with caplog.at_level(logging.WARNING, logger="llmscope"):
        loaded = load_model(str(tiny_model_dir), device="cpu", quantize="none")
    assert loaded.info.invariance.verdict == "failed"
    assert any("NOT batch- or cache-invariant" in record.getMessage() for record in caplog.records)


def test_every_commands_model_info_and_env_carry_the_verdict(cli, tiny_model_dir: Path) -> None:
    from llmscope.invariance.kernels import TILE_ROWS

    result = cli("next-token", "Hello", "-m", str(tiny_model_dir), "--json")
    assert result.exit_code == 0, result.stderr
    verdict = result.json()["model_info"]["invariance"]
    assert verdict["verdict"] in ("invariant", "fallback") and verdict["tile_rows"] in (TILE_ROWS, 1)
    assert "machine key" in verdict["probe"]
    table = cli("check-invariance", "Hello", "-m", str(tiny_model_dir), "-n", "1")
    assert table.exit_code == 0 and "self-test: " in table.stdout.replace("\n", " ")
    env = cli("env", "--json")
    assert env.exit_code == 0 and env.json()["invariance"]["verdict"] in ("invariant", "fallback")
    assert Path(env.json()["invariance_file"]).is_file()
    off = load_model(str(tiny_model_dir), device="cpu", invariant=False)
    assert off.info.invariance.verdict == "off" and off.info.invariance.tile_rows is None


def test_a_new_thread_count_gets_its_own_verdict_before_the_next_forward(tiny_model_dir: Path) -> None:
    import torch

    loaded = load_model(str(tiny_model_dir), device="cpu")
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    torch.set_num_threads(other)
    try:
        ids = loaded.tokenizer("Hello")["input_ids"]
        with torch.inference_mode():
            loaded.model(input_ids=torch.tensor([ids]))
        assert f"({other} thread{'s' if other != 1 else ''})" in loaded.info.invariance.probe
    finally:
        torch.set_num_threads(before)
