"""The conversion cache across processes: a writer killed mid-write leaves no trusted entry, and the staging
folder of a process that has ended goes on the next load."""

from __future__ import annotations

import os
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

