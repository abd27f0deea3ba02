"""attribute through a pipe in a real process: plain text and no progress bar while a first load converts the GGUF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROMPT = "The capital of France is"


def test_through_a_pipe_attribute_prints_plain_text_and_no_progress_bar(tiny_gguf: Path, tmp_path: Path) -> None:
    """A first --quantize none load converts the GGUF (transformers' bar wrote "\\r"-joined frames into the pipe);
    the people view printed the prompt once per method as lines that only colour gave meaning to."""
    env = dict(os.environ, LLMSCOPE_CACHE=str(tmp_path / "fresh-cache"), LLMSCOPE_MODEL="")
    env.pop("TQDM_DISABLE", None)
    run = subprocess.run([sys.executable, "-m", "llmscope", "attribute", PROMPT, "-m", str(tiny_gguf),
                          "--quantize", "none", "--method", "ig,occlusion", "--steps", "8"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "converted from GGUF and cached" in run.stderr  # the conversion did run
    assert "\r" not in run.stderr and "it/s" not in run.stderr and "%|" not in run.stderr
    assert "\x1b[" not in run.stdout  # no colour codes into a pipe
    lines = run.stdout.splitlines()
    assert not any(line.rstrip().endswith(PROMPT) for line in lines), run.stdout  # no colour-only prompt lines
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) >= 5 and all(len(row) >= 3 for row in rows[:5])  # the table carries the figures
