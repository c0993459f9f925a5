// Colour maps: viridis for continuous labels, a 20-colour qualitative set for categories.

const VIRIDIS_STOPS = [
  "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
  "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
];

export const CATEGORICAL = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
  "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];

export const DEFAULT_COLOR = "#9fb4d8";

function hexToRgb(hex) {
  const v = Number.parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function rgbToHex([r, g, b]) {
  return `#${[r, g, b].map((c) => Math.round(c).toString(16).padStart(2, "0")).join("")}`;
}

/** `n` colours sampled evenly along viridis (linear interpolation between its stops). */
export function viridis(n) {
  const stops = VIRIDIS_STOPS.map(hexToRgb);
  const out = [];
  for (let i = 0; i < n; i++) {
    const t = (i / Math.max(n - 1, 1)) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    const f = t - k;
    out.push(rgbToHex(stops[k].map((c, j) => c + f * (stops[k + 1][j] - c))));
  }
  return out;
}

/** CSS gradient of viridis, for the colour bar. */
export function viridisGradient() {
  return `linear-gradient(to right, ${VIRIDIS_STOPS.join(", ")})`;
}

export function categoryColors(n) {
  return Array.from({ length: n }, (_, i) => CATEGORICAL[i % CATEGORICAL.length]);
}
