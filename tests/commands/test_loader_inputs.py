"""What the loader says about bad model inputs: a folder without a tokenizer, a malicious pickle, an unreachable
hub, empty specs, symlink loops and local paths that look like hub ids (issue 13 items 17, 21, 22, 23)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmscope.core.errors import ModelLoadError, UsageError
from llmscope.loading import loader

USAGE, RUNTIME = 2, 1


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["generate", "next-token", "tokenize", "bench-cache"])
def test_folder_with_only_a_config_says_what_is_missing(cli, tiny_model_dir: Path, tmp_path: Path,
                                                        command: str) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copyfile(tiny_model_dir / "config.json", folder / "config.json")
    result = cli(command, "hi", "-m", folder)
    assert result.exit_code == RUNTIME
    line = one_error_line(result)
    assert "has no tokenizer" in line and "tokenizer.json" in line and "`architecture` works" in line
    assert not line.rstrip().endswith(":")
    assert cli("architecture", "-m", folder, "--json").exit_code == 0


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-should-never-run",))


def test_malicious_pickle_names_the_blocked_global_and_never_suggests_unsafe_loading(
        cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _RunsCode()}, folder / "pytorch_model.bin", pickle_module=pickle)
    result = cli("next-token", "hi", "-m", folder)
    assert result.exit_code == RUNTIME
    line = one_error_line(result)
    assert "refused" in line and "system" in line  # the unsupported global: posix.system / os.system
    assert "weights_only` set to `False" not in result.stderr and "will likely succeed" not in result.stderr
    assert "this-should-never-run" not in result.stdout + result.stderr


def test_unreachable_hub_fails_fast_in_one_line(tmp_path: Path) -> None:
    """A closed port stands in for an unreachable network: no retry chatter, the real cause named."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9",
               PYTHONPATH=str(Path(loader.__file__).parents[1]))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "llmscope", "next-token", "hi", "-m", "someorg/somemodel"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == RUNTIME
    assert "Retrying" not in result.stderr and "thrown while requesting" not in result.stderr
    line = one_error_line(result)
    assert "not in the local Hugging Face cache" in line and "unreachable (127.0.0.1:9" in line


def test_empty_specs_name_what_was_empty(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("tokenize", "hi", "-m", "")
    assert result.exit_code == USAGE and "--model is empty" in one_error_line(result)
    monkeypatch.setenv("LLMSCOPE_MODEL", "   ")
    with pytest.raises(UsageError, match="LLMSCOPE_MODEL is set but empty"):
        loader.resolve_model_spec(None)


def test_paths_are_not_taken_for_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         tiny_model_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    os.symlink("loop-b", "loop-a")
    os.symlink("loop-a", "loop-b")
    with pytest.raises(ModelLoadError, match="broken symbolic link"):
        loader.resolve_model_spec("loop-a")
    Path("models").mkdir()
    with pytest.raises(ModelLoadError, match="no such model folder"):
        loader.resolve_model_spec("models/missing")  # `models` is here: a path, not a hub id
    shutil.copytree(tiny_model_dir, tmp_path / "org" / "name")
    spec = loader.resolve_model_spec("org/name")  # an existing relative folder wins over the hub
    assert spec.kind == "folder" and spec.location == str((tmp_path / "org" / "name").resolve())
    assert loader.resolve_model_spec("Qwen/Qwen2.5-0.5B").kind == "hub"
    assert loader.resolve_model_spec("gpt2").kind == "hub"
    with pytest.raises(ModelLoadError, match="no such model folder"):
        loader.resolve_model_spec("not a model id")
