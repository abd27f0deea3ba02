"""patch on the embedded SmolLM2: the Eiffel Tower restoration peaks at the subject, then at the last token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmscope.patching.settings import PatchSettings

EIFFEL = "The Eiffel Tower is in the city of"


COLOSSEUM = "The Colosseum is in the city of"


@pytest.mark.slow
def test_eiffel_tower_restoration_peaks_at_the_subject_then_at_the_last_token(embedded_model: Any) -> None:
    from llmscope.patching.patcher import patch

    result = patch(embedded_model, EIFFEL, COLOSSEUM, PatchSettings(sites=("resid",)))
    assert (result.answer.text, result.foil.text) == (" Paris", " Rome")
    assert result.clean.answer_probability == pytest.approx(0.6562, abs=1e-3)
    assert result.corrupt.foil_probability == pytest.approx(0.8485, abs=1e-3)
    grid = result.grids[0]
    assert [c.label for c in grid.columns] == ["The", " E", "iffel", " Tower", " is", " in", " the", " city", " of"]
    assert grid.values[-1][-1] == pytest.approx(1.0, abs=1e-5)
    early = [max(range(9), key=lambda j: row[j]) for row in grid.values[:20]]
    late = [max(range(9), key=lambda j: row[j]) for row in grid.values[24:]]
    assert set(early) == {2} and set(late) == {8}  # "iffel" until layer 22, " of" from layer 23 on
    assert max(grid.values[3]) > 0.95


@pytest.mark.slow
def test_eiffel_tower_table_json_and_plot_agree_on_packed_weights(cli: Any, tmp_path: Path) -> None:
    plot = tmp_path / "eiffel.svg"
    args = ["patch", EIFFEL, "--corrupt", COLOSSEUM, "--layers", "20:30", "--site", "resid,attn"]
    result = cli(*args, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["model_info"]["quantize"] == "auto"
    assert (document["answer"]["text"], document["foil"]["text"]) == (" Paris", " Rome")
    resid = document["grids"][0]
    assert resid["layers"] == list(range(20, 30)) and resid["values"][-1][-1] == pytest.approx(1.0, abs=1e-5)
    table = cli(*args, "--plot", plot, env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert table.exit_code == 0 and "<svg" in plot.read_text()[:400]
    rows = [line.split() for line in table.stdout.splitlines() if re.match(r"^\s+\d+\s+-?\d", line)]
    assert [[float(x) for x in row[1:]] for row in rows[:10]] == [[round(v, 2) + 0.0 for v in row]
                                                                    for row in resid["values"]]
    assert f"layer {resid['strongest'][0]['layer']} position 8" in table.stdout
