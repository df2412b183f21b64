// Hosts named @azure/web-pubsub-client instances driven by JSON lines; see common.mjs for
// the framing. Usage: node client.mjs
//
// Ops:
//   {"op": "start", "client": "a", "url": "ws://...", "protocol": "json"|"reliable",
//    "options": {...WebPubSubClientOptions}}
//       Creates client "a", subscribes to all its events and awaits client.start().
//       Driver defaults (overridable through "options"): autoReconnect false and
//       messageRetryOptions.maxRetries 0, so a failure shows up once and at once.
//       protocol "json" (the default here) is WebPubSubJsonProtocol(); "reliable" is
//       WebPubSubJsonReliableProtocol() (the SDK's own default).
//   {"op": "call", "client": "a", "method": "sendToGroup", "args": [...]}
//       Awaits client.<method>(...args) for joinGroup, leaveGroup, sendToGroup, sendEvent,
//       invokeEvent and stop; binary data ({"$binary": ...}) is passed as an ArrayBuffer.
//   {"op": "openStream", "client": "a", "group": "g", "options": {...OpenGroupStreamOptions}}
//       Awaits client.openGroupStream(group, options); returns {"streamId"}. The writer's
//       errors are printed as {"type": "stream-error", "client", "streamId", "error"}.
//   {"op": "streamWrite"|"streamEnd"|"streamAbort", "client": "a", "streamId": "s",
//    "args": [...]}
//       Awaits writer.write(...args) / writer.end() / writer.abort(...args).
//   {"op": "onGroupStream", "client": "a", "options": {...OnGroupStreamOptions}}
//       Subscribes; every item of every inbound stream is printed as {"type": "stream-item",
//       "client", "group", "streamId", "data", "dataType", "sequenceId"}, the end as
//       {"type": "stream-done", "client", "group", "streamId", "error"?}.
//   {"op": "invokeAbortable", "client": "a", "key": "k", "args": [...], "options": {...}}
//       Awaits client.invokeEvent(...args, {...options, abortSignal}) with an AbortController
//       kept under "key"; {"op": "abortInvocation", "key": "k"} aborts it.
//   {"op": "dropSocket", "client": "a"}
//       Simulates a network failure: destroys client "a"'s TCP socket without a close frame
//       (reaches into the SDK's private _wsClient._socket, a `ws` WebSocket), so a reliable
//       client recovers its connection.
//
// Every event of every client is printed as
//   {"type": "event", "client": "a", "event": "<connected|disconnected|stopped|
//    server-message|group-message|rejoin-group-failed>", ...the SDK's event arguments}

import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { describeError, emit, fromWire, installedVersions, serve, toArrayBuffer } from "./common.mjs";

const EVENTS = [
  "connected",
  "disconnected",
  "stopped",
  "server-message",
  "group-message",
  "rejoin-group-failed",
];
const METHODS = new Set([
  "joinGroup",
  "leaveGroup",
  "sendToGroup",
  "sendEvent",
  "invokeEvent",
  "stop",
]);
const PROTOCOLS = {
  json: WebPubSubJsonProtocol,
  reliable: WebPubSubJsonReliableProtocol,
};

const clients = new Map();

function eventArgs(event, args) {
  if (event === "rejoin-group-failed") {
    return { group: args.group, error: describeError(args.error) };
  }
  return args;
}

async function start({ client: name, url, protocol = "json", options = {} }) {
  if (clients.has(name)) {
    throw new Error(`client '${name}' already exists`);
  }
  const makeProtocol = PROTOCOLS[protocol];
  if (makeProtocol === undefined) {
    throw new Error(`unknown protocol '${protocol}'`);
  }
  const client = new WebPubSubClient(url, {
    autoReconnect: false,
    ...options,
    messageRetryOptions: { maxRetries: 0, ...options.messageRetryOptions },
    protocol: makeProtocol(),
  });
  for (const event of EVENTS) {
    client.on(event, (args) => emit({ type: "event", client: name, event, ...eventArgs(event, args) }));
  }
  clients.set(name, client);
  await client.start();
  return { protocol: makeProtocol().name };
}

async function call({ client: name, method, args = [] }) {
  const client = clients.get(name);
  if (client === undefined) {
    throw new Error(`no client '${name}'`);
  }
  if (!METHODS.has(method)) {
    throw new Error(`'${method}' is not a client method this driver calls`);
  }
  return client[method](...fromWire(args, toArrayBuffer));
}

const writers = new Map();
const controllers = new Map();

async function invokeAbortable({ client: name, key, args = [], options = {} }) {
  const controller = new AbortController();
  controllers.set(key, controller);
  try {
    const [event, content, dataType] = fromWire(args, toArrayBuffer);
    return await clientNamed(name).invokeEvent(event, content, dataType, {
      ...options,
      abortSignal: controller.signal,
    });
  } finally {
    controllers.delete(key);
  }
}

function abortInvocation({ key }) {
  const controller = controllers.get(key);
  if (controller === undefined) {
    throw new Error(`no invocation '${key}' in flight`);
  }
  controller.abort();
}

function clientNamed(name) {
  const client = clients.get(name);
  if (client === undefined) {
    throw new Error(`no client '${name}'`);
  }
  return client;
}

async function openStream({ client: name, group, options = {} }) {
  const writer = await clientNamed(name).openGroupStream(group, options);
  writers.set(`${name}/${writer.streamId}`, writer);
  writer.onError((error) => {
    const described = error instanceof Error ? describeError(error) : { ...error };
    emit({ type: "stream-error", client: name, streamId: writer.streamId, error: described });
  });
  return { streamId: writer.streamId };
}

function writerOf(name, streamId) {
  const writer = writers.get(`${name}/${streamId}`);
  if (writer === undefined) {
    throw new Error(`no stream '${streamId}' on client '${name}'`);
  }
  return writer;
}

async function streamWrite({ client: name, streamId, args = [] }) {
  await writerOf(name, streamId).write(...fromWire(args, toArrayBuffer));
}

async function streamEnd({ client: name, streamId }) {
  await writerOf(name, streamId).end();
}

async function streamAbort({ client: name, streamId, args = [] }) {
  await writerOf(name, streamId).abort(...args);
}

function onGroupStream({ client: name, options = {} }) {
  clientNamed(name).onGroupStream(async (stream) => {
    const where = { client: name, group: stream.groupName, streamId: stream.streamId };
    try {
      for await (const item of stream) {
        emit({ type: "stream-item", ...where, ...item });
      }
      emit({ type: "stream-done", ...where });
    } catch (error) {
      const described = error instanceof Error ? describeError(error) : { ...error };
      emit({ type: "stream-done", ...where, error: described });
    }
  }, options);
}

function dropSocket({ client: name }) {
  const socket = clients.get(name)?._wsClient?._socket;
  if (socket === undefined || typeof socket.terminate !== "function") {
    throw new Error(`client '${name}' has no ws socket to drop`);
  }
  socket.terminate();
}

serve(
  {
    start,
    call,
    dropSocket,
    openStream,
    streamWrite,
    streamEnd,
    streamAbort,
    onGroupStream,
    invokeAbortable,
    abortInvocation,
  },
  {
    versions: installedVersions(["@azure/web-pubsub-client", "ws"]),
    onClose: () => {
      for (const client of clients.values()) {
        client.stop();
      }
    },
  },
);

process.on("unhandledRejection", (err) => {
  process.stderr.write(`unhandled rejection: ${JSON.stringify(describeError(err))}\n`);
});
