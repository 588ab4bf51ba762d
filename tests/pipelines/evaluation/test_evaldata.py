"""`$EVALDATA`: where benchmark scripts find public evaluation data, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from kag.errors import EvaluationError
from pipelines.evaluation.datasets import evaldata


def test_evaldata_resolves_under_the_environment_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVALDATA", str(tmp_path))
    assert evaldata("scifact") == tmp_path / "scifact"


def test_evaldata_unset_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALDATA", raising=False)
    with pytest.raises(EvaluationError, match="no evaluation data folder for 'scifact'") as raised:
        evaldata("scifact")
    assert "set EVALDATA" in (raised.value.hint or "")
