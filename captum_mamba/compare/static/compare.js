"use strict";
(function () {
  const data = JSON.parse(document.getElementById("comparison-data").textContent);
  const palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354"];
  const state = { index: 0, visible: new Set(data.selected_methods) };
  const $ = (id) => document.getElementById(id);

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function colour(value, scale) {
    const strength = Math.max(-1, Math.min(1, value / scale));
    const fade = Math.round(255 * (1 - Math.abs(strength)));
    const text = strength < -0.6 ? ";color:#fff" : "";
    return (strength >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`) + text;
  }

  function format(value, digits) {
    return value === null || value === undefined ? "&ndash;" : (value >= 0 ? "+" : "") + value.toFixed(digits);
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = kind || "";
    box.style.display = text ? "block" : "none";
  }

  function shorten(text) {
    // the middle goes: a copying sequence ends at the explained output
    return text.length > 70 ? text.slice(0, 40) + " ... " + text.slice(-25) : text;
  }

  function methodColour(name) {
    const index = data.catalogue.findIndex((m) => m.name === name);
    return palette[(index < 0 ? 0 : index) % palette.length];
  }

  function renderControls() {
    const select = $("example-select");
    select.innerHTML = data.examples
      .map((e, i) => `<option value="${i}">${i + 1}. ${escapeHtml(shorten(e.text))}</option>`)
      .join("");
    select.value = String(state.index);
    $("method-toggles").innerHTML = data.catalogue
      .map(
        (m) =>
          `<label title="${escapeHtml(m.description)}"><input type="checkbox" class="method-toggle" value="${m.name}"${
            state.visible.has(m.name) ? " checked" : ""
          }> <span class="swatch" style="background:${methodColour(m.name)}"></span>${escapeHtml(m.label)}</label>`
      )
      .join("");
  }

  function top1Cell(row, example) {
    if (!example.source) return "";
    if (row.top1 === null || row.top1 === undefined) return `<td class="top1">&ndash;</td>`;
    if (row.top1_is_source) return `<td class="top1 yes" data-top1="${row.top1}">&#10003; yes</td>`;
    return `<td class="top1 no" data-top1="${row.top1}" title="its top-1 token is at position ${row.top1}">&#10007; no (position ${row.top1}: ${escapeHtml(
      example.tokens[row.top1]
    )})</td>`;
  }

  function tokenClass(i, row, example) {
    let name = "tok";
    if (example.source && i === example.source.position) name += " source";
    if (i === example.explained_position) name += " explained";
    if (example.source && i === row.top1) name += " top1";
    return name;
  }

  function tokenTitle(i, row, example) {
    let title = row.scores[i].toPrecision(4) + ` (position ${i})`;
    if (example.source && i === example.source.position) title += ", the known source";
    if (i === example.explained_position) title += ", the explained position";
    if (example.source && i === row.top1) title += ", this method's top-1";
    return title;
  }

  function renderRow(row, example) {
    const tokens = example.tokens;
    if (row.error) {
      return `<tr class="method-row" data-method="${row.name}"><td class="method">${escapeHtml(row.label)}</td><td class="tokens row-error">${escapeHtml(
        row.error
      )}</td>${top1Cell(row, example)}<td class="num">&ndash;</td><td class="num">&ndash;</td><td class="num">&ndash;</td></tr>`;
    }
    const scale = Math.max(1e-12, ...row.scores.map(Math.abs));
    const spans = tokens
      .map(
        (t, i) =>
          `<span class="${tokenClass(i, row, example)}" style="background:${colour(row.scores[i], scale)}" title="${tokenTitle(i, row, example)}">${escapeHtml(t)}</span>`
      )
      .join(" "); // the spaces let long texts wrap
    const runtime = row.seconds < 1 ? `${(row.seconds * 1000).toFixed(1)} ms` : `${row.seconds.toFixed(2)} s`;
    return (
      `<tr class="method-row" data-method="${row.name}"><td class="method" title="${escapeHtml(row.description)}">` +
      `<span class="swatch" style="background:${methodColour(row.name)}"></span>${escapeHtml(row.label)}</td>` +
      `<td class="tokens">${spans}</td>${top1Cell(row, example)}<td class="num delta">${format(row.delta, 4)}</td>` +
      `<td class="num runtime">${runtime}</td><td class="num faithfulness">${format(row.delta_af, 3)}</td></tr>`
    );
  }

  function renderCurves(rows) {
    const width = 640, height = 260, left = 48, right = 12, top = 10, bottom = 32;
    const drawn = rows.filter((r) => !r.error && r.morf.length);
    if (!drawn.length) {
      $("curve-plot").innerHTML = "<p>No curves for the chosen methods.</p>";
      $("legend").innerHTML = "";
      return;
    }
    const values = drawn.flatMap((r) => r.morf.concat(r.lerf));
    let low = Math.min(...values), high = Math.max(...values);
    if (high - low < 1e-9) { low -= 1; high += 1; }
    const x = (f) => left + f * (width - left - right);
    const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
    const line = (r, curve, dash) =>
      `<polyline fill="none" stroke="${methodColour(r.name)}" stroke-width="2"${dash ? ' stroke-dasharray="6 4"' : ""} points="${r.fractions
        .map((f, i) => `${x(f).toFixed(1)},${y(curve[i]).toFixed(1)}`)
        .join(" ")}"><title>${escapeHtml(r.label)} ${dash ? "LeRF" : "MoRF"}</title></polyline>`;
    const ticks = [0, 0.25, 0.5, 0.75, 1]
      .map((f) => `<text x="${x(f)}" y="${height - 12}" font-size="11" text-anchor="middle">${f}</text>`)
      .join("");
    const yTicks = [low, (low + high) / 2, high]
      .map((v) => `<text x="${left - 4}" y="${y(v) + 4}" font-size="11" text-anchor="end">${v.toFixed(2)}</text>`)
      .join("");
    $("curve-plot").innerHTML =
      `<svg width="${width}" height="${height}" role="img" aria-label="perturbation curves">` +
      `<line x1="${left}" y1="${height - bottom}" x2="${width - right}" y2="${height - bottom}" stroke="#999"/>` +
      `<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#999"/>${ticks}${yTicks}` +
      `<text x="${(left + width) / 2}" y="${height - 1}" font-size="11" text-anchor="middle">fraction of tokens replaced</text>` +
      drawn.map((r) => line(r, r.morf, false) + line(r, r.lerf, true)).join("") +
      `</svg>`;
    $("legend").innerHTML = drawn
      .map((r) => `<span><span class="swatch" style="background:${methodColour(r.name)}"></span>${escapeHtml(r.label)} (&Delta;A<sup>F</sup> ${format(r.delta_af, 3)})</span>`)
      .join("");
  }

  function renderSplit(split) {
    const section = $("split-section");
    if (!split) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const methods = split.methods;
    const share = (value) => (Math.abs(split.logit) > 1e-12 ? `${((100 * value) / split.logit).toFixed(1)}%` : "&ndash;");
    $("split").querySelector("thead").innerHTML =
      `<tr><th>layer</th><th>kind</th><th>module</th>` +
      methods.map((m) => `<th class="num">${escapeHtml(m.label)}</th><th class="num">share of logit</th>`).join("") +
      `</tr>`;
    if (split.error) {
      $("split").querySelector("tbody").innerHTML = `<tr><td colspan="${3 + 2 * methods.length}" class="row-error">${escapeHtml(split.error)}</td></tr>`;
      return;
    }
    const cells = (relevance) =>
      methods.map((m) => `<td class="num">${format(relevance[m.name], 4)}</td><td class="num">${share(relevance[m.name])}</td>`).join("");
    const rows = split.rows.map(
      (r) =>
        `<tr class="split-row" data-kind="${escapeHtml(r.kind)}"><td class="num">${r.layer === null ? "&ndash;" : r.layer}</td>` +
        `<td>${escapeHtml(r.kind)}</td><td><code>${escapeHtml(r.module)}</code></td>${cells(r.relevance)}</tr>`
    );
    const totals = split.kinds.map(
      (k) => `<tr class="kind-total" data-kind="${escapeHtml(k.kind)}"><td></td><td>${escapeHtml(k.kind)}</td><td>all ${escapeHtml(k.kind)} layers</td>${cells(k.relevance)}</tr>`
    );
    const logit = `<tr class="kind-total"><td></td><td>logit</td><td>the explained logit</td>${methods
      .map(() => `<td class="num">${format(split.logit, 4)}</td><td class="num">100%</td>`)
      .join("")}</tr>`;
    $("split").querySelector("tbody").innerHTML = rows.concat(totals, [logit]).join("");
  }

  function renderExample() {
    const example = data.examples[state.index];
    if (!example) {
      $("prediction").textContent = "No examples yet.";
      document.querySelector("#rows tbody").innerHTML = "";
      renderSplit(null);
      renderCurves([]);
      return;
    }
    const prediction = example.prediction;
    const source = example.source;
    let verdict = "";
    if (example.label !== null && example.label !== undefined) {
      const ok = example.label === prediction.name;
      verdict = ` &middot; ${source ? "expected" : "label"}: <span class="${ok ? "correct" : "wrong"}">${escapeHtml(example.label)}</span>`;
    }
    const lm = example.explained_position !== null && example.explained_position !== undefined;
    const explained = lm
      ? `explaining the predicted next token at the last position (${example.explained_position})`
      : "explaining the predicted class";
    const rows = example.methods.filter((r) => state.visible.has(r.name));
    let truth = "";
    if (source) {
      const judged = rows.filter((r) => r.top1_is_source !== null && r.top1_is_source !== undefined);
      const found = judged.filter((r) => r.top1_is_source).length;
      truth =
        `<br>Known source: <strong id="source-position">position ${source.position}</strong> (token ${escapeHtml(source.token)}, outlined) ` +
        `&middot; top-1 = source for <strong id="top1-summary">${found} of ${judged.length}</strong> methods ` +
        `<span class="source-note">(underlined: each method's top-1${lm ? "; dashed: the explained position" : ""})</span>`;
    }
    $("prediction").innerHTML =
      `Prediction: <strong id="predicted-class">${escapeHtml(prediction.name)}</strong> (p = ${prediction.probability.toFixed(3)}, logit ${format(prediction.logit, 3)})` +
      `${verdict} &middot; ${example.tokens.length} tokens &middot; ${explained}${truth}`;
    $("top1-head").hidden = !source;
    $("curve-note").hidden = !lm;
    document.querySelector("#rows tbody").innerHTML = rows.map((r) => renderRow(r, example)).join("");
    renderSplit(example.relevance_split);
    renderCurves(rows);
  }

  async function explain(event) {
    event.preventDefault();
    const text = $("text-input").value;
    const methods = data.catalogue.map((m) => m.name).filter((n) => state.visible.has(n));
    const button = $("explain-button");
    button.disabled = true;
    showMessage("Explaining...", "info");
    try {
      const response = await fetch("api/explain", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: text, methods: methods }),
      });
      const body = await response.json();
      if (!response.ok) {
        showMessage(body.error || `the server answered ${response.status}`);
        return;
      }
      data.examples.push(body);
      state.index = data.examples.length - 1;
      showMessage("");
      renderControls();
      renderExample();
    } catch (error) {
      showMessage(`the server could not be reached: ${error}`);
    } finally {
      button.disabled = false;
    }
  }

  if (data.about) {
    $("about").textContent = data.about;
    $("about").hidden = false;
  }
  if (data.input_hint) $("text-input").placeholder = `type ${data.input_hint}`;
  $("model-name").textContent = `${data.model_name} · ${data.examples.length} example(s) · inputs up to ${data.max_tokens} tokens`;
  $("example-select").addEventListener("change", (e) => {
    state.index = Number(e.target.value);
    renderExample();
  });
  $("method-toggles").addEventListener("change", (e) => {
    if (!e.target.classList.contains("method-toggle")) return;
    if (e.target.checked) state.visible.add(e.target.value);
    else state.visible.delete(e.target.value);
    renderExample();
  });
  if (data.live) {
    $("explain-section").hidden = false;
    $("explain-form").addEventListener("submit", explain);
  }
  renderControls();
  renderExample();
  document.body.dataset.ready = "true";
})();
