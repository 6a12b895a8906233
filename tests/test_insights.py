"""MambaLRP in Captum Insights (captum 0.8.x in .venv-insights) and the error under captum 0.9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from captum_mamba.default import SAMPLE_LABELS, SAMPLE_SENTENCES, load_default_classifier
from captum_mamba.evaluation.methods import token_attributions

from browser import REQUIRED, chromium_driver, console_errors, save_screenshot

ROOT = Path(__file__).resolve().parents[1]
INSIGHTS_PYTHON = Path(os.environ.get("CAPTUM_MAMBA_INSIGHTS_PYTHON", ROOT / ".venv-insights" / "bin" / "python"))


def _captum_has_insights() -> bool:
    try:
        import captum.insights  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_captum_has_insights(), reason="this environment's captum still ships Insights")
def test_without_insights_the_error_points_to_the_comparison_view():
    from captum_mamba.insights import InsightsUnavailableError, default_visualizer, register_mamba_lrp

    for call in (register_mamba_lrp, default_visualizer):
        with pytest.raises(InsightsUnavailableError, match=r"removed captum.insights.*captum-mamba compare"):
            call()
    run = subprocess.run(
        [sys.executable, "-m", "captum_mamba.cli", "insights"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 2 and "error: " in run.stderr and "captum-mamba compare" in run.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def insights_server():
    if not INSIGHTS_PYTHON.exists():
        message = f"no captum 0.8 environment at {INSIGHTS_PYTHON} (scripts/insights_env.sh makes it)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [str(INSIGHTS_PYTHON), "-m", "captum_mamba.cli", "insights", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"the Insights server stopped: {server.stdout.read()}")
            try:
                _get(url + "init")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Insights server did not answer within 120 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _expected_insights_scores(method: str) -> dict[tuple[str, ...], list[float]]:
    """What Insights shows: token scores scaled to 100 at the largest |score|, computed here (captum 0.9)."""
    model, tokenizer = load_default_classifier()
    expected = {}
    for text, label in zip(SAMPLE_SENTENCES, SAMPLE_LABELS):
        if label is None:
            continue
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            predicted = int(model(input_ids=ids).logits.argmax())
        scores = token_attributions(method, model, ids, predicted)[0]
        expected[tuple(text.split())] = (scores / scores.abs().max() * 100).tolist()
    return expected


def test_insights_lists_mamba_lrp_and_fetches_its_attributions(insights_server):
    config = _get(insights_server + "init")
    assert "MambaLRP" in config["methods"] and "Integrated Gradients" in config["methods"]
    assert config["method_arguments"]["MambaLRP"]["rule_set"]["value"] == "all rules"
    for rule_set, method in (("all rules", "mamba_lrp"), ("naive LRP (norm rule only)", "naive_lrp")):
        outputs = _get(
            insights_server + "fetch",
            {"attribution_method": "MambaLRP", "arguments": {"rule_set": rule_set}, "prediction": "all", "classes": []},
        )
        assert len(outputs) == 4  # Insights shows four examples, cycling through the three labelled samples
        expected = _expected_insights_scores(method)
        shown = set()
        for output in outputs:
            feature = output[0]["feature_outputs"][0]  # one output per model
            tokens = tuple(feature["base"])
            assert feature["modified"] == pytest.approx(expected[tokens], abs=1e-3)
            shown.add(tokens)
        assert len(shown) == 3  # Insights cycles through the dataset's examples


def test_insights_page_renders_with_mamba_lrp(insights_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        driver.get(insights_server)
        WebDriverWait(driver, 60).until(lambda d: d.title == "Captum Insights")
        WebDriverWait(driver, 60).until(
            lambda d: "MambaLRP" in [o.text for o in d.find_elements(By.CSS_SELECTOR, "select option")]
        )
        select = next(
            s
            for s in driver.find_elements(By.CSS_SELECTOR, "select")
            if "MambaLRP" in [o.text for o in s.find_elements(By.TAG_NAME, "option")]
        )
        from selenium.webdriver.support.ui import Select

        Select(select).select_by_visible_text("MambaLRP")
        fetch = next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().lower() == "fetch")
        fetch.click()
        WebDriverWait(driver, 120).until(lambda d: "gorgeous" in d.find_element(By.TAG_NAME, "body").text)
        save_screenshot(driver, "insights_mamba_lrp.png")
        assert console_errors(driver) == []
    finally:
        driver.quit()
