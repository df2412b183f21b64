// Hosts named MQTT.js 5 clients driven by JSON lines; see common.mjs for the framing.
// Usage: node mqtt_client.mjs
//
// Ops:
//   {"op": "connect", "client": "a", "url": "ws://.../clients/mqtt/hubs/h?access_token=...",
//    "options": {...IClientOptions}}
//       Connects with reconnectPeriod 0 and waits for "connect" (returns the CONNACK) or the
//       first "error" (throws it, with err.code the CONNACK reason).
//   {"op": "subscribe", "client": "a", "topic": "t", "options": {"qos": 1}}
//       Returns the granted list; a refusal throws with err.packet.granted in "granted".
//   {"op": "publish", "client": "a", "topic": "t", "payload": "...", "options": {...}}
//       Awaits the publish callback (PUBACK/PUBCOMP for QoS 1/2); throws with err.code.
//   {"op": "end", "client": "a"}
//
// Events: {"type": "event", "client": "a", "event": "message", "topic", "payload", "qos",
//          "retain", "properties"}, and "disconnect" (reasonCode) / "close".

import mqtt from "mqtt";
import { describeError, emit, fromWire, installedVersions, serve } from "./common.mjs";

const clients = new Map();

function connect({ client: name, url, options = {} }) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    clients.set(name, client);
    client.on("message", (topic, payload, packet) =>
      emit({
        type: "event",
        client: name,
        event: "message",
        topic,
        payload: payload,
        qos: packet.qos,
        retain: packet.retain,
        properties: packet.properties ?? null,
      }),
    );
    client.on("disconnect", (packet) =>
      emit({ type: "event", client: name, event: "disconnect", reasonCode: packet.reasonCode ?? null,
             properties: packet.properties ?? null }),
    );
    client.on("close", () => emit({ type: "event", client: name, event: "close" }));
    client.once("connect", (connack) =>
      resolve({ returnCode: connack.returnCode ?? null, reasonCode: connack.reasonCode ?? null,
                sessionPresent: connack.sessionPresent, properties: connack.properties ?? null }),
    );
    client.once("error", (err) => reject(err));
  });
}

function get(name) {
  const client = clients.get(name);
  if (client === undefined) {
    throw new Error(`no client '${name}'`);
  }
  return client;
}

async function subscribe({ client: name, topic, options = {} }) {
  try {
    return await get(name).subscribeAsync(topic, options);
  } catch (err) {
    const error = new Error(err.message);
    error.granted = err.packet?.granted ?? null;
    throw error;
  }
}

async function publish({ client: name, topic, payload, options = {} }) {
  const data = fromWire(payload, (b) => b);
  try {
    await get(name).publishAsync(topic, data, options);
  } catch (err) {
    const error = new Error(err.message);
    error.code = err.code ?? null;
    throw error;
  }
}

async function end({ client: name }) {
  await get(name).endAsync();
}

serve(
  { connect, subscribe, publish, end },
  {
    versions: installedVersions(["mqtt"]),
    onClose: async () => {
      for (const client of clients.values()) {
        client.end(true);
      }
    },
  },
);

process.on("unhandledRejection", (err) => {
  process.stderr.write(`unhandled rejection: ${JSON.stringify(describeError(err))}\n`);
});
