// The WebGL map: regl-scatterplot over the 2-D layout, with colouring, filtering and selection.

import createScatterplot from "regl-scatterplot";
import { categoryColors, DEFAULT_COLOR, viridis } from "./colors.js";

const N_COLORS = 256;

/** Per-point value in [0, 1] (continuous) or an integer code (categorical) for one label. */
export function encodeLabel(label) {
  const n = label.values.length;
  const valueA = new Float32Array(n);
  if (label.kind === "categorical") {
    valueA.set(label.values);
    return { valueA, dataType: "categorical", colors: categoryColors(label.categories.length) };
  }
  const span = label.max - label.min || 1;
  let missing = 0;
  for (let i = 0; i < n; i++) {
    const v = label.values[i];
    if (Number.isFinite(v)) valueA[i] = Math.min(1, Math.max(0, (v - label.min) / span));
    else missing++;
  }
  return { valueA, dataType: "continuous", colors: viridis(N_COLORS), missing };
}

export function pointSizeFor(n) {
  if (n > 300000) return 1.5;
  if (n > 30000) return 2.5;
  if (n > 3000) return 4;
  return 7;
}

export function createPlot(canvas, data, handlers) {
  const n = data.ids.length;
  // Explicit sizes, kept in step with the plot's box by our own observer: the library's
  // 'auto' size is re-read asynchronously and can lag behind the layout.
  const box = () => canvas.parentElement.getBoundingClientRect();
  const scatterplot = createScatterplot({
    canvas,
    width: Math.max(1, Math.floor(box().width)),
    height: Math.max(1, Math.floor(box().height)),
    pointSize: pointSizeFor(n),
    pointColor: DEFAULT_COLOR,
    pointColorActive: "#ff4d4d",
    pointColorHover: "#ffffff",
    backgroundColor: "#10131a",
    lassoColor: "#ffd24d",
    opacity: n > 100000 ? 0.6 : 0.9,
    performanceMode: n > 2000000,
  });
  scatterplot.subscribe("pointOver", handlers.pointOver);
  scatterplot.subscribe("pointOut", handlers.pointOut);
  scatterplot.subscribe("select", ({ points }) => handlers.select(Array.from(points)));
  scatterplot.subscribe("deselect", () => handlers.select([]));
  new ResizeObserver(() => {
    const { width, height } = box();
    const size = { width: Math.max(1, Math.floor(width)), height: Math.max(1, Math.floor(height)) };
    if (size.width !== scatterplot.get("width") || size.height !== scatterplot.get("height")) scatterplot.set(size);
  }).observe(canvas.parentElement);
  let filter = null;

  const plot = {
    scatterplot,
    n,
    /** Draw every point, coloured by `label` (or one colour when `label` is null). */
    async colorBy(label) {
      const points = { x: data.x, y: data.y };
      let encoding = null;
      const options = { preventFilterReset: true };
      if (label) {
        encoding = encodeLabel(label);
        points.z = encoding.valueA;
        options.zDataType = encoding.dataType;
      }
      const selected = scatterplot.get("selectedPoints");
      if (selected.length) options.select = Array.from(selected);
      if (filter) options.filter = filter;
      await scatterplot.draw(points, options);
      scatterplot.set(
        encoding
          ? { colorBy: "valueA", pointColor: encoding.colors }
          : { colorBy: null, pointColor: DEFAULT_COLOR },
      );
      return encoding;
    },
    /** Show only the points `rows` (null: all). */
    async filter(rows) {
      filter = rows;
      if (rows === null) await scatterplot.unfilter();
      else await scatterplot.filter(rows);
    },
    drawnCount() {
      return filter === null ? n : filter.length;
    },
    setLassoType(type) {
      scatterplot.set({ lassoType: type });
    },
  };
  return plot;
}
