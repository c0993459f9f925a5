// Where the explorer's data comes from: the local server (`astropt explore`) or a payload
// embedded in the page (`astropt explore --static`). Both give the same decoded dataset.

const TYPED = { float32: Float32Array, uint16: Uint16Array, int32: Int32Array };

/** A base64 column `{dtype, b64}` -> a typed array. */
export function decodeColumn(column) {
  const text = atob(column.b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new TYPED[column.dtype](bytes.buffer);
}

/** The raw JSON payload -> {ids, x, y, labels: [{name, kind, values, categories}], ...}. */
export function decodePayload(raw) {
  const labels = raw.labels.map((label) => ({ ...label, values: decodeColumn(label.values) }));
  const rowOf = new Map(raw.ids.map((id, i) => [id, i]));
  return { ...raw, x: decodeColumn(raw.x), y: decodeColumn(raw.y), labels, rowOf };
}

/** Static mode: the payload lives in a <script type="application/json"> element. */
function embeddedSource(element) {
  const raw = JSON.parse(element.textContent);
  const data = decodePayload(raw);
  const embedded = raw.static || { thumbnails: {}, neighbours: null };
  const neighbourScores = embedded.neighbours ? decodeColumn(embedded.neighbours.scores) : null;
  return {
    mode: "static",
    data,
    thumbnailUrl: (id) => embedded.thumbnails[id] || null,
    async neighbours(id) {
      const row = data.rowOf.get(id);
      if (row === undefined || !embedded.neighbours) return { query: id, hits: [] };
      const k = embedded.neighbours.k;
      const hits = [];
      for (let r = 0; r < k; r++) {
        const hitId = embedded.neighbours.ids[row * k + r];
        if (hitId !== null) hits.push({ rank: r, id: hitId, score: neighbourScores[row * k + r] });
      }
      return { query: id, k, hits };
    },
  };
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

/** Server mode: points from /api/points, thumbnails and neighbours on demand. */
async function serverSource() {
  const data = decodePayload(await getJson("api/points"));
  return {
    mode: "server",
    data,
    thumbnailUrl: (id) => `api/thumb?id=${encodeURIComponent(id)}`,
    neighbours: (id, k) => getJson(`api/neighbours?id=${encodeURIComponent(id)}&k=${k}`),
  };
}

export async function openSource() {
  const element = document.getElementById("explorer-data");
  return element ? embeddedSource(element) : serverSource();
}
