"""A skipped test must not turn a CI run green: under ``CI`` a missing browser fails the test."""

from pathlib import Path

import pytest

from .conftest import running_in_ci, skip_unless_ci


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_a_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert running_in_ci()
    with pytest.raises(pytest.fail.Exception, match=r"chromium is missing .*CI is set"):
        skip_unless_ci("chromium is missing")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_browser_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not running_in_ci()
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        skip_unless_ci("chromium is missing")


def test_the_makefile_reports_skip_reasons() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    (pytest_call,) = [line for line in makefile.splitlines() if "-m pytest" in line]
    assert " -rs" in pytest_call, pytest_call
