"""The installed command starts fast: `llmscope --help` imports neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys


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
