// Validates sio-relay entries against schema/entry.schema.json (JSON Schema 2020-12, with Ajv).
//
//   const { validate } = require("./validate");
//   const problems = validate({ room: "user:42", event: "order:shipped", data: '{"id":1}' });
//   // [] when the entry is valid, else one message per problem
//
//   echo '[{"event":"e","data":"{"}]' | node validate.js     prints [{"valid":false,"errors":[...]}]
//
// Two steps. Ajv, like most validators, only annotates contentMediaType/contentSchema: so each
// field whose contentMediaType is application/json is also parsed here with JSON.parse, and the
// parsed value checked against that field's contentSchema. The schema's description lists what
// only the relay checks (sizes, nesting depth, ±2^53, ...). Copied elsewhere, point the require
// below at your copy of the schema.
const Ajv2020 = require("ajv/dist/2020");
const schema = require("../../../schema/entry.schema.json");

// strictTypes off: the schema applies `pattern` and `propertyNames` to whatever JSON value an
// argument is, which is what they mean, and what Ajv's strict types would warn about.
const ajv = new Ajv2020({ allErrors: true, strictTypes: false, verbose: true });
ajv.addSchema(schema);
const entry = ajv.getSchema(schema.$id);
const contents = Object.fromEntries(
  Object.entries(schema.properties)
    .filter(([, property]) => property.contentMediaType === "application/json")
    .map(([field, property]) => {
      if (!property.contentSchema) throw new Error(`${field}: JSON without a contentSchema`);
      return [field, ajv.compile({ $ref: `${schema.$id}#/properties/${field}/contentSchema` })];
    }),
);

// The fields a subschema requires, wherever it nests them.
function required(schema) {
  if (typeof schema !== "object" || schema === null) return [];
  return [...(schema.required || []), ...Object.values(schema).flatMap(required)];
}

// Ajv says "must NOT be valid" for `not`: say what was excluded instead.
function message(field, e) {
  const at = `${field}${e.instancePath}`;
  if (e.keyword === "pattern" && e.schema === schema.$defs.text.pattern) {
    const where = e.propertyName === undefined ? at : `${at} key ${JSON.stringify(e.propertyName)}`;
    return `${where} holds half of a UTF-16 surrogate pair alone (an escape \\ud800-\\udfff)`;
  }
  if (e.keyword !== "not") return `${at} ${e.message}`;
  if (e.schema.enum) return `${at} is reserved: not one of ${e.schema.enum.join(", ")}`;
  const dependent = e.schemaPath.match(/^#\/dependentSchemas\/([^/]+)\/not$/);
  if (dependent) return `${at}: \`${dependent[1]}\` cannot go with ${required(e.schema).join(" or ")}`;
  return `${at} must not match ${JSON.stringify(e.schema)}`;
}

function messages(field, errors) {
  return errors.map((e) => message(field, e));
}

function validate(fields) {
  const problems = entry(fields) ? [] : messages("entry", entry.errors);
  for (const [field, check] of Object.entries(contents)) {
    if (typeof fields[field] !== "string") continue;
    let value;
    try {
      value = JSON.parse(fields[field]);
    } catch (err) {
      problems.push(`${field} is not valid JSON: ${err.message}`);
      continue;
    }
    if (!check(value)) problems.push(...messages(field, check.errors));
  }
  return problems;
}

module.exports = { validate };

if (require.main === module) {
  let input = "";
  process.stdin.on("data", (chunk) => (input += chunk));
  process.stdin.on("end", () => {
    const results = JSON.parse(input).map((fields) => {
      const errors = validate(fields);
      return { valid: errors.length === 0, errors };
    });
    console.log(JSON.stringify(results));
  });
}
