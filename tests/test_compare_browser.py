"""The comparison view in headless Chromium: live app on 127.0.0.1 and the static report."""

from __future__ import annotations

import pytest

from captum_mamba.compare import ComparisonServer, TextModel, compare_text, create_app, write_report
from captum_mamba.default import SAMPLE_SENTENCES
from captum_mamba.default.data import split_rotten_tomatoes

from browser import chromium_driver, console_errors, save_screenshot

METHODS = ["mamba_lrp", "integrated_gradients", "smoothgrad", "input_x_gradient", "saliency", "naive_lrp"]
LONG_METHODS = ["mamba_lrp", "input_x_gradient", "saliency", "naive_lrp"]


@pytest.fixture(scope="module")
def text_model() -> TextModel:
    return TextModel.default(max_tokens=2048)


@pytest.fixture(scope="module")
def examples(text_model):
    explained = [compare_text(text_model, text, METHODS) for text in SAMPLE_SENTENCES[:3]]
    _, test = split_rotten_tomatoes(seed=0, test_fraction=0.1)
    long_text = " ".join(text for text, _ in test[:45])  # about 1,100 tokens
    explained.append(compare_text(text_model, long_text, LONG_METHODS))
    assert len(explained[-1]["tokens"]) > 1000
    return explained


@pytest.fixture(scope="module")
def driver():
    browser = chromium_driver()
    yield browser
    browser.quit()


def _wait_ready(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def _row_token_counts(driver) -> dict[str, int]:
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('tr.method-row')].map("
        "r => [r.dataset.method, r.querySelectorAll('.tok').length]);"
    )
    return dict(pairs)  # in the page's row order


def _select_example(driver, index: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "example-select")).select_by_value(str(index))


def test_live_page_rows_examples_bad_input_and_screenshot(driver, text_model, examples):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = ComparisonServer(create_app(text_model, examples, METHODS)).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        driver.get(server.url)
        _wait_ready(driver)
        for index, example in enumerate(examples):
            _select_example(driver, index)
            counts = _row_token_counts(driver)
            assert list(counts) == [r["name"] for r in example["methods"]]
            assert set(counts.values()) == {len(example["tokens"])}, index
            coloured = driver.execute_script(
                "return [...document.querySelectorAll('tr.method-row .tok')].filter("
                "s => s.style.background && s.style.background !== 'rgb(255, 255, 255)').length"
            )
            assert coloured > 0
            assert driver.find_element(By.ID, "predicted-class").text == example["prediction"]["name"]
            assert len(driver.find_elements(By.CSS_SELECTOR, "#curve-plot polyline")) == 2 * len(example["methods"])
        _select_example(driver, 0)
        save_screenshot(driver, "compare_view.png")
        assert console_errors(driver) == []

        # hiding a method removes its row
        driver.find_element(By.CSS_SELECTOR, "input.method-toggle[value='saliency']").click()
        assert "saliency" not in _row_token_counts(driver)
        driver.find_element(By.CSS_SELECTOR, "input.method-toggle[value='saliency']").click()

        def submit(text: str) -> None:
            box = driver.find_element(By.ID, "text-input")
            box.clear()
            box.send_keys(text)
            driver.find_element(By.ID, "explain-button").click()

        message = driver.find_element(By.ID, "message")
        submit("   ")
        WebDriverWait(driver, 30).until(lambda d: "empty" in message.text)
        submit("good " * 2100)
        WebDriverWait(driver, 60).until(lambda d: "limit of 2048 tokens" in message.text)

        # the server kept serving: a new text is explained and becomes the current example
        submit("a dull , lifeless mess .")
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#example-select option")) == 5)
        assert set(_row_token_counts(driver).values()) == {6}
        assert not message.is_displayed()
        # the only console entries: the browser's own notes on the two refused requests
        errors = console_errors(driver)
        assert len(errors) == 2 and all("api/explain" in e and "400" in e for e in errors), errors
    finally:
        server.stop()


def test_static_report_renders_offline(driver, examples, tmp_path):
    page = write_report(tmp_path / "report.html", examples, METHODS, "default model", 2048)
    driver.get(page.as_uri())
    _wait_ready(driver)
    _select_example(driver, 3)
    assert set(_row_token_counts(driver).values()) == {len(examples[3]["tokens"])}
    assert not driver.find_element("id", "explain-section").is_displayed()  # no server behind a file
    seconds = driver.execute_script(
        "const t = performance.now(); document.getElementById('example-select').dispatchEvent(new Event('change'));"
        "return (performance.now() - t) / 1000;"
    )
    assert seconds < 2.0, f"re-rendering a {len(examples[3]['tokens'])}-token example took {seconds:.2f} s"
    assert console_errors(driver) == []


def test_hybrid_report_shows_the_relevance_split_by_layer_kind(driver, examples, tmp_path):
    from selenium.webdriver.common.by import By

    hybrid = TextModel.default(max_tokens=2048, variant="hybrid")
    explained = [compare_text(hybrid, text, ["mamba_lrp", "mamba_lrp_cp"]) for text in SAMPLE_SENTENCES[:2]]
    page = write_report(
        tmp_path / "hybrid.html", explained + examples[:1], ["mamba_lrp", "mamba_lrp_cp"], hybrid.name, 2048
    )
    driver.get(page.as_uri())
    _wait_ready(driver)
    section = driver.find_element(By.ID, "split-section")
    assert section.is_displayed()
    kinds = driver.execute_script(
        "return [...document.querySelectorAll('#split tr.split-row')].map(r => r.dataset.kind);"
    )
    assert kinds == ["ssm", "mlp", "attention", "mlp", "ssm", "mlp"]
    headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#split thead th")]
    assert "MambaLRP" in headers and "MambaLRP + CP-LRP" in headers
    assert len(driver.find_elements(By.CSS_SELECTOR, "#split tr.kind-total")) == 4  # ssm, mlp, attention, logit
    save_screenshot(driver, "compare_view_hybrid.png")
    _select_example(driver, 2)  # an example of the Mamba model: one layer kind, no table
    assert not section.is_displayed()
    assert console_errors(driver) == []


COPYING_METHODS = ["mamba_lrp", "mamba_lrp_cp", "input_x_gradient", "integrated_gradients"]


@pytest.fixture(scope="module")
def copying():
    from captum_mamba.compare import copying_text_model, copying_texts

    text_model = copying_text_model("copying_qwen3_5", max_tokens=64)
    return text_model, [compare_text(text_model, text, COPYING_METHODS) for text in copying_texts(1, 24)]


def _check_known_truth(driver, example) -> None:
    """The outlined token, the top-1 column and the summary are the payload's, row by row."""
    from selenium.webdriver.common.by import By

    source = example["source"]["position"]
    assert driver.find_element(By.ID, "top1-head").is_displayed()
    assert driver.find_element(By.ID, "source-position").text == f"position {source}"
    found = sum(row["top1_is_source"] for row in example["methods"])
    assert driver.find_element(By.ID, "top1-summary").text == f"{found} of {len(example['methods'])}"
    marks = driver.execute_script(
        "return [...document.querySelectorAll('tr.method-row')].map(r => {"
        "  const toks = [...r.querySelectorAll('.tok')];"
        "  const cell = r.querySelector('td.top1');"
        "  return [r.dataset.method, toks.findIndex(t => t.classList.contains('source')),"
        "          toks.findIndex(t => t.classList.contains('explained')), toks.findIndex(t => t.classList.contains('top1')),"
        "          cell.classList.contains('yes'), cell.textContent];"
        "});"
    )
    assert [mark[0] for mark in marks] == [row["name"] for row in example["methods"]]
    for (_, outlined, explained, top1, yes, text), row in zip(marks, example["methods"]):
        assert outlined == source and explained == example["explained_position"] == len(example["tokens"]) - 1
        assert top1 == row["top1"] and yes == row["top1_is_source"]
        assert text.startswith("✓ yes") if yes else f"position {row['top1']}" in text


def test_copying_report_marks_the_source_and_top1(driver, copying, tmp_path):
    from selenium.webdriver.common.by import By

    text_model, examples = copying
    page = write_report(tmp_path / "copying.html", examples, COPYING_METHODS, text_model.name, 64, text_model.about)
    driver.get(page.as_uri())
    _wait_ready(driver)
    assert "Copying task" in driver.find_element(By.ID, "about").text
    assert driver.find_element(By.ID, "curve-note").is_displayed()  # the explained position is held
    for index, example in enumerate(examples):
        _select_example(driver, index)
        assert driver.find_element(By.ID, "predicted-class").text == example["prediction"]["name"]
        _check_known_truth(driver, example)
    assert driver.find_element(By.ID, "split-section").is_displayed()  # Gated DeltaNet, attention, MLPs
    _select_example(driver, 2)
    save_screenshot(driver, "compare_view_copying.png")
    assert console_errors(driver) == []


def test_copying_live_page_explains_typed_sequences(driver, copying):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text_model, explained = copying
    server = ComparisonServer(create_app(text_model, explained[:1], COPYING_METHODS)).start()
    try:
        driver.get(server.url)
        _wait_ready(driver)
        box = driver.find_element(By.ID, "text-input")
        assert "a copying sequence ending at the output to explain" in box.get_attribute("placeholder")
        _check_known_truth(driver, explained[0])
        message = driver.find_element(By.ID, "message")

        def submit(text: str) -> None:
            box.clear()
            box.send_keys(text)
            driver.find_element(By.ID, "explain-button").click()

        submit("7 3 12 9 _ _ | 5")
        WebDriverWait(driver, 30).until(lambda d: "stands after the delimiter" in message.text)
        submit("7 3 12 9 _ _ _ _ | _ _ _")
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#example-select option")) == 2)
        assert driver.find_element(By.ID, "predicted-class").text == "9"  # the fourth output copies d3 = 9
        assert driver.find_element(By.ID, "source-position").text == "position 3"
        assert set(_row_token_counts(driver).values()) == {12}
        errors = console_errors(driver)
        assert len(errors) == 1 and "api/explain" in errors[0] and "400" in errors[0], errors
    finally:
        server.stop()
