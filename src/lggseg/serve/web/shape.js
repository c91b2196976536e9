// lggseg Shape panel: BEVR, margin fluctuation and angular SD of the case, each as a marker on a
// box plot of the cohort (the manual masks of the 100 patients of the LGG data set).
// Definitions: docs/radiogenomics.md. Hand-written SVG, no inline styles (strict CSP).
"use strict";

window.LggsegShape = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 300;
  const H = 30;
  const PAD = 8;
  const FEATURES = [
    { key: "bevr", name: "BEVR", gloss: "bounding ellipsoid volume ratio; 1 = an ellipsoid" },
    { key: "margin_fluctuation", name: "MF", gloss: "margin fluctuation; 0 = a smooth margin" },
    { key: "angular_sd", name: "ASD", gloss: "angular SD of the radius; 0 = round" },
  ];

  const $ = (id) => document.getElementById(id);
  const num = (v) => (v == null ? "—" : Number(v).toPrecision(3));
  const el = (tag, props = {}, children = []) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };
  const svg = (name, attrs) => {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  };

  function ordinal(n) {
    const tens = n % 100;
    const suffix = tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
    return `${n}${suffix}`;
  }

  /** "85th percentile", or "below all 100" / "above all 100" at the ends. */
  function rank(percentile, n) {
    if (percentile == null) return "";
    if (percentile <= 0) return `below all ${n} cohort patients`;
    if (percentile >= 100) return `above all ${n} cohort patients`;
    return `${ordinal(Math.max(1, Math.min(99, Math.round(percentile))))} percentile`;
  }

  /** Box plot of the cohort (whiskers: range, box: quartiles, line: median) and the case's marker. */
  function plot(feature, name) {
    const box = feature.cohort;
    const v = feature.value;
    let lo = Math.min(box.min, v ?? box.min);
    let hi = Math.max(box.max, v ?? box.max);
    if (!(hi > lo)) [lo, hi] = [lo - 1, hi + 1];
    const x = (t) => PAD + ((t - lo) / (hi - lo)) * (W - 2 * PAD);
    const mid = H / 2;
    const label =
      `cohort of ${box.n}: median ${num(box.median)}, middle half ${num(box.q1)} to ${num(box.q3)}, ` +
      `range ${num(box.min)} to ${num(box.max)}` + (v == null ? "" : `; this case ${num(v)}`);
    const node = svg("svg", { class: "shape-plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${name}: ${label}` });
    node.append(
      svg("line", { class: "whisker", x1: x(box.min), y1: mid, x2: x(box.max), y2: mid }),
      svg("line", { class: "whisker", x1: x(box.min), y1: mid - 5, x2: x(box.min), y2: mid + 5 }),
      svg("line", { class: "whisker", x1: x(box.max), y1: mid - 5, x2: x(box.max), y2: mid + 5 }),
      svg("rect", { class: "box", x: x(box.q1), y: mid - 7, width: Math.max(1, x(box.q3) - x(box.q1)), height: 14 }),
      svg("line", { class: "median", x1: x(box.median), y1: mid - 7, x2: x(box.median), y2: mid + 7 })
    );
    if (v != null) node.append(svg("circle", { class: "shape-marker", cx: x(v), cy: mid, r: 5.5 }));
    return node;
  }

  function row(spec, feature) {
    const n = feature.cohort.n;
    const item = el("li", { className: "shape-row" });
    item.dataset.feature = spec.key;
    item.dataset.value = feature.value == null ? "" : String(feature.value);
    item.dataset.percentile = feature.percentile == null ? "" : String(feature.percentile);
    const value = el("span", { className: "shape-value", textContent: feature.value == null ? "—" : num(feature.value) });
    const where = feature.value == null ? "needs a 3D volume" : rank(feature.percentile, n);
    item.append(
      el("div", { className: "shape-head" }, [
        el("span", { className: "shape-name", textContent: spec.name, title: spec.gloss }),
        value,
        el("span", { className: "shape-rank muted", textContent: where }),
      ]),
      el("div", { className: "shape-gloss muted small", textContent: spec.gloss })
    );
    if (feature.value != null) item.append(plot(feature, spec.name));
    return item;
  }

  /** Fill the panel for one case's ``shape_features`` (null: no tumor). ``goToSlice(z)`` is 0-based. */
  function show(shape, goToSlice) {
    const list = $("shape-list");
    const note = $("shape-note");
    $("shape-card").hidden = false;
    if (!shape) {
      list.replaceChildren();
      list.hidden = true;
      note.replaceChildren("No tumor was predicted, so there is no shape to compare.");
      return;
    }
    list.hidden = false;
    list.replaceChildren(...FEATURES.map((spec) => row(spec, shape[spec.key])));
    const jump = el("button", { type: "button", className: "linklike", textContent: `slice ${shape.largest_slice}` });
    jump.addEventListener("click", () => goToSlice(shape.largest_slice - 1));
    note.replaceChildren(
      ...(shape.dimensions === 2
        ? ["One slice: MF and ASD of this slice; BEVR needs a 3D volume."]
        : ["MF and ASD are measured on ", jump, ", the slice with the most tumor; BEVR on the whole volume."])
    );
  }

  return { show, rank, FEATURES };
})();
