// JSON-lines plumbing shared by the driver scripts (service_ops.mjs, client.mjs).
//
// stdin : one command per line: {"id": 1, "op": "<name>", ...params}
// stdout: one JSON object per line:
//   {"type": "ready", "versions": {...}}                      once, at start-up
//   {"type": "result", "id": 1, "ok": true, "value": ...}     when a command succeeded
//   {"type": "result", "id": 1, "ok": false, "error": {...}}  when it threw
//   {"type": "event", ...}                                     whatever a script reports
// Bytes travel as {"$binary": "<base64>"} in both directions.
// Commands run concurrently; a driver that needs ordering waits for each result.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const EXIT_GRACE_MS = 2000;

/** Versions of the SDK packages actually installed next to this script. */
export function installedVersions(names) {
  const versions = {};
  for (const name of names) {
    const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
    versions[name] = JSON.parse(readFileSync(url, "utf8")).version;
  }
  versions.node = process.versions.node;
  return versions;
}

function bytesOf(value) {
  if (value instanceof ArrayBuffer) {
    return Buffer.from(value);
  }
  if (ArrayBuffer.isView(value)) {
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  return null;
}

/** A JSON-safe copy of a value: binary data becomes {"$binary": base64}. */
export function toWire(value) {
  const bytes = bytesOf(value);
  if (bytes !== null) {
    return { $binary: bytes.toString("base64") };
  }
  if (Array.isArray(value)) {
    return value.map(toWire);
  }
  if (value !== null && typeof value === "object") {
    const copy = {};
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined && typeof item !== "function") {
        copy[key] = toWire(item);
      }
    }
    return copy;
  }
  return value;
}

/** The reverse of toWire; `makeBinary` turns a Buffer into what the SDK wants. */
export function fromWire(value, makeBinary) {
  if (Array.isArray(value)) {
    return value.map((item) => fromWire(item, makeBinary));
  }
  if (value !== null && typeof value === "object") {
    if (typeof value.$binary === "string" && Object.keys(value).length === 1) {
      return makeBinary(Buffer.from(value.$binary, "base64"));
    }
    const copy = {};
    for (const [key, item] of Object.entries(value)) {
      copy[key] = fromWire(item, makeBinary);
    }
    return copy;
  }
  return value;
}

/** ArrayBuffer holding exactly the bytes of a Buffer (what @azure/web-pubsub-client wants). */
export function toArrayBuffer(buffer) {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
}

export function emit(message) {
  process.stdout.write(JSON.stringify(toWire(message)) + "\n");
}

/** Everything a test may want to assert about an error thrown by an SDK. */
export function describeError(err) {
  if (!(err instanceof Error)) {
    return { name: typeof err, message: String(err) };
  }
  const described = { name: err.name, message: err.message };
  for (const key of ["statusCode", "code", "ackId", "errorDetail", "invocationId", "responses", "granted"]) {
    if (err[key] !== undefined) {
      described[key] = err[key];
    }
  }
  return described;
}

/**
 * Read commands from stdin until it closes, run handlers[op](params) for each and print
 * the result line. Once stdin ends, `onClose` runs, the commands still running get up to
 * EXIT_GRACE_MS to report, and the process exits.
 */
export function serve(handlers, { versions, onClose } = {}) {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const running = new Set();
  lines.on("line", (line) => {
    if (!line.trim()) {
      return;
    }
    let command;
    try {
      command = JSON.parse(line);
    } catch (err) {
      emit({ type: "protocol-error", line, error: describeError(err) });
      return;
    }
    const { id, op, ...params } = command;
    const handler = Object.hasOwn(handlers, op) ? handlers[op] : undefined;
    const task = (async () => {
      try {
        if (handler === undefined) {
          throw new Error(`unknown op '${op}'`);
        }
        emit({ type: "result", id, ok: true, value: (await handler(params)) ?? null });
      } catch (err) {
        emit({ type: "result", id, ok: false, error: describeError(err) });
      }
    })();
    running.add(task);
    void task.finally(() => running.delete(task));
  });
  lines.on("close", async () => {
    setTimeout(() => process.exit(0), EXIT_GRACE_MS).unref();
    if (onClose) {
      await onClose();
    }
    await Promise.allSettled([...running]);
    process.exit(0);
  });
  emit({ type: "ready", versions: versions ?? {} });
}
