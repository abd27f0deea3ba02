"""The wheel's metadata, built with the installed setuptools (no network): one version and the license."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import ROOT

import llmscope

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_built_metadata_has_the_one_version_and_the_license(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(ROOT / name, source / name)
    shutil.copytree(ROOT / "llmscope", source / "llmscope", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "meta"
    out.mkdir()
    build = ("import sys, setuptools.build_meta as b; "
             "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = email.message_from_string((out / done.stdout.strip().splitlines()[-1] / "METADATA").read_text())
    assert metadata["Version"] == llmscope.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "Topic :: Scientific/Engineering :: Artificial Intelligence" in metadata.get_all("Classifier")
