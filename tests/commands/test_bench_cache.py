"""`llmscope bench-cache` in process: every output format (JSON, CSV, table, sweep, depth, plot), the static cache
and torch.compile modes, options refused before loading, Ctrl-C, threads. No timing is asserted."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import pytest

from llmscope.bench import benchmark

TINY = ("-n", "3", "--repeat", "2", "--warmup", "0")


def test_threads_fit_the_free_cores(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.bench.benchmark

    monkeypatch.setattr(llmscope.bench.benchmark, "busy_cpu_percent", lambda interval=0.25: 75.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # 3 of 4 cores busy: 1 left free
    monkeypatch.delenv("LLMSCOPE_THREADS", raising=False)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["threads"] == 1
    assert "timing on 1 torch thread, the cores they leave free" in " ".join(result.stderr.split())
    asked = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0", "--json",
                "--threads", "2")
    assert asked.exit_code == 0 and asked.json()["threads"] == 2, asked.stderr


@pytest.mark.parametrize("columns", [80, 64])
def test_depth_view_cuts_no_figure_and_wraps_fits_under_themselves(cli, tiny_model_dir: Path, columns: int) -> None:
    """At 80 columns (and narrower) no number or header is cut with '…': columns are left out
    (the pair count then said in a caption), and the growth fits wrap under their own text, never to column 0."""
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "6,24", "-n", "3", "--repeat", "1",
                 "--warmup", "0", "-q", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and max(len(line) for line in lines) <= columns
    assert ("pairs per prompt length: 1" in result.stdout) == (columns < 80)
    start = next(i for i, line in enumerate(lines) if line.startswith("  time to first token:"))
    end = next(i for i, line in enumerate(lines) if "mean decode ms/token against prompt tokens" in line)
    fits = [line for line in lines[start:end] if line.strip()]
    assert fits and all(line.startswith(" ") for line in fits), fits
    assert any("⚠" in line for line in fits)  # the two-point notes, wrapped under their text


def test_json_has_every_run(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, *TINY, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "bench-cache" and document["model"] == str(tiny_model_dir)
    assert document["device"] == "cpu" and document["lengths"] == [3] and document["repeat"] == 2
    assert len(document["runs"]) == 4 and {run["mode"] for run in document["runs"]} == {"cache", "no-cache"}
    assert all(run["seconds"] > 0 and run["new_tokens"] == 3 for run in document["runs"])
    length = document["results"][0]
    assert length["check"]["identical"] is True and length["cache"]["seconds"]["n"] == 2
    assert length["kv_cache"]["measured_bytes"] == length["kv_cache"]["formula_bytes"]
    assert document["interrupted"] is False and document["sweep"] is False and "run 1" not in result.stderr


@pytest.mark.parametrize(("flag", "kind"), [("--static-cache", "static"), ("--compile", "static + torch.compile")])
def test_static_cache_and_compile_modes_keep_the_output(cli, tiny_model_dir: Path, flag: str, kind: str) -> None:
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "-n", "4", "--repeat", "2", "--warmup", "1",
                 flag, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["cache_kind"] == kind
    length = document["results"][0]
    assert length["check"]["identical"] is True and length["check"]["pairs_compared"] == 2
    assert length["kv_cache"]["cache_class"] == "StaticCache"
    # a static cache is allocated for prompt + new tokens up front: more than the dynamic cache holds at the end
    assert length["kv_cache"]["measured_bytes"] >= length["kv_cache"]["formula_bytes"]


def test_csv_one_row_per_run(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY, "--csv", "-q")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["mode", "new_tokens", "run", "seconds", "ttft_s", "decode_ms_per_token", "tokens_per_s",
                             "peak_memory_bytes", "peak_over_start_bytes", "prompt_tokens"]
    assert [(row["mode"], row["run"]) for row in rows] == [("cache", "1"), ("no-cache", "1"), ("no-cache", "2"),
                                                           ("cache", "2")]
    assert all(float(row["seconds"]) >= float(row["ttft_s"]) > 0 and row["new_tokens"] == "3" for row in rows)


def test_table_for_people(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "-", "-m", tiny_model_dir, *TINY, input="Hello world\n")
    assert result.exit_code == 0, result.stderr
    for expected in ("with KV cache", "without cache", "time to first token", "decode ms/token",
                     "speed-up from the cache", "KV cache held at the end", "DynamicCache",
                     "✓ identical token ids with and without the cache (2 pairs × 3 tokens)"):
        assert expected in result.stdout
    assert "cache run 1:" in result.stderr and "peak memory:" in result.stderr  # progress lines go to stderr


def test_sweep_fits_and_charts(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "2,1", "--warmup", "0", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert [length["new_tokens"] for length in document["results"]] == [1, 2] and document["sweep"] is True
    assert document["repeat"] == benchmark.DEFAULT_SWEEP_REPEAT == 3 and len(document["runs"]) == 12
    assert [growth["mode"] for growth in document["growth"]] == ["cache", "no-cache"]
    assert all(growth["fit"]["points"] == 2 for growth in document["growth"])
    text = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--repeat", "1", "--warmup", "0", "-q")
    assert text.exit_code == 0 and "● with KV cache ∝ n^" in text.stdout and "■ without cache ∝ n^" in text.stdout
    assert "at every length (2 pairs)" in text.stdout and "run 1" not in text.stderr


def test_a_difference_is_marked_and_warned(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = benchmark._one_run

    def corrupt(loaded, input_ids, mask, new_tokens, use_cache, on_token, cache_options=None):
        seconds, times, memory, raw = real(loaded, input_ids, mask, new_tokens, use_cache, on_token, cache_options)
        if not use_cache:
            raw.ids[2] = raw.ids[2] + 1
        return seconds, times, memory, raw

    monkeypatch.setattr(benchmark, "_one_run", corrupt)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY)
    assert result.exit_code == 0
    assert "✗ the token ids differ with and without the cache at new token 2 (run 1" in result.stdout
    assert "warning: the token ids differ" in result.stderr


def test_ctrl_c_shows_finished_runs_and_exits_130(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = benchmark._one_run
    calls = []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "_one_run", interrupt_third)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY, "--json")
    assert result.exit_code == 130
    assert len(result.json()["runs"]) == 2 and result.json()["interrupted"] is True
    assert "interrupted: showing the 2 timed run(s) that finished" in result.stderr


def test_threads_are_set_for_the_run_and_restored(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(benchmark, "busy_cpu_percent", lambda interval=0.25: 80.0)
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0",
                 "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["threads"] == 1 and document["busy_cpu_percent"] == 80.0 and torch.get_num_threads() == before
    assert "warning: other processes kept the CPUs 80% busy just before timing" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--repeat", "0"), "--repeat must be at least 1"),
    (("--warmup", "-1"), "--warmup must be 0 or more"),
    (("-n", "0"), "--max-new-tokens must be at least 1"),
    (("--sweep", "16,abc"), "--sweep takes comma-separated token counts"),
    (("--sweep", "16"), "--sweep needs at least two different lengths"),
    (("--sweep", "8,16", "-n", "4"), "either --max-new-tokens or --sweep"),
    (("--json", "--csv"), "give one of --json, --csv"),
    (("--plot", "chart.png"), "--plot draws the --sweep or --depth chart"),
    (("--repeat", "3", "--max-time", "10"), "either --repeat (a fixed count) or --max-time"),
    (("--max-time", "nan"), "--max-time must be a positive number of seconds"),
    (("--max-time", "0"), "--max-time must be a positive number of seconds"),
    (("--depth", "8,x"), "--depth takes comma-separated token counts, like 128,512,2048"),
    (("--depth", "8"), "--depth needs at least two different lengths"),
    (("--depth", "8,16", "--sweep", "1,2"), "either --sweep (output lengths) or --depth"),
    (("--depth", "100,300"), "--depth 300 does not fit: the prompt has 300 tokens but the model's context is 256"),
    (("--depth", "100,250"), "--depth 250 does not fit: 250 prompt tokens + --max-new-tokens 16 exceed the model's"),
    (("--sweep", "8,16", "--plot", "chart.pdf"), "--plot writes .png or .svg"),
    (("-n", "500"), "exceed the model's context of 256"),
    (("--threads", "0"), "--threads must be at least 1"),
    (("--compile", "--warmup", "0"), "--compile needs at least one warm-up run"),
])
def test_bad_options_are_usage_errors(cli, tiny_model_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_plot_without_matplotlib_says_how_to_install(cli, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--plot", tmp_path / "chart.png")
    assert result.exit_code == 2 and "pip install 'llmscope[plot]'" in result.stderr


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_the_image(cli, tiny_model_dir: Path, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / f"chart{suffix}"
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--repeat", "1", "--warmup", "0",
                 "--plot", path)
    assert result.exit_code == 0, result.stderr
    head = path.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in path.read_bytes()
    assert f"wrote {path}" in result.stderr


@pytest.mark.parametrize("where", ["folder", "under a file", "no permission"])
def test_plot_path_is_checked_before_anything_runs(cli, tmp_path: Path, where: str) -> None:
    """A --plot path that cannot be written fails at once: the model (here one that does not exist) never loads."""
    plain_file = tmp_path / "file.txt"
    plain_file.write_text("x")
    path = {"folder": tmp_path / "charts.png", "under a file": plain_file / "chart.png",
            "no permission": Path("/sys/llmscope-chart.png")}[where]
    if where == "folder":
        path.mkdir()
    result = cli("bench-cache", "Hi", "-m", tmp_path / "no-such-model", "--sweep", "1,2", "--plot", path)
    expected = {"folder": "is a folder", "under a file": "does not exist", "no permission": "cannot write"}[where]
    assert result.exit_code == 2 and expected in result.stderr and "no-such-model" not in result.stderr


def test_default_run_is_adaptive_and_records_the_machine(cli, tiny_model_dir: Path) -> None:
    import importlib.metadata

    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "3", "--warmup", "0", "--max-time", "2",
                 "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["repeat"] is None and document["max_time_s"] == 2 and document["min_pairs"] == 3
    length = document["results"][0]
    assert length["stop_reason"] in ("converged", "time budget", "pair limit")
    assert length["speedup"]["pairs"]["n"] == document["complete_pairs"] >= 1
    machine = document["machine"]
    assert machine["torch_version"] == importlib.metadata.version("torch")
    assert machine["transformers_version"] == importlib.metadata.version("transformers")
    assert machine["llmscope_version"] == document["llmscope_version"] and machine["gpu_name"] is None
    assert machine["cpu_model"] and machine["threads"] == document["threads"] and len(machine["load_average"]) == 3
    assert machine["timestamp"].endswith("+00:00")


def test_depth_times_prefill_and_decode_at_each_prompt_length(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "24,6", "-n", "3", "--repeat", "2",
                 "--warmup", "0", "--json", "-q", "--plot", tmp_path / "depth.png")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["depths"] == [6, 24] and document["lengths"] == [3]
    assert [length["prompt_tokens"] for length in document["results"]] == [6, 24]
    for length in document["results"]:
        assert length["kv_cache"]["tokens"] == length["prompt_tokens"] + 3 - 1
        assert length["check"]["identical"] is True and length["cache"]["runs"] == 2
    assert sorted({run["prompt_tokens"] for run in document["runs"]}) == [6, 24] and len(document["runs"]) == 8
    assert {(g["quantity"], g["mode"]) for g in document["growth"]} == {
        (q, m) for q in ("ttft_s", "decode_ms_per_token") for m in ("cache", "no-cache")}
    assert all(g["against"] == "prompt_tokens" and g["fit"]["points"] == 2 for g in document["growth"])
    assert (tmp_path / "depth.png").read_bytes().startswith(b"\x89PNG")
    text = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "6,24", "-n", "3", "--repeat", "1",
               "--warmup", "0", "-q")
    assert text.exit_code == 0, text.stderr
    for expected in ("prompts of 6, 24 tokens", "TTFT cache", "time to first token: with KV cache ∝ n^",
                     "decode ms/token: with KV cache ∝ n^", "mean decode ms/token against prompt tokens"):
        assert expected in text.stdout
    # each noise note is said once for the points it covers, not once per point or per mode
    assert text.stdout.count("one pair only") == 1 and "⚠ every point: one pair only" in text.stdout
    assert text.stdout.count("two points: the line passes through both") == 2  # once per fitted quantity
