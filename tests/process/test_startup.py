"""The real entry point starts light: `llmscope --help` and refused options import neither torch nor transformers,
the installed script and `python -m llmscope` run, importing llmscope makes torch's threads wait passively."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.paths import ROOT


@pytest.mark.parametrize("args", [["--keys", ","], ["--plot", "out.txt"], ["--max-weights", "0"]])
def test_bad_options_are_refused_without_importing_torch(args: list[str]) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    print('EXIT', exit.code, [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, "attention", "Hello", *args], capture_output=True, text=True)
    assert "EXIT 2 []" in result.stdout, (result.stdout, result.stderr)


def test_layer_and_head_are_checked_from_config_json_without_transformers(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    import subprocess
    import sys

    from llmscope.attention.pick import counts_from_config_file

    assert counts_from_config_file(tiny_model_dir / "config.json") == (2, 4)
    assert counts_from_config_file(tmp_path / "missing.json") is None
    (tmp_path / "odd.json").write_text('{"model_type": "llama"}')
    assert counts_from_config_file(tmp_path / "odd.json") is None  # then transformers reads the config
    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    print('EXIT', exit.code, [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, "attention", "Hello", "-m", str(tiny_model_dir), "--layer",
                             "5"], capture_output=True, text=True)
    assert "EXIT 2 []" in result.stdout and "--layer 5 is past the model's 2 layers" in result.stderr, result


def test_importing_llmscope_makes_torch_threads_wait_passively_unless_told_otherwise() -> None:
    """Spinning OpenMP threads collapse decode on a busy machine; a user's own OMP_WAIT_POLICY is kept."""
    code = "import os, llmscope; print(os.environ['OMP_WAIT_POLICY'])"
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "PASSIVE"
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "ACTIVE"


def test_a_bad_value_costs_no_torch_import() -> None:
    code = ("import sys\nfrom llmscope.entry import main\n"
            "try:\n    main(['generate', 'hi', '--temperature', 'nan'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert time.perf_counter() - started < 30  # a loose bound: the point is that no model or torch was loaded


def test_help_does_not_import_torch() -> None:
    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout
    for command in ("generate", "tokenize"):
        assert command in result.stdout


def test_installed_entry_point_and_module() -> None:
    import shutil

    exe = shutil.which("llmscope") or str(__import__("pathlib").Path(sys.executable).parent / "llmscope")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("llmscope ")
    module = subprocess.run([sys.executable, "-m", "llmscope", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "tokenize" in module.stdout
