"""Packaging metadata (issue 13 item 25): the build floor the SPDX license string needs, the LICENSE file, one
version, classifiers; checked by building the wheel metadata with the installed setuptools (no network)."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import ROOT

import llmscope

tomllib = pytest.importorskip("tomllib")  # Python 3.11+



def test_pyproject_declares_what_the_license_string_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = re.search(r"setuptools>=(\d+)", " ".join(project["build-system"]["requires"]))
    assert floor and int(floor.group(1)) >= 77  # PEP 639 license expressions arrived in setuptools 77
    assert project["project"]["license"] == "Apache-2.0" and project["project"]["license-files"] == ["LICENSE"]
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "llmscope.__version__"}
    assert not [c for c in project["project"]["classifiers"] if c.startswith("License ::")]  # PEP 639 forbids
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


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
