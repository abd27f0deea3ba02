"""patch's flags do what they say: the direction flags (--denoise, --noise, the default) against the JSON and the
cells, options that have no effect in the chosen way of corrupting refused before any load, an empty --corrupt
named, and a --max-passes hint whose ranges really fit. Fast tier (tiny random model)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

CLEAN = "The capital of France is"
CORRUPT = "The capital of Rome is"  # the same 8 tokens in the tiny tokenizer
ANSWERS = ("--target", " capital", "--corrupt-target", " of")  # single tokens of the tiny tokenizer
NO_MODEL = "/nonexistent/llmscope-model"  # a refusal that names this path came after an attempt to load


@pytest.mark.parametrize(("flags", "mode", "patched_run", "last_cell"), [
    ((), "denoise", "corrupt", 1.0),  # clean residual at the last block and position: the clean answer, fully back
    (("--denoise",), "denoise", "corrupt", 1.0),
    (("--noise",), "noise", "clean", 0.0),  # corrupted residual there: the corrupted answer, nothing left
])
def test_direction_flags_run_what_they_name(cli: Any, tiny_model_dir: Path, flags: tuple[str, ...], mode: str,
                                           patched_run: str, last_cell: float) -> None:
    result = cli("patch", CLEAN, "--corrupt", CORRUPT, "-m", tiny_model_dir, *ANSWERS, "--layers", "-1",
                 *flags, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert (document["mode"], document["patched_run"]) == (mode, patched_run)
    assert document["grids"][0]["values"][-1][-1] == pytest.approx(last_cell, abs=1e-5)


def test_help_names_the_default_direction(cli: Any) -> None:
    text = " ".join(cli("patch", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "--noise / --denoise" in text and "[default: denoise]" in text


@pytest.mark.parametrize(("args", "message"), [
    (("--ablate", "zero", "--reference", "hi"), "--reference has no effect with --ablate zero"),
    (("--corrupt", CORRUPT, "--reference", "hi"), "--reference has no effect without --ablate"),
    (("--corrupt", CORRUPT, "--samples", "3"), "--samples has no effect with --corrupt TEXT"),
    (("--corrupt", CORRUPT, "--seed", "0"), "--seed has no effect with --corrupt TEXT"),  # 0 is the default
    (("--corrupt", CORRUPT, "--noise-scale", "3"), "--noise-scale has no effect with --corrupt TEXT"),
    (("--corrupt-noise", "France", "--align", "end"), "--align has no effect with --corrupt-noise SUBJECT"),
    (("--ablate", "zero", "--align", "start"), "--align has no effect with --ablate zero"),
    (("--ablate", "zero", "--denoise"), "--denoise has no effect with --ablate zero"),
    (("--ablate", "mean", "--reference", "hi", "--samples", "2"), "--samples has no effect with --ablate mean"),
])
def test_options_without_effect_are_refused_before_loading(cli: Any, args: tuple[str, ...], message: str) -> None:
    result = cli("patch", CLEAN, "-m", NO_MODEL, *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert NO_MODEL not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_options_a_batch_record_may_use_are_accepted(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(f'{{"prompt": "{CLEAN}", "subject": "France"}}\n')
    result = cli("patch", "--batch", pairs, "-m", tiny_model_dir, "--layers", "-1", "--samples", "2", "--seed", "1",
                 "--metric", "prob")
    assert result.exit_code == 0, result.stderr
    assert '"samples": 2' in result.stdout


def test_empty_corrupt_is_named_before_loading(cli: Any) -> None:
    for empty in ("", "   "):
        result = cli("patch", CLEAN, "-m", NO_MODEL, "--corrupt", empty)
        assert result.exit_code == 2 and "--corrupt is empty" in result.stderr, result.stderr
        assert NO_MODEL not in result.stderr


@pytest.mark.parametrize(("budget", "sites"), [("1", "resid"), ("5", "all"), ("9", "resid"), ("20", "resid,attn"),
                                               ("3", "heads")])
def test_max_passes_hint_names_ranges_that_fit(cli: Any, tiny_model_dir: Path, budget: str, sites: str) -> None:
    args = ["patch", CLEAN, "--corrupt", CORRUPT, "-m", tiny_model_dir, *ANSWERS, "--site", sites,
            "--max-passes", budget]
    refused = cli(*args, "--json", "-q")
    assert refused.exit_code == 2 and "exceed --max-passes" in refused.stderr
    suggested = re.search(r": (--layers .+?) fits \(([\d,]+) patched runs\)", refused.stderr)
    if sites == "heads":  # 4 heads in one block are already more than 3 runs: nothing to narrow but the sites
        assert suggested is None and "even one block at one position is 4 patched runs" in refused.stderr
        return
    assert suggested is not None, refused.stderr
    ran = cli(*args, *shlex.split(suggested.group(1)), "--json", "-q")
    assert ran.exit_code == 0, ran.stderr
    document = ran.json()
    assert document["cost"]["rows"] == int(suggested.group(2).replace(",", "")) <= int(budget)
