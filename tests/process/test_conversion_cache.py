"""The conversion cache across processes: two processes converting one GGUF at once, a broken entry rebuilt, a writer
killed mid-write that leaves no trusted entry, the staging folder of a process that has ended removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmscope.loading import conversion_cache, loader

KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from llmscope.loading import conversion_cache, loader
    real = conversion_cache._fsync_path
    def die(path):  # the files are written, nothing is fsynced or renamed yet: kill -9 here
        os.kill(os.getpid(), signal.SIGKILL)
    conversion_cache._fsync_path = die
    loader.load_model(sys.argv[1], device="cpu")
""")


def test_writer_killed_mid_write_leaves_no_trusted_entry_and_its_staging_is_removed(
        empty_cache: Path, tiny_gguf: Path, cli) -> None:
    env = dict(os.environ, LLMSCOPE_CACHE=str(empty_cache), PYTHONPATH=str(Path(loader.__file__).parents[1]))
    child = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(tiny_gguf)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    folder = empty_cache / "gguf"
    staging = [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert staging and not [p for p in folder.iterdir() if not p.name.startswith(".")]
    leftover = sum(conversion_cache.folder_size(p) for p in staging)
    assert leftover > 0 and conversion_cache.cache_size() >= leftover  # env shows it
    listed = cli("cache", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert listed.json()["entries"] == [] and not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    loaded = loader.load_model(str(tiny_gguf), device="cpu")
    assert loaded.from_cache is False and conversion_cache.verify_entry(loader.gguf_cache_dir(loaded.spec)) is None


def test_a_dead_process_staging_folder_goes_on_the_next_load(tiny_gguf: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.loading import loader

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    loaded = loader.load_model(str(tiny_gguf), device="cpu")  # converts: the entry is whole from here on
    entry = loader.gguf_cache_dir(loaded.spec)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)  # a process id whose process has ended
    leftover = entry.parent / f".tmp-{entry.name}-{dead}-0123abcd"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 4096)
    loader.load_model(str(tiny_gguf), device="cpu")  # a plain load of the valid entry
    assert not leftover.exists()


def test_concurrent_conversions_and_a_broken_cache_entry(quantized_gguf: Path, tmp_path: Path, cli) -> None:
    """Two processes convert the same GGUF (4-bit blocks, packed as the embedded model's are) at once: both succeed
    with the token a run in this process gives, and the entry is whole; a truncated entry is detected and rebuilt
    from the GGUF file."""
    prompt = "The capital of France is"
    copy = tmp_path / "tiny-q4.gguf"
    shutil.copyfile(quantized_gguf, copy)
    expected = cli("generate", "-m", copy, "--no-chat", "-n", "1", "--json", "-q", prompt).json()["token_ids"]
    expected_ids = cli("tokenize", "--ids", "-m", copy, prompt).stdout
    cache = tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1", LLMSCOPE_CACHE=str(cache))
    command = [sys.executable, "-m", "llmscope", "tokenize", "--ids", "-m", str(copy), prompt]
    generate_command = [sys.executable, "-m", "llmscope", "generate", "-m", str(copy), "--no-chat", "-n", "1",
                        "--json", "-q", prompt]
    first = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    second = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    outputs = [first.communicate(timeout=600), second.communicate(timeout=600)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert all(json.loads(out)["token_ids"] == expected for out, _ in outputs)
    entries = [p for p in (cache / "gguf").iterdir() if not p.name.endswith(".tokenizer")]
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp") and entries[0].name.endswith(".packed-auto")
    assert loader.cache_entry_is_whole(entries[0])
    assert not [p for p in (cache / "gguf").iterdir() if p.name.startswith(".tmp")]

    weights = max(entries[0].glob("*.safetensors"), key=lambda path: path.stat().st_size)
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    not_quiet = [arg for arg in generate_command if arg != "-q"]
    rebuilt = subprocess.run(not_quiet, capture_output=True, text=True, env=env, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "is broken" in rebuilt.stderr and "rebuilding it from the GGUF file" in rebuilt.stderr
    assert json.loads(rebuilt.stdout)["token_ids"] == expected
    assert loader.cache_entry_is_whole(entries[0])
    tokens = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert tokens.stdout == expected_ids
