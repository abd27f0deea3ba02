"""pyproject.toml declares what the SPDX license string needs: the setuptools floor, one dynamic version, no
license classifier, the LICENSE file."""

from __future__ import annotations

import re

import pytest
from helpers.paths import ROOT

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
