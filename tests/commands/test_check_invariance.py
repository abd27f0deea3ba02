"""`llmscope check-invariance` in process: zero differences on the tiny model, in JSON and in the table."""

from __future__ import annotations

from pathlib import Path


def test_check_invariance_reports_zero_differences(cli, tiny_model_dir: Path) -> None:
    result = cli("check-invariance", "Hello world", "-m", str(tiny_model_dir), "-n", "4", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "check-invariance" and document["identical"] is True
    assert document["invariant"] is True and document["attention"] == "llmscope_invariant"
    assert document["batch_size"] == 8 and document["new_tokens"] == 4
    found = {(d["quantity"], d["comparison"]): d for d in document["differences"]}
    assert set(found) == {(q, c) for q in ("logits", "hidden states", "attention weights", "greedy tokens")
                          for c in ("batch", "cache")}
    assert all(d["max_abs"] == 0 and d["identical"] is True and d["compared"] > 0 for d in found.values())
    assert found[("greedy tokens", "cache")]["compared"] == 4


def test_check_invariance_table(cli, tiny_model_dir: Path) -> None:
    result = cli("check-invariance", "Hello world", "-m", str(tiny_model_dir), "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert "0 (bit for bit)" in result.stdout and "same 2" in result.stdout
    assert "identical: every logit" in result.stderr
