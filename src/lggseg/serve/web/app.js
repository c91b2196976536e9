// lggseg web page: upload scans to /api/v1/segment, then browse the slices of each case.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const IGNORED = /(^\.|\.(csv|md|txt|tsv|json)$|^readme)/i;
  const state = { result: null, caseIndex: 0, slice: 0, outline: true, busy: false, limits: null, timer: null };

  const fmt = (n) => Number(n).toLocaleString("en-US");
  const png = (b64) => "data:image/png;base64," + b64;

  // ------------------------------------------------------------------ server status

  async function loadHealth() {
    const pill = $("model-status");
    try {
      const response = await fetch("/healthz");
      const health = await response.json();
      state.limits = health.limits;
      const cfg = health.model.config || {};
      pill.dataset.state = health.ready ? "ready" : "loading";
      pill.textContent = `model ready · U-Net f${cfg.base_width ?? "?"} · ${health.runtime}`;
      $("model-sha").textContent = health.model.sha256.slice(0, 12);
      $("model-sha").title = "SHA-256 " + health.model.sha256;
      const mb = health.limits.max_upload_bytes / 1048576;
      const side = health.limits.max_image_side;
      $("limits").textContent = `Up to ${fmt(mb)} MB per upload · slices up to ${side}×${side} pixels · files stay on this computer`;
    } catch (err) {
      pill.dataset.state = "down";
      pill.textContent = "server not reachable";
    }
  }

  // ------------------------------------------------------------------ messages and progress

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function showWarnings(list) {
    const box = $("warnings");
    box.replaceChildren(...list.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
    box.hidden = list.length === 0;
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

  // ------------------------------------------------------------------ choosing files

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
    if (state.busy) {
      showError("Please wait: the previous upload is still being segmented.");
      return;
    }
    if (!files.length) {
      showError("No files found in what was dropped.");
      return;
    }
    const limits = state.limits;
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (limits && files.length > limits.max_files) {
      showError(`${files.length} files is more than the ${limits.max_files} the server accepts at once.`);
      return;
    }
    if (limits && total > limits.max_upload_bytes) {
      showError(`These files hold ${(total / 1048576).toFixed(1)} MB, more than the ${fmt(limits.max_upload_bytes / 1048576)} MB the server accepts at once.`);
      return;
    }
    upload(files);
  }

  function upload(files) {
    state.busy = true;
    showError("");
    showWarnings([]);
    document.body.dataset.state = "busy";
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const label = files.length === 1 ? files[0].name : `${files.length} files`;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/segment");
    xhr.responseType = "json";
    setProgress(`Uploading ${label}…`, 0);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) setProgress(`Uploading ${label}…`, (100 * event.loaded) / event.total);
    };
    xhr.upload.onload = () => {
      const began = Date.now();
      const tick = () => setProgress(`Segmenting ${label}… ${Math.round((Date.now() - began) / 1000)} s`, null);
      tick();
      stopTimer();
      state.timer = setInterval(tick, 1000);
    };
    const finish = () => {
      stopTimer();
      state.busy = false;
      setProgress(null);
    };
    xhr.onload = () => {
      finish();
      if (xhr.status === 200 && xhr.response) {
        render(xhr.response);
        document.body.dataset.state = "done";
      } else {
        const detail = xhr.response && xhr.response.detail;
        const text = Array.isArray(detail) ? detail.map((d) => d.msg || JSON.stringify(d)).join("; ") : detail;
        showError(text ? `Could not segment: ${text}` : `The server answered ${xhr.status} ${xhr.statusText}.`);
        document.body.dataset.state = "error";
      }
    };
    xhr.onerror = () => {
      finish();
      showError("Could not reach the server. Is `lggseg serve` still running?");
      document.body.dataset.state = "error";
    };
    xhr.send(form);
  }

  // ------------------------------------------------------------------ results

  function render(result) {
    state.result = result;
    $("drop").classList.add("compact");
    $("results").hidden = false;
    showWarnings(result.warnings || []);
    const tabs = $("case-tabs");
    tabs.replaceChildren(
      ...result.cases.map((c, i) => {
        const tab = document.createElement("button");
        tab.type = "button";
        tab.className = "tab";
        tab.setAttribute("role", "tab");
        tab.textContent = `${c.name} · ${fmt(c.tumor_volume_voxels)} vx`;
        tab.addEventListener("click", () => selectCase(i));
        return tab;
      })
    );
    tabs.hidden = result.cases.length < 2;
    selectCase(0);
  }

  function currentCase() {
    return state.result.cases[state.caseIndex];
  }

  function selectCase(index) {
    state.caseIndex = index;
    const c = currentCase();
    const n = c.slices.length;
    Array.from($("case-tabs").children).forEach((tab, i) => tab.setAttribute("aria-selected", String(i === index)));

    $("case-volume").textContent = fmt(c.tumor_volume_voxels);
    $("case-volume").dataset.value = c.tumor_volume_voxels;
    $("case-ml").textContent = c.tumor_volume_ml != null ? `(${c.tumor_volume_ml.toFixed(2)} mL)` : "";
    $("case-slices").textContent = fmt(c.slices_with_tumor);
    $("case-total").textContent = fmt(n);
    const kinds = { slice: "one slice", slices: "slices of one patient", patient: "patient folder", nifti: "NIfTI volume" };
    $("case-kind").textContent = `· ${kinds[c.kind] || c.kind}`;
    $("case-title").textContent = n > 1 ? "Whole scan" : "Summary";
    const hasDice = c.dice != null;
    $("dice-label").hidden = $("case-dice").hidden = !hasDice;
    $("case-dice").textContent = hasDice ? c.dice.toFixed(3) : "";
    $("legend-truth").hidden = !c.slices.some((s) => s.truth_area_px != null);
    $("dl-nifti").href = c.downloads.nifti;
    $("dl-zip").href = c.downloads.png_zip;

    $("slider-row").hidden = n < 2;
    const slider = $("slice-slider");
    slider.max = String(n);
    $("thumbs").replaceChildren(
      ...c.slices.map((s, z) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "thumb" + (s.tumor_area_px > 0 ? " tumor" : "");
        button.title = `slice ${z + 1}: ${fmt(s.tumor_area_px)} px`;
        const img = document.createElement("img");
        img.alt = `slice ${z + 1}`;
        img.loading = "lazy";
        img.src = png(s.overlay_png || s.mask_png);
        button.append(img);
        button.addEventListener("click", () => showSlice(z));
        return button;
      })
    );
    $("thumbs").hidden = n < 2;
    $("plot-box").hidden = n < 2;
    drawPlot(c);

    let best = Math.floor((n - 1) / 2);
    c.slices.forEach((s, z) => {
      if (s.tumor_area_px > c.slices[best].tumor_area_px) best = z;
    });
    showSlice(best);
  }

  function showSlice(z) {
    const c = currentCase();
    const n = c.slices.length;
    z = Math.max(0, Math.min(n - 1, z));
    state.slice = z;
    const s = c.slices[z];
    const image = $("slice-image");
    const source = state.outline ? s.overlay_png : s.flair_png;
    image.src = png(source || s.mask_png);
    image.dataset.slice = String(z + 1);
    $("slice-slider").value = String(z + 1);
    $("slice-label").textContent = `slice ${z + 1} of ${n}`;
    $("slice-name").textContent = s.name;
    $("viewer-badge").textContent = n > 1 ? `${z + 1} / ${n}` : s.name;
    $("slice-area").textContent = fmt(s.tumor_area_px);
    $("slice-area").dataset.value = s.tumor_area_px;
    const truth = $("slice-truth");
    truth.hidden = s.truth_area_px == null;
    truth.textContent = s.truth_area_px != null ? `ground truth: ${fmt(s.truth_area_px)} px` : "";
    Array.from($("thumbs").children).forEach((thumb, i) => {
      thumb.setAttribute("aria-current", String(i === z));
      if (i === z) thumb.scrollIntoView({ block: "nearest", inline: "nearest" });
    });
    const plot = $("area-plot");
    plot.querySelectorAll(".bar").forEach((bar, i) => bar.classList.toggle("current", i === z));
    const cursor = plot.querySelector(".cursor");
    if (cursor) cursor.setAttribute("x", String((z * 320) / n));
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
    const top = 6;
    const n = c.slices.length;
    const areas = c.slices.map((s) => s.tumor_area_px);
    const truths = c.slices.map((s) => s.truth_area_px);
    const hasTruth = truths.every((t) => t != null);
    const max = Math.max(1, ...areas, ...(hasTruth ? truths : []));
    const step = W / n;
    const y = (v) => H - (v / max) * (H - top);
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
      scale = document.createElement("div");
      scale.className = "plot-scale";
      plot.after(scale);
    }
    const peak = Math.max(0, ...areas);
    scale.replaceChildren(
      ...[`slice 1`, peak > 0 ? `peak ${fmt(peak)} px` : "no tumor predicted", `slice ${n}`].map((t) => Object.assign(document.createElement("span"), { textContent: t }))
    );
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    const drop = $("drop");
    const input = $("file-input");
    $("choose").addEventListener("click", (event) => {
      event.stopPropagation();
      input.click();
    });
    drop.addEventListener("click", () => input.click());
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
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

    $("slice-slider").addEventListener("input", (event) => showSlice(Number(event.target.value) - 1));
    $("prev").addEventListener("click", () => showSlice(state.slice - 1));
    $("next").addEventListener("click", () => showSlice(state.slice + 1));
    $("outline-toggle").addEventListener("change", (event) => {
      state.outline = event.target.checked;
      if (state.result) showSlice(state.slice);
    });
    $("area-plot").addEventListener("click", (event) => {
      if (!state.result) return;
      const box = event.currentTarget.getBoundingClientRect();
      showSlice(Math.floor(((event.clientX - box.left) / box.width) * currentCase().slices.length));
    });
    document.addEventListener("keydown", (event) => {
      if (!state.result || event.target.matches("input[type=range], input[type=text]")) return;
      if (event.key === "ArrowLeft") showSlice(state.slice - 1);
      else if (event.key === "ArrowRight") showSlice(state.slice + 1);
      else if (event.key === "o") $("outline-toggle").click();
    });
    loadHealth();
  }

  init();
})();
