// The side panels: legend, tooltip, neighbour grid, most-anomalous list, selection export.

import { viridisGradient } from "./colors.js";

const el = (tag, attrs = {}, children = []) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
};

export function formatValue(label, row) {
  const v = label.values[row];
  if (label.kind === "categorical") return label.categories[v];
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function thumbnail(source, id, size) {
  const url = source.thumbnailUrl(id);
  if (!url) return el("div", { class: "thumb missing", text: "no image", style: `width:${size}px;height:${size}px` });
  return el("img", { class: "thumb", src: url, alt: id, width: size, height: size });
}

export function renderLegend(container, label, encoding) {
  container.replaceChildren();
  if (!label) {
    container.append(el("div", { class: "legend-title", text: "one colour" }));
    return;
  }
  container.append(el("div", { class: "legend-title", text: label.name }));
  if (label.kind === "categorical") {
    const counts = new Array(label.categories.length).fill(0);
    for (const code of label.values) counts[code]++;
    label.categories.forEach((name, i) => {
      container.append(el("div", { class: "legend-item", "data-category": name }, [
        el("span", { class: "swatch", style: `background:${encoding.colors[i]}` }),
        el("span", { text: `${name} (${counts[i]})` }),
      ]));
    });
    return;
  }
  container.append(el("div", { class: "colorbar", style: `background:${viridisGradient()}` }));
  container.append(el("div", { class: "colorbar-ticks" }, [
    el("span", { class: "colorbar-min", text: formatValue({ values: [label.min] }, 0) }),
    el("span", { class: "colorbar-max", text: formatValue({ values: [label.max] }, 0) }),
  ]));
  if (encoding.missing) {
    container.append(el("div", { class: "note", text: `${encoding.missing} without a value, drawn at the low end` }));
  }
}

export function renderTooltip(tooltip, source, data, row, [x, y]) {
  const id = data.ids[row];
  const rows = data.labels.slice(0, 14).map((label) =>
    el("tr", {}, [el("th", { text: label.name }), el("td", { text: formatValue(label, row) })]),
  );
  tooltip.replaceChildren(
    el("div", { class: "tooltip-id", text: id }),
    thumbnail(source, id, 96),
    el("table", {}, rows),
  );
  tooltip.style.left = `${x + 14}px`;
  tooltip.style.top = `${y + 14}px`;
  tooltip.hidden = false;
}

export function renderNeighbours(container, source, result, onPick) {
  container.replaceChildren(el("h3", { text: `${result.hits.length} nearest to ${result.query}` }));
  const grid = el("div", { class: "grid" });
  for (const hit of result.hits) {
    const card = el("div", { class: "hit", "data-id": hit.id, title: `${hit.id}\nscore ${hit.score}` }, [
      thumbnail(source, hit.id, 72),
      el("div", { class: "caption", text: `${hit.id}` }),
      el("div", { class: "caption", text: Number(hit.score).toFixed(3) }),
    ]);
    card.addEventListener("click", () => onPick(hit.id));
    grid.append(card);
  }
  container.append(grid);
}

export function renderAnomalies(container, source, anomaly, onPick) {
  container.replaceChildren(el("h3", { text: `Most anomalous (${anomaly.by})` }));
  const list = el("ol", { class: "anomaly-list" });
  for (const item of anomaly.top) {
    const entry = el("li", { class: "anomaly", "data-id": item.id }, [
      thumbnail(source, item.id, 48),
      el("span", { text: `${item.id}  ${item.score.toFixed(3)}` }),
    ]);
    entry.addEventListener("click", () => onPick(item.id));
    list.append(entry);
  }
  container.append(list);
}

/** The selected ids as CSV text: a header and one id a line, in point order. */
export function selectionCsv(data, rows) {
  const quote = (s) => (/[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);
  return ["id", ...[...rows].sort((a, b) => a - b).map((r) => quote(data.ids[r]))].join("\n") + "\n";
}

export function downloadText(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
