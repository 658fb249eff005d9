// Event arguments as JSON for the tests to read: bytes (a Buffer, or an ArrayBuffer in a browser
// build) become {"$bytes": hex}, so that a test can tell bytes from an object that looks like them.
function shown(value) {
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
