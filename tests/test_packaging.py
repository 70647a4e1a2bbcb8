"""What pyproject.toml declares: one version, the license file, the supported Pythons."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import udpchat

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later


def project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        table: dict[str, object] = tomllib.load(file)
    return table


def test_the_version_is_written_once_in_the_package() -> None:
    table = project()
    metadata = table["project"]
    assert isinstance(metadata, dict) and "version" not in metadata
    assert metadata["dynamic"] == ["version"]
    assert table["tool"]["setuptools"]["dynamic"]["version"] == {  # type: ignore[index]
        "attr": "udpchat.__version__"
    }
    assert importlib.metadata.version("udpchat") == udpchat.__version__


def test_the_declared_mit_license_ships_as_a_file() -> None:
    metadata = project()["project"]
    assert isinstance(metadata, dict)
    assert metadata["license"] == "MIT" and metadata["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "the udpchat authors" in text


def test_classifiers_name_the_pythons_and_systems_it_runs_on() -> None:
    metadata = project()["project"]
    assert isinstance(metadata, dict)
    classifiers = metadata["classifiers"]
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Operating System :: POSIX" in classifiers
    assert metadata["requires-python"] == ">=3.10"
