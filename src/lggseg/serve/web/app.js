// lggseg web page: upload scans to /api/v1/segment (or run the bundled sample), then browse each case.
// The canvas viewer itself is in viewer.js.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const IGNORED = /(^\.|\.(csv|md|txt|tsv|json)$|^readme)/i;
  const OPPOSITE = { L: "R", R: "L", A: "P", P: "A", S: "I", I: "S" };
  const KINDS = { slice: "one slice", slices: "slices of one patient", patient: "patient folder", nifti: "NIfTI volume" };
  const V = window.LggsegViewer;
  const state = {
    result: null, caseIndex: 0, slice: 0, busy: false, limits: null, timer: null,
    preset: "full", token: 0, spacing: {}, stripPlaced: false,
  };
  let viewer = null;

  const fmt = (n) => Number(n).toLocaleString("en-US");
  const png = (b64) => "data:image/png;base64," + b64;
  const el = (tag, props = {}, children = []) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  // ------------------------------------------------------------------ server status

  async function loadHealth() {
    const pill = $("model-status");
    try {
      const health = await (await fetch("/healthz")).json();
      state.limits = health.limits;
      const widths = (health.model.members || []).map((m) => `f${m.config.base_width}`);
      const model = widths.length > 1 ? `ensemble of ${widths.length} U-Nets (${widths.join(", ")})` : `U-Net ${widths[0] ?? "?"}`;
      pill.dataset.state = health.ready ? "ready" : "loading";
      pill.textContent = `model ready · ${model} · ${health.runtime}`;
      $("model-sha").textContent = health.model.sha256.slice(0, 12);
      $("model-sha").title = "SHA-256 " + health.model.sha256;
      const side = health.limits.max_image_side;
      $("limits").textContent = `Up to ${fmt(health.limits.max_upload_bytes / 1048576)} MB per upload · slices up to ${side}×${side} pixels · files stay on this computer`;
    } catch (err) {
      pill.dataset.state = "down";
      pill.textContent = "server not reachable";
    }
  }

  // ------------------------------------------------------------------ messages and progress

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  function showWarnings(list) {
    $("warnings").replaceChildren(...list.map((text) => el("li", { textContent: text })));
    $("warnings").hidden = list.length === 0;
  }

  function showSkipped(list) {
    $("skipped").replaceChildren(...list.map((item) => el("li", { textContent: item.detail })));
    $("skipped-title").textContent = `${list.length} file${list.length === 1 ? " was" : "s were"} skipped; the others were segmented`;
    $("skipped-box").hidden = list.length === 0;
  }

  /** Forget the shown result (after an error, nothing stale stays on screen). */
  function clearResult() {
    state.result = null;
    state.token++;
    $("results").hidden = true;
    $("drop").classList.remove("compact");
    showWarnings([]);
    showSkipped([]);
  }

  function setProgress(text, percent) {
    const box = $("progress");
    box.hidden = text === null;
    if (text === null) return;
    $("progress-text").textContent = text;
    box.classList.toggle("busy", percent === null);
    $("progress-pct").textContent = percent === null ? "" : `${Math.round(percent)}%`;
    $("progress-bar").style.width = percent === null ? "" : `${percent}%`;
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  // ------------------------------------------------------------------ choosing files, talking to the server

  async function filesFromDrop(transfer) {
    const entries = Array.from(transfer.items || [])
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter(Boolean);
    if (!entries.length || entries.every((e) => e.isFile)) return Array.from(transfer.files);
    const files = [];
    const walk = async (entry) => {
      if (entry.isFile) {
        if (!IGNORED.test(entry.name)) files.push(await new Promise((ok, fail) => entry.file(ok, fail)));
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
          if (!batch.length) break;
          for (const child of batch) await walk(child);
        }
      }
    };
    for (const entry of entries) await walk(entry);
    return files;
  }

  function start(files) {
    if (state.busy) return showError("Please wait: the previous upload is still being segmented.");
    if (!files.length) return showError("No files found in what was dropped.");
    const limits = state.limits;
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (limits && files.length > limits.max_files) {
      return showError(`${files.length} files is more than the ${limits.max_files} the server accepts at once.`);
    }
    if (limits && total > limits.max_upload_bytes) {
      return showError(`These files hold ${(total / 1048576).toFixed(1)} MB, more than the ${fmt(limits.max_upload_bytes / 1048576)} MB the server accepts at once.`);
    }
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    send("/api/v1/segment", form, files.length === 1 ? files[0].name : `${files.length} files`);
  }

  function send(url, body, label) {
    if (state.busy) return showError("Please wait: the previous request is still being segmented.");
    state.busy = true;
    showError("");
    document.body.dataset.state = "busy";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "json";
    const segmenting = () => {
      const began = Date.now();
      const tick = () => setProgress(`Segmenting ${label}… ${Math.round((Date.now() - began) / 1000)} s`, null);
      tick();
      stopTimer();
      state.timer = setInterval(tick, 1000);
    };
    if (body) {
      setProgress(`Uploading ${label}…`, 0);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) setProgress(`Uploading ${label}…`, (100 * event.loaded) / event.total);
      };
      xhr.upload.onload = segmenting;
    } else {
      segmenting();
    }
    const finish = () => {
      stopTimer();
      state.busy = false;
      setProgress(null);
    };
    const fail = (text) => {
      finish();
      clearResult();
      showError(text);
      document.body.dataset.state = "error";
    };
    xhr.onload = () => {
      if (xhr.status === 200 && xhr.response) {
        finish();
        render(xhr.response);
        return;
      }
      const detail = xhr.response && xhr.response.detail;
      const text = Array.isArray(detail) ? detail.map((d) => d.msg || JSON.stringify(d)).join("; ") : detail;
      fail(text ? `Could not segment: ${text}` : `The server answered ${xhr.status} ${xhr.statusText}.`);
    };
    xhr.onerror = () => fail("Could not reach the server. Is `lggseg serve` still running?");
    xhr.send(body);
  }

  // ------------------------------------------------------------------ results and case tabs

  function render(result) {
    state.result = result;
    $("drop").classList.add("compact");
    $("results").hidden = false;
    showWarnings(result.warnings || []);
    showSkipped(result.skipped || []);
    const tabs = $("case-tabs");
    tabs.replaceChildren(
      ...result.cases.map((c, i) =>
        el("button", {
          type: "button", className: "tab", id: `case-tab-${i}`, textContent: `${c.name} · ${fmt(c.tumor_volume_voxels)} vx`,
          onclick: () => selectCase(i),
        })
      )
    );
    for (const tab of tabs.children) {
      tab.setAttribute("role", "tab");
      tab.setAttribute("aria-controls", "case-panel");
    }
    tabs.hidden = result.cases.length < 2;
    const panel = $("case-panel");
    if (result.cases.length > 1) panel.setAttribute("role", "tabpanel");
    else panel.removeAttribute("role");
    selectCase(0);
  }

  function onTabKey(event) {
    const tabs = Array.from($("case-tabs").children);
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    const moves = { ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1, Home: 0, End: tabs.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    event.stopPropagation();
    const next = (moves[event.key] + tabs.length) % tabs.length;
    selectCase(next);
    tabs[next].focus();
  }

  const currentCase = () => state.result.cases[state.caseIndex];

  function selectCase(index) {
    state.caseIndex = index;
    state.stripPlaced = false;
    const c = currentCase();
    const n = c.slices.length;
    Array.from($("case-tabs").children).forEach((tab, i) => {
      tab.setAttribute("aria-selected", String(i === index));
      tab.tabIndex = i === index ? 0 : -1;
    });
    $("case-panel").setAttribute("aria-labelledby", `case-tab-${index}`);
    $("case-volume").textContent = fmt(c.tumor_volume_voxels);
    $("case-volume").dataset.value = c.tumor_volume_voxels;
    $("case-slices").textContent = fmt(c.slices_with_tumor);
    $("case-total").textContent = fmt(n);
    $("case-kind").textContent = `· ${KINDS[c.kind] || c.kind}`;
    $("case-title").textContent = n > 1 ? "Whole scan" : "Summary";
    const hasDice = c.dice != null;
    $("dice-label").hidden = $("case-dice-row").hidden = !hasDice;
    $("case-dice").textContent = hasDice ? c.dice.toFixed(3) : "";
    $("case-dice-note").textContent = hasDice && c.dice_note ? ` (${c.dice_note})` : "";
    const hasTruth = c.slices.some((s) => s.truth_png);
    $("mode-errors").disabled = !hasTruth;
    $("truth-toggle-row").hidden = !hasTruth;
    if (!hasTruth && $("mode-errors").checked) setMode("outline");
    $("dl-nifti").href = c.downloads.nifti;
    $("dl-zip").href = c.downloads.png_zip;
    showSpacing();
    showOrientation(c.orientation);
    window.LggsegShape.show(c.shape_features, (z) => showSlice(z));

    $("slider-row").hidden = n < 2;
    $("slice-slider").max = String(n);
    $("thumbs").replaceChildren(
      ...c.slices.map((s, z) => {
        const button = el("button", {
          type: "button", className: "thumb" + (s.tumor_area_px > 0 ? " tumor" : ""), tabIndex: -1,
          title: `slice ${z + 1}: ${fmt(s.tumor_area_px)} px`, onclick: () => showSlice(z),
        }, [el("img", { alt: `slice ${z + 1}`, loading: "lazy", src: png(s.overlay_png || s.mask_png) })]);
        return button;
      })
    );
    $("thumbs").hidden = $("skip-thumbs").hidden = n < 2;
    $("plot-box").hidden = n < 2;
    drawPlot(c);

    let best = Math.floor((n - 1) / 2);
    c.slices.forEach((s, z) => {
      if (s.tumor_area_px > c.slices[best].tumor_area_px) best = z;
    });
    applyPreset("full", false);
    viewer.resetView();
    overlayChanged();
    showSlice(best);
  }

  function showOrientation(orientation) {
    const [row, col] = orientation || [];
    const marks = { top: OPPOSITE[row], bottom: row, left: OPPOSITE[col], right: col };
    for (const [side, text] of Object.entries(marks)) {
      $(`orient-${side}`).textContent = orientation ? text : "";
      $(`orient-${side}`).hidden = !orientation;
    }
    $("viewer").title = orientation ? "" : "orientation unknown";
  }

  // ------------------------------------------------------------------ voxel size and volume

  function spacing() {
    const c = currentCase();
    if (c.voxel_size_mm) return c.voxel_size_mm;
    const mine = state.spacing[state.caseIndex];
    return mine && mine.every((v) => v > 0) ? mine : null;
  }

  function showSpacing() {
    const c = currentCase();
    const known = c.voxel_size_mm;
    const sp = spacing();
    $("spacing-box").hidden = Boolean(known);
    const mine = state.spacing[state.caseIndex] || [];
    ["sp-x", "sp-y", "sp-z"].forEach((id, k) => {
      if (document.activeElement !== $(id)) $(id).value = mine[k] ? String(mine[k]) : "";
    });
    $("case-spacing").textContent = sp ? `${sp.map((v) => +v.toFixed(3)).join(" × ")} mm${known ? "" : " (entered)"}` : "unknown";
    const ml = known && c.tumor_volume_ml != null ? c.tumor_volume_ml : sp ? (c.tumor_volume_voxels * sp[0] * sp[1] * sp[2]) / 1000 : null;
    $("case-ml").textContent = ml != null ? `(${ml.toFixed(2)} mL)` : "";
    $("case-ml").dataset.value = ml != null ? String(ml) : "";
  }

  // ------------------------------------------------------------------ one slice

  async function showSlice(z, focusThumb = false) {
    const c = currentCase();
    const n = c.slices.length;
    z = Math.max(0, Math.min(n - 1, z));
    state.slice = z;
    const s = c.slices[z];
    const slider = $("slice-slider");
    slider.value = String(z + 1);
    slider.setAttribute("aria-valuetext", `slice ${z + 1} of ${n}, ${fmt(s.tumor_area_px)} pixels of tumor`);
    $("slice-label").textContent = `slice ${z + 1} of ${n}`;
    $("slice-name").textContent = s.name;
    $("viewer-badge").textContent = n > 1 ? `${z + 1} / ${n}` : s.name;
    $("slice-area").textContent = fmt(s.tumor_area_px);
    $("slice-area").dataset.value = s.tumor_area_px;
    const sp = spacing();
    $("slice-area-unit").textContent = sp ? `pixels of tumor (${((s.tumor_area_px * sp[0] * sp[1]) / 100).toFixed(2)} cm²)` : "pixels of tumor";
    const thumbs = Array.from($("thumbs").children);
    thumbs.forEach((thumb, i) => {
      thumb.setAttribute("aria-current", String(i === z));
      thumb.tabIndex = i === z ? 0 : -1;
    });
    if (thumbs[z]) placeStrip(thumbs[z]);
    if (focusThumb && thumbs[z]) thumbs[z].focus({ preventScroll: true });
    const plot = $("area-plot");
    plot.querySelectorAll(".bar").forEach((bar, i) => bar.classList.toggle("current", i === z));
    const cursor = plot.querySelector(".cursor");
    if (cursor) cursor.setAttribute("x", String((z * 320) / n));

    const token = ++state.token;
    const layers = await V.sliceLayers(s);
    if (token !== state.token) return; // another slice was asked for meanwhile
    if (state.preset !== "full" && state.preset !== null) applyPreset(state.preset, false, layers);
    viewer.show(layers);
    sliceStats(s, layers);
    const canvas = $("slice-canvas");
    canvas.dataset.slice = String(z + 1);
    canvas.setAttribute("aria-label", `FLAIR slice ${z + 1} of ${n} with the ${modeName()} overlay`);
    document.body.dataset.state = "done";
  }

  /** Scroll the thumbnail strip (only the strip, never the page) so the current slice shows. */
  function placeStrip(thumb) {
    const strip = $("thumbs");
    const left = thumb.offsetLeft;
    const right = left + thumb.offsetWidth;
    if (!state.stripPlaced) strip.scrollLeft = left - (strip.clientWidth - thumb.offsetWidth) / 2;
    else if (left < strip.scrollLeft) strip.scrollLeft = left - 8;
    else if (right > strip.scrollLeft + strip.clientWidth) strip.scrollLeft = right - strip.clientWidth + 8;
    state.stripPlaced = strip.clientWidth > 0;
  }

  function sliceStats(s, layers) {
    const { tp, fp, fn, peak } = layers.counts;
    const hasTruth = layers.truth != null;
    const show = (id, text) => {
      $(id).hidden = $(`${id}-label`).hidden = text == null;
      $(id).textContent = text ?? "";
    };
    show("slice-truth", hasTruth ? `${fmt(s.truth_area_px)} px` : null);
    const dice = tp + fp + fn > 0 ? (2 * tp) / (2 * tp + fp + fn) : null;
    show("slice-dice", hasTruth ? (dice == null ? "— (no tumor in either)" : dice.toFixed(3)) : null);
    $("slice-dice").dataset.value = dice == null ? "" : String(dice);
    show("slice-errors", hasTruth ? `${fmt(tp)} · ${fmt(fp)} · ${fmt(fn)} px` : null);
    Object.assign($("slice-errors").dataset, { tp, fp, fn });
    show("slice-peak", peak == null ? null : peak.toFixed(2));
  }

  // ------------------------------------------------------------------ display controls

  function applyPreset(name, redraw = true, layers = null) {
    state.preset = name;
    document.querySelectorAll("[data-preset]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.preset === name)));
    let lo = 0;
    let hi = 255;
    const source = layers || (viewer && viewer.layers);
    if (name !== "full" && source) [lo, hi] = name === "auto" ? V.percentiles([source], 0.005, 0.995) : V.percentiles([source], 0.3, 0.995);
    viewer.window = { width: Math.max(1, hi - lo), level: (hi + lo) / 2 };
    if (redraw) viewer.compose();
    windowChanged();
  }

  function windowChanged() {
    const { width, level } = viewer.window;
    $("wl-width").value = String(Math.round(width));
    $("wl-level").value = String(Math.round(level));
    $("wl-width").setAttribute("aria-valuetext", `window ${Math.round(width)}`);
    $("wl-level").setAttribute("aria-valuetext", `level ${Math.round(level)}`);
    $("wl-width-value").textContent = String(Math.round(width));
    $("wl-level-value").textContent = String(Math.round(level));
    $("wl-readout").textContent = `W ${Math.round(width)} · L ${Math.round(level)}`;
  }

  function modeName() {
    const mode = document.querySelector("input[name=overlay]:checked").value;
    return { outline: "outline", fill: "filled mask", errors: "true/false positive and false negative", off: "no" }[mode];
  }

  function setMode(mode) {
    document.querySelector(`input[name=overlay][value=${mode}]`).checked = true;
    overlayChanged();
  }

  function overlayChanged() {
    const mode = document.querySelector("input[name=overlay]:checked").value;
    const opacity = Number($("opacity").value) / 100;
    $("opacity-value").textContent = `${$("opacity").value}%`;
    $("opacity").setAttribute("aria-valuetext", `${$("opacity").value}% opacity`);
    viewer.setOverlay({ mode, opacity, heat: $("heat-toggle").checked, truth: $("truth-toggle").checked });
    drawLegend(mode);
  }

  function drawLegend(mode) {
    const truth = state.result && currentCase().slices.some((s) => s.truth_png) && $("truth-toggle").checked;
    const item = (cls, text) => el("span", { className: "key" }, [el("span", { className: `swatch ${cls}` }), text]);
    const items = {
      outline: [item("pred line", "prediction"), truth && item("truth line", "ground truth")],
      fill: [item("pred", "prediction"), truth && item("truth line", "ground truth")],
      errors: [item("agree", "TP: both"), item("pred", "FP: predicted only"), item("truth", "FN: missed")],
      off: [el("span", { className: "key", textContent: "overlay off" })],
    }[mode].filter(Boolean);
    if ($("heat-toggle").checked) items.push(el("span", { className: "key" }, [el("span", { className: "swatch heat" }), "probability 0.05 → 1"]));
    $("legend").replaceChildren(...items);
  }

  function onViewerChange(what, pixel) {
    if (what === "window") {
      state.preset = null;
      document.querySelectorAll("[data-preset]").forEach((b) => b.setAttribute("aria-pressed", "false"));
      windowChanged();
    } else if (what === "view") {
      $("zoom-level").textContent = `${Math.round(viewer.view.zoom * 100)}%`;
    } else if (what === "hover") {
      const L = viewer.layers;
      $("pixel-readout").textContent = pixel && L
        ? `(${pixel.x}, ${pixel.y}) · ${L.flair[pixel.i]}${L.prob ? ` · p ${(L.prob[pixel.i] / 255).toFixed(2)}` : ""}`
        : "";
    }
  }

  // ------------------------------------------------------------------ area plot (hand-written SVG)

  function svg(name, attrs) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function drawPlot(c) {
    const plot = $("area-plot");
    const W = 320;
    const H = 120;
    const n = c.slices.length;
    const areas = c.slices.map((s) => s.tumor_area_px);
    const truths = c.slices.map((s) => s.truth_area_px);
    const hasTruth = truths.every((t) => t != null);
    const max = Math.max(1, ...areas, ...(hasTruth ? truths : []));
    const step = W / n;
    const y = (v) => H - (v / max) * (H - 6);
    const nodes = [svg("rect", { class: "cursor", x: 0, y: 0, width: step, height: H })];
    areas.forEach((a, i) => {
      const h = H - y(a);
      nodes.push(svg("rect", { class: "bar", x: i * step + step * 0.12, y: H - h, width: Math.max(step * 0.76, 0.5), height: h }));
    });
    if (hasTruth) {
      const points = truths.map((t, i) => `${i * step},${y(t)} ${(i + 1) * step},${y(t)}`).join(" ");
      nodes.push(svg("polyline", { class: "truth-line", points }));
    }
    nodes.push(svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
    plot.replaceChildren(...nodes);
    let scale = plot.nextElementSibling;
    if (!scale || !scale.classList.contains("plot-scale")) {
      scale = el("div", { className: "plot-scale" });
      plot.after(scale);
    }
    const peak = Math.max(0, ...areas);
    const labels = ["slice 1", peak > 0 ? `peak ${fmt(peak)} px` : "no tumor predicted", `slice ${n}`];
    scale.replaceChildren(...labels.map((t) => el("span", { textContent: t })));
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    viewer = new V.Viewer($("slice-canvas"), onViewerChange);
    const drop = $("drop");
    const input = $("file-input");
    $("choose").addEventListener("click", (event) => {
      event.stopPropagation();
      input.click();
    });
    $("sample").addEventListener("click", (event) => {
      event.stopPropagation();
      send("/api/v1/sample", null, "the sample patient");
    });
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (event) => {
      if (event.target === drop && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      const files = Array.from(input.files);
      input.value = "";
      if (files.length) start(files);
    });
    window.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    window.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) drop.classList.remove("over");
    });
    window.addEventListener("drop", async (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      start(await filesFromDrop(event.dataTransfer));
    });

    $("case-tabs").addEventListener("keydown", onTabKey);
    $("slice-slider").addEventListener("input", (event) => showSlice(Number(event.target.value) - 1));
    $("prev").addEventListener("click", () => showSlice(state.slice - 1));
    $("next").addEventListener("click", () => showSlice(state.slice + 1));
    $("thumbs").addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: state.slice - 1, ArrowRight: state.slice + 1, Home: 0, End: currentCase().slices.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      event.stopPropagation();
      showSlice(moves[event.key], true);
    });
    document.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => applyPreset(b.dataset.preset)));
    document.querySelectorAll("[data-tool]").forEach((b) =>
      b.addEventListener("click", () => {
        viewer.tool = b.dataset.tool;
        document.querySelectorAll("[data-tool]").forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
        $("slice-canvas").dataset.tool = viewer.tool;
      })
    );
    $("zoom-in").addEventListener("click", () => viewer.setZoom(viewer.view.zoom * 1.25));
    $("zoom-out").addEventListener("click", () => viewer.setZoom(viewer.view.zoom / 1.25));
    $("zoom-fit").addEventListener("click", () => viewer.resetView());
    for (const id of ["wl-width", "wl-level"]) {
      $(id).addEventListener("input", () => viewer.setWindow(Number($("wl-width").value), Number($("wl-level").value)));
    }
    document.querySelectorAll("input[name=overlay]").forEach((r) => r.addEventListener("change", overlayChanged));
    for (const id of ["opacity", "heat-toggle", "truth-toggle"]) $(id).addEventListener("input", overlayChanged);
    for (const id of ["sp-x", "sp-y", "sp-z"]) {
      $(id).addEventListener("input", () => {
        if (!state.result) return;
        state.spacing[state.caseIndex] = ["sp-x", "sp-y", "sp-z"].map((k) => Number($(k).value));
        showSpacing();
        showSlice(state.slice);
      });
    }
    $("area-plot").addEventListener("click", (event) => {
      if (!state.result) return;
      const box = event.currentTarget.getBoundingClientRect();
      showSlice(Math.floor(((event.clientX - box.left) / box.width) * currentCase().slices.length));
    });
    document.addEventListener("keydown", (event) => {
      if (!state.result || event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.target.matches("input, select, textarea, [role=tab], summary")) return;
      if (event.key === "ArrowLeft") showSlice(state.slice - 1);
      else if (event.key === "ArrowRight") showSlice(state.slice + 1);
      else if (event.key === "+" || event.key === "=") viewer.setZoom(viewer.view.zoom * 1.25);
      else if (event.key === "-") viewer.setZoom(viewer.view.zoom / 1.25);
      else if (event.key === "0") viewer.resetView();
      else if (event.key === "o") setMode(document.querySelector("input[name=overlay]:checked").value === "off" ? "outline" : "off");
    });
    overlayChanged();
    windowChanged();
    loadHealth();
  }

  init();
})();
