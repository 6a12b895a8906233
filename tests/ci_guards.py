"""In CI (``CI=true``) a skipped test is a failure, except a CUDA test (``@pytest.mark.gpu``).

A skip hides a test that did not run; on a developer machine that may be expected (no browser,
no docs extra), in CI it means the environment lacks something the suite needs. This plugin
turns every skip of a test without the ``gpu`` mark into a failure when the environment variable
``CI`` is ``true`` (or ``1`` / ``yes``), at setup, call or teardown, and a module skipped while it
is collected into a collection error. Expected failures (``xfail``) are left alone.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["ci_guards"]``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

GPU_MARK = "gpu"
"""Tests with this mark may still skip in CI (CI machines have no CUDA device)."""


def in_ci() -> bool:
    """Whether the environment says this is a CI run (``CI=true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The skip message pytest recorded (its ``longrepr`` is ``(path, line, message)`` for skips)."""
    longrepr: Any = report.longrepr
    message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return message.removeprefix("Skipped: ")


def _fail(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    report.longrepr = (
        f"{what} skipped in CI (CI={os.environ.get('CI')}), where only @pytest.mark.{GPU_MARK} tests may skip: "
        f"{_reason(report)}"
    )
    report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A skipped non-gpu test fails in CI."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker(GPU_MARK) is not None:
        return
    _fail(report, f"{item.nodeid} was")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A module skipped at collection (``pytest.skip(allow_module_level=True)``, ``importorskip``) fails in CI."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and in_ci():
        _fail(report, f"{collector.nodeid or collector.name} was")
