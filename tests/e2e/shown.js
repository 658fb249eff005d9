// Event arguments as JSON for the tests to read: bytes (a Buffer, or an ArrayBuffer in a browser
// build) become {"$bytes": hex}, so that a test can tell bytes from an object that looks like them,
// and arrays nested deeper than 64 levels become {"$nested": depth, "in": innermost}, which the
// tests' JSON parser (128 levels at most) can read.
function shown(value) {
  let depth = 0;
  let inner = value;
  while (Array.isArray(inner) && inner.length === 1) {
    depth++;
    inner = inner[0];
  }
  if (depth > 64) return { $nested: depth, in: shown(inner) };
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer) {
    return { $bytes: Buffer.from(value).toString("hex") };
  }
  if (Array.isArray(value)) return value.map(shown);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shown(v)]));
  }
  return value;
}

module.exports = { shown };
