"""`llmscope architecture` on hybrid and state-space families in process: the state shown next to the KV cache, and
the KV table at the context asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.architectures import HYBRIDS

from llmscope.architecture.describe import describe_config_model
from llmscope.architecture.kvcache import cache_size
from llmscope.architecture.planner import PlannerSettings
from llmscope.render.display import human_bytes


def family_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(name, **HYBRIDS[name])


def test_cli_shows_the_state(cli, hybrid_dirs: dict[str, Path]) -> None:
    shown = cli("architecture", "-m", hybrid_dirs["bamba"], "-q", env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.stderr
    kv_table = shown.stdout[shown.stdout.index("KV cache ("):shown.stdout.index("Memory plan")]
    # conv (64 + 2 x 16 channels x 4) + SSM (4 x 16 x 16) in float32 (the config states no dtype)
    assert f"fixed {human_bytes((96 * 4 + 4 * 16 * 16) * 4)} of state" in " ".join(kv_table.split())
    assert "state" in shown.stdout[shown.stdout.index("Memory plan"):]


def test_kv_table_shows_the_context_asked_for(hybrid_dirs: dict[str, Path], cli) -> None:
    asked = describe_config_model(str(hybrid_dirs["smollm3"]), plan=PlannerSettings(context=100))
    assert [point.tokens for point in asked.kv_cache.points] == [100]
    assert asked.kv_cache.points[0].bytes == cache_size(family_config("smollm3"), 100, 1, "float32").total_bytes
    longer = describe_config_model(str(hybrid_dirs["smollm3"]), plan=PlannerSettings(context=2048))
    assert [point.tokens for point in longer.kv_cache.points] == [1024, 2048]
    shown = cli("architecture", "-m", hybrid_dirs["smollm3"], "--context", "100", "-q").stdout
    rows = [line.split()[0] for line in shown[shown.index("KV cache ("):shown.index("Memory plan")].splitlines()
            if line.strip()[:1].isdigit()]
    assert rows == ["100"]
    past = cli("architecture", "-m", hybrid_dirs["smollm3"], "--context", "2k", "-q").stdout
    kv_table = past[past.index("KV cache ("):past.index("Memory plan")]
    assert "2,048*" in kv_table and "* past the model's context of 128 tokens" in kv_table
