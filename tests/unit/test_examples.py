"""The committed k8s/examples/ is exactly what the renderer produces for the example catalog.

When this fails after an intended renderer change, regenerate with
``llm-platform render --catalog catalog/models.yaml --out k8s/examples`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_platform.cli import main
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "k8s" / "examples"


def test_examples_match_the_renderer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    assert main(["render", "--catalog", "catalog/models.yaml", "--out", str(tmp_path)]) == 0
    rendered = {path.name: path.read_text() for path in tmp_path.iterdir()}
    committed = {path.name: path.read_text() for path in EXAMPLES.iterdir() if path.suffix == ".yaml"}
    assert sorted(rendered) == sorted(committed)
    for name, text in rendered.items():
        assert text == committed[name], f"k8s/examples/{name} drifted from the renderer; regenerate it"


@pytest.mark.parametrize("catalog", sorted((REPO_ROOT / "catalog" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_catalogs_validate(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalogs the docs tell a user to try are valid, with every object they render."""
    monkeypatch.chdir(REPO_ROOT)
    assert main(["validate", "--catalog", str(catalog)]) == 0
