// `astropt explore` in the browser: wires the data source, the WebGL map and the panels,
// and exposes a few read-only hooks on `window.explorer` for tests and benchmarks.

import { openSource } from "./data.js";
import {
  downloadText,
  renderAnomalies,
  renderLegend,
  renderNeighbours,
  renderTooltip,
  selectionCsv,
} from "./panels.js";
import { createPlot } from "./plot.js";

const $ = (id) => document.getElementById(id);
const hooks = { ready: false, error: null, firstPaintMs: null };
window.explorer = hooks;

function setStatus(text) {
  $("status").textContent = text;
}

function fillLabelSelect(select, labels, withNone) {
  select.replaceChildren();
  if (withNone) select.append(new Option("(none)", ""));
  for (const label of labels) select.append(new Option(label.name, label.name));
}

function wireFilter(plot, data, updateCounts) {
  const byName = new Map(data.labels.map((l) => [l.name, l]));
  const select = $("filter-label");
  fillLabelSelect(select, data.labels, false);
  const sync = () => {
    const label = byName.get(select.value);
    const categorical = label?.kind === "categorical";
    $("filter-range").hidden = categorical;
    $("filter-category").hidden = !categorical;
    if (categorical) fillLabelSelect($("filter-category"), label.categories.map((name) => ({ name })), false);
    else if (label) {
      $("filter-min").value = label.min;
      $("filter-max").value = label.max;
    }
  };
  select.addEventListener("change", sync);
  sync();
  $("filter-apply").addEventListener("click", async () => {
    const label = byName.get(select.value);
    const rows = [];
    if (label.kind === "categorical") {
      const code = label.categories.indexOf($("filter-category").value);
      for (let i = 0; i < label.values.length; i++) if (label.values[i] === code) rows.push(i);
    } else {
      const lo = Number.parseFloat($("filter-min").value);
      const hi = Number.parseFloat($("filter-max").value);
      for (let i = 0; i < label.values.length; i++) {
        const v = label.values[i];
        if (v >= lo && v <= hi) rows.push(i);
      }
    }
    await plot.filter(rows);
    updateCounts();
  });
  $("filter-clear").addEventListener("click", async () => {
    await plot.filter(null);
    updateCounts();
  });
}

async function start() {
  const source = await openSource();
  const { data } = source;
  const canvas = $("canvas");
  let mouse = [0, 0];
  let selected = [];
  canvas.addEventListener("mousemove", (e) => {
    mouse = [e.offsetX, e.offsetY];
  });
  const tooltip = $("tooltip");
  const updateCounts = () => {
    $("drawn-count").textContent = `${plot.drawnCount()} of ${data.n_total} objects drawn`;
    $("selection-count").textContent = `${selected.length} selected`;
    $("export-csv").disabled = selected.length === 0;
  };
  const showNeighbours = async (row) => {
    const id = data.ids[row];
    $("neighbours").replaceChildren("finding neighbours of ", id, "…");
    try {
      const result = await source.neighbours(id, data.k);
      renderNeighbours($("neighbours"), source, result, pick);
    } catch (error) {
      $("neighbours").textContent = String(error.message || error);
    }
  };
  const plot = createPlot(canvas, data, {
    pointOver: (row) => renderTooltip(tooltip, source, data, row, mouse),
    pointOut: () => {
      tooltip.hidden = true;
    },
    select: (rows) => {
      selected = rows;
      updateCounts();
      if (rows.length === 1) showNeighbours(rows[0]);
    },
  });
  function pick(id) {
    const row = data.rowOf.get(id);
    if (row !== undefined) plot.scatterplot.select([row]);
  }

  const byName = new Map(data.labels.map((l) => [l.name, l]));
  const colorSelect = $("color-by");
  fillLabelSelect(colorSelect, data.labels, true);
  const recolor = async () => {
    const label = byName.get(colorSelect.value) || null;
    const encoding = await plot.colorBy(label);
    renderLegend($("legend"), label, encoding);
  };
  colorSelect.addEventListener("change", recolor);
  $("select-mode").addEventListener("change", (e) => plot.setLassoType(e.target.value));
  $("export-csv").addEventListener("click", () => downloadText("selection.csv", selectionCsv(data, selected)));
  wireFilter(plot, data, updateCounts);
  if (data.anomaly) renderAnomalies($("anomalies"), source, data.anomaly, pick);
  if (data.subsampled) {
    $("note").textContent = `${data.n} of ${data.n_total} objects shown (subsampled to the limit of ${data.limit}; the most anomalous are always kept).`;
  }
  if (data.default_color && byName.has(data.default_color)) colorSelect.value = data.default_color;
  await recolor();
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  hooks.firstPaintMs = performance.now();
  updateCounts();
  setStatus(`${data.method.toUpperCase()} map of ${data.column} · ${source.mode}`);

  Object.assign(hooks, {
    n: data.ids.length,
    ids: data.ids,
    k: data.k,
    drawnCount: () => plot.drawnCount(),
    rowOf: (id) => data.rowOf.get(id),
    selectedIds: () => selected.map((r) => data.ids[r]),
    selectionCsv: () => selectionCsv(data, selected),
    /** True when the map's size equals its box (so screen positions are final). */
    settled() {
      const rect = canvas.getBoundingClientRect();
      const sp = plot.scatterplot;
      return sp.get("width") === Math.floor(rect.width) && sp.get("height") === Math.floor(rect.height);
    },
    /** Page coordinates (CSS pixels) of point `row`, for a mouse to move to. */
    screenPosition(row) {
      const [x, y] = plot.scatterplot.getScreenPosition(row);
      const rect = canvas.getBoundingClientRect();
      return [rect.left + x, rect.top + y];
    },
    /** Over the next `ms` milliseconds: intervals (ms) between animation frames, the
     * number of frames the map was redrawn in, and how far its camera moved. */
    measureFrames(ms) {
      const before = [...plot.scatterplot.get("cameraTarget")];
      let draws = 0;
      const onDraw = () => {
        draws++;
      };
      plot.scatterplot.subscribe("draw", onDraw);
      return new Promise((resolve) => {
        const times = [];
        const end = performance.now() + ms;
        const tick = (t) => {
          times.push(t);
          if (t < end) {
            requestAnimationFrame(tick);
            return;
          }
          plot.scatterplot.unsubscribe("draw", onDraw);
          const after = plot.scatterplot.get("cameraTarget");
          resolve({
            intervals: times.slice(1).map((v, i) => v - times[i]),
            draws,
            moved: Math.hypot(after[0] - before[0], after[1] - before[1]),
          });
        };
        requestAnimationFrame(tick);
      });
    },
    /** Pan the camera by one step of a circle on every animation frame for `ms`
     * milliseconds (no input events); resolves to the intervals (ms) between redraws. */
    panContinuously(ms) {
      const times = [];
      const onDraw = () => times.push(performance.now());
      plot.scatterplot.subscribe("draw", onDraw);
      const [x0, y0] = plot.scatterplot.get("cameraTarget");
      return new Promise((resolve) => {
        const end = performance.now() + ms;
        let step = 0;
        const tick = (t) => {
          step++;
          plot.scatterplot.set({ cameraTarget: [x0 + 0.2 * Math.cos(step / 10), y0 + 0.2 * Math.sin(step / 10)] });
          if (t < end) {
            requestAnimationFrame(tick);
            return;
          }
          plot.scatterplot.unsubscribe("draw", onDraw);
          resolve(times.slice(1).map((v, i) => v - times[i]));
        };
        requestAnimationFrame(tick);
      });
    },
    ready: true,
  });
}

start().catch((error) => {
  hooks.error = String(error?.stack || error);
  setStatus(`could not start the explorer: ${error.message || error}`);
  console.error(error);
});
