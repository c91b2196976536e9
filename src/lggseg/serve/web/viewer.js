// lggseg slice viewer: one canvas, FLAIR with window/level, zoom and pan, and overlay layers
// (outline, fill, TP/FP/FN errors, probability heat map). Colours: Okabe-Ito, colour-blind safe.
"use strict";

window.LggsegViewer = (() => {
  const COLORS = {
    pred: [213, 94, 0], // vermillion: prediction, false positives
    truth: [86, 180, 233], // sky blue: ground truth, false negatives
    agree: [240, 228, 66], // yellow: true positives
  };
  // viridis, sampled at 0, .25, .5, .75, 1 (perceptually uniform, readable with colour-vision deficiency)
  const HEAT = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const HEAT_FLOOR = 13; // probabilities below 0.05 are not drawn
  const MIN_ZOOM = 0.5;
  const MAX_ZOOM = 16;

  const heatLut = (() => {
    const lut = new Uint8Array(256 * 3);
    for (let v = 0; v < 256; v++) {
      const t = (v / 255) * (HEAT.length - 1);
      const i = Math.min(HEAT.length - 2, Math.floor(t));
      const f = t - i;
      for (let c = 0; c < 3; c++) lut[v * 3 + c] = Math.round(HEAT[i][c] + f * (HEAT[i + 1][c] - HEAT[i][c]));
    }
    return lut;
  })();

  /** A base64 PNG -> {width, height, values: Uint8Array of its first channel}. */
  async function decodePng(b64) {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const values = new Uint8Array(canvas.width * canvas.height);
    for (let i = 0; i < values.length; i++) values[i] = rgba[i * 4];
    return { width: canvas.width, height: canvas.height, values };
  }

  /** One-pixel inner boundary of a 0/255 mask (Uint8Array, width x height). */
  function edges(mask, width, height) {
    const out = new Uint8Array(mask.length);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        if (!mask[i]) continue;
        const inside =
          x > 0 && x < width - 1 && y > 0 && y < height - 1 && mask[i - 1] && mask[i + 1] && mask[i - width] && mask[i + width];
        out[i] = inside ? 0 : 1;
      }
    }
    return out;
  }

  /** Decoded layers of one slice of the API answer: flair, pred, truth (or null), prob (or null). */
  async function sliceLayers(slice) {
    if (slice._layers) return slice._layers;
    const [flair, pred, truth, prob] = await Promise.all([
      decodePng(slice.flair_png || slice.mask_png),
      decodePng(slice.mask_png),
      slice.truth_png ? decodePng(slice.truth_png) : null,
      slice.probability_png ? decodePng(slice.probability_png) : null,
    ]);
    const { width, height } = pred;
    const layers = { width, height, flair: flair.values, pred: pred.values, truth: truth && truth.values, prob: prob && prob.values };
    layers.predEdge = edges(layers.pred, width, height);
    layers.truthEdge = layers.truth ? edges(layers.truth, width, height) : null;
    let tp = 0, fp = 0, fn = 0, peak = 0;
    for (let i = 0; i < layers.pred.length; i++) {
      const p = layers.pred[i] > 0;
      const t = layers.truth ? layers.truth[i] > 0 : false;
      if (p && t) tp++;
      else if (p) fp++;
      else if (t) fn++;
      if (layers.prob && layers.prob[i] > peak) peak = layers.prob[i];
    }
    layers.counts = { tp, fp, fn, peak: layers.prob ? peak / 255 : null };
    slice._layers = layers;
    return layers;
  }

  /** Percentile bounds of the non-zero FLAIR values of some layers (for the "auto" window). */
  function percentiles(layersList, low, high) {
    const hist = new Float64Array(256);
    let total = 0;
    for (const layers of layersList) {
      for (const v of layers.flair) if (v > 0) { hist[v]++; total++; }
    }
    if (!total) return [0, 255];
    const find = (q) => {
      let seen = 0;
      for (let v = 0; v < 256; v++) {
        seen += hist[v];
        if (seen >= q * total) return v;
      }
      return 255;
    };
    return [find(low), find(high)];
  }

  class Viewer {
    constructor(canvas, onChange) {
      this.canvas = canvas;
      this.onChange = onChange;
      this.layers = null;
      this.frame = document.createElement("canvas");
      this.window = { width: 256, level: 128 };
      this.view = { zoom: 1, x: 0, y: 0 }; // zoom over "fit"; pan in screen pixels
      this.overlay = { mode: "outline", opacity: 0.6, heat: false, truth: true };
      this.tool = "wl";
      this._drag = null;
      this._bind();
      new ResizeObserver(() => this.paint()).observe(canvas.parentElement);
    }

    show(layers) {
      this.layers = layers;
      this.compose();
    }

    setWindow(width, level) {
      this.window = { width: Math.max(1, Math.min(512, Math.round(width))), level: Math.max(-64, Math.min(320, Math.round(level))) };
      this.compose();
      this.onChange("window");
    }

    setOverlay(changes) {
      Object.assign(this.overlay, changes);
      this.compose();
    }

    setZoom(zoom, cx, cy) {
      const box = this.canvas.getBoundingClientRect();
      const ax = (cx ?? box.width / 2) - box.width / 2;
      const ay = (cy ?? box.height / 2) - box.height / 2;
      const next = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, zoom));
      const k = next / this.view.zoom; // keep the point under (cx, cy) still
      this.view = { zoom: next, x: ax - (ax - this.view.x) * k, y: ay - (ay - this.view.y) * k };
      this.paint();
      this.onChange("view");
    }

    resetView() {
      this.view = { zoom: 1, x: 0, y: 0 };
      this.paint();
      this.onChange("view");
    }

    /** Pixels of the slice at native size: FLAIR through the window, then the overlays. */
    compose() {
      const L = this.layers;
      if (!L) return;
      const { width, height } = L;
      if (this.frame.width !== width || this.frame.height !== height) {
        this.frame.width = width;
        this.frame.height = height;
      }
      const ctx = this.frame.getContext("2d");
      const image = ctx.createImageData(width, height);
      const px = image.data;
      const lut = new Uint8Array(256);
      const lo = this.window.level - this.window.width / 2;
      for (let v = 0; v < 256; v++) lut[v] = Math.max(0, Math.min(255, Math.round(((v - lo) / this.window.width) * 255)));
      const { mode, opacity, heat } = this.overlay;
      const truth = this.overlay.truth && L.truth ? L.truth : null;
      const truthEdge = truth ? L.truthEdge : null;
      const a = Math.max(0, Math.min(1, opacity));
      const line = a > 0 ? Math.min(1, 0.4 + a) : 0; // thin outlines stay visible at a low fill opacity
      const paint = (o, color, alpha) => {
        px[o] += (color[0] - px[o]) * alpha;
        px[o + 1] += (color[1] - px[o + 1]) * alpha;
        px[o + 2] += (color[2] - px[o + 2]) * alpha;
      };
      for (let i = 0; i < L.flair.length; i++) {
        const o = i * 4;
        const g = lut[L.flair[i]];
        px[o] = g; px[o + 1] = g; px[o + 2] = g; px[o + 3] = 255;
        if (heat && L.prob && L.prob[i] >= HEAT_FLOOR) {
          const v = L.prob[i];
          paint(o, [heatLut[v * 3], heatLut[v * 3 + 1], heatLut[v * 3 + 2]], a * Math.min(1, (v / 255) * 1.6));
        }
        const p = L.pred[i] > 0;
        const t = truth ? truth[i] > 0 : false;
        if (mode === "outline") {
          if (truthEdge && truthEdge[i]) paint(o, COLORS.truth, line);
          if (L.predEdge[i]) paint(o, COLORS.pred, line);
        } else if (mode === "fill") {
          if (p) paint(o, COLORS.pred, a);
          if (truthEdge && truthEdge[i]) paint(o, COLORS.truth, line);
        } else if (mode === "errors" && truth) {
          if (p && t) paint(o, COLORS.agree, a);
          else if (p) paint(o, COLORS.pred, a);
          else if (t) paint(o, COLORS.truth, a);
        }
      }
      ctx.putImageData(image, 0, 0);
      this.paint();
    }

    /** The composed slice onto the visible canvas, fitted, zoomed and panned. */
    paint() {
      const L = this.layers;
      const box = this.canvas.parentElement.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(box.width * dpr));
      const h = Math.max(1, Math.round(box.height * dpr));
      if (this.canvas.width !== w || this.canvas.height !== h) {
        this.canvas.width = w;
        this.canvas.height = h;
      }
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, w, h);
      if (!L) return;
      const scale = this.scale() * dpr;
      ctx.imageSmoothingEnabled = false;
      const dw = L.width * scale;
      const dh = L.height * scale;
      ctx.drawImage(this.frame, (w - dw) / 2 + this.view.x * dpr, (h - dh) / 2 + this.view.y * dpr, dw, dh);
    }

    /** Screen pixels per image pixel. */
    scale() {
      const box = this.canvas.parentElement.getBoundingClientRect();
      const L = this.layers;
      return L ? Math.min(box.width / L.width, box.height / L.height) * this.view.zoom : 1;
    }

    /** Image pixel (column, row) under a client point, or null outside the image. */
    pixelAt(clientX, clientY) {
      const L = this.layers;
      if (!L) return null;
      const box = this.canvas.getBoundingClientRect();
      const s = this.scale();
      const x = Math.floor((clientX - box.left - box.width / 2 - this.view.x) / s + L.width / 2);
      const y = Math.floor((clientY - box.top - box.height / 2 - this.view.y) / s + L.height / 2);
      return x >= 0 && y >= 0 && x < L.width && y < L.height ? { x, y, i: y * L.width + x } : null;
    }

    _bind() {
      const c = this.canvas;
      c.addEventListener("pointerdown", (event) => {
        if (!this.layers) return;
        const pan = this.tool === "pan" || event.button === 1 || event.shiftKey;
        if (event.button !== 0 && event.button !== 1) return;
        event.preventDefault();
        c.setPointerCapture(event.pointerId);
        this._drag = { pan, x: event.clientX, y: event.clientY, window: { ...this.window }, view: { ...this.view } };
        c.dataset.dragging = pan ? "pan" : "wl";
      });
      c.addEventListener("pointermove", (event) => {
        const d = this._drag;
        if (!d) {
          this.onChange("hover", this.pixelAt(event.clientX, event.clientY));
          return;
        }
        const dx = event.clientX - d.x;
        const dy = event.clientY - d.y;
        if (d.pan) {
          this.view = { ...d.view, x: d.view.x + dx, y: d.view.y + dy };
          this.paint();
          this.onChange("view");
        } else {
          this.setWindow(d.window.width + dx, d.window.level + dy); // right: wider; up: lower level, brighter
        }
      });
      const end = () => {
        this._drag = null;
        delete c.dataset.dragging;
      };
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
      c.addEventListener("pointerleave", () => this.onChange("hover", null));
      c.addEventListener("wheel", (event) => {
        if (!this.layers) return;
        event.preventDefault();
        const box = c.getBoundingClientRect();
        this.setZoom(this.view.zoom * Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
      }, { passive: false });
      c.addEventListener("dblclick", () => this.resetView());
    }
  }

  return { Viewer, sliceLayers, percentiles, COLORS };
})();
