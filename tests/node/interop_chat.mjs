// A chat participant on the official @azure/web-pubsub-client, for tests/client/test_interop.py:
// the other side of a chat room whose first side is webpubsub.client (Python).
// Commands on stdin, events on stdout, framed as in common.mjs. Usage: node interop_chat.mjs
//
// Ops:
//   {"op": "start", "url": "ws://...", "group": "room", "protocol": "reliable"|"json"}
//       Starts the client with the SDK's default options (autoReconnect, autoRejoinGroups;
//       protocol "reliable" = WebPubSubJsonReliableProtocol, the SDK default), waits for its
//       `connected` event and joins `group`. Returns {connectionId, userId, protocol}.
//   {"op": "say", "data": ..., "dataType": "text"|"json"|"binary"}
//       sendToGroup(group, data, dataType) and waits for the ack; binary data comes as
//       {"$binary": base64} and goes out as an ArrayBuffer. Returns {ackId, isDuplicated}.
//   {"op": "dropSocket"}
//       Destroys the client's TCP socket (a network failure; the SDK then recovers).
//   {"op": "stop"}
//
// Every event is printed as {"type": "event", "event": "<name>", ...}; group messages as
//   {"type": "event", "event": "group-message", "group", "fromUserId", "dataType", "data",
//    "sequenceId"}

import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { emit, fromWire, installedVersions, serve, toArrayBuffer } from "./common.mjs";

const PROTOCOLS = { json: WebPubSubJsonProtocol, reliable: WebPubSubJsonReliableProtocol };

let client;
let room;

async function start({ url, group, protocol = "reliable" }) {
  const makeProtocol = PROTOCOLS[protocol];
  if (makeProtocol === undefined) {
    throw new Error(`unknown protocol '${protocol}'`);
  }
  client = new WebPubSubClient(url, { protocol: makeProtocol() });
  room = group;
  const connected = new Promise((resolve) => client.on("connected", resolve));
  client.on("connected", (e) => emit({ type: "event", event: "connected", ...e }));
  client.on("disconnected", (e) => emit({ type: "event", event: "disconnected", ...e }));
  client.on("stopped", () => emit({ type: "event", event: "stopped" }));
  client.on("server-message", ({ message }) => emit({ type: "event", event: "server-message", ...message }));
  client.on("group-message", ({ message }) => {
    const { group: from, fromUserId, dataType, data, sequenceId } = message;
    emit({ type: "event", event: "group-message", group: from, fromUserId, dataType, data, sequenceId });
  });
  await client.start();
  const { connectionId, userId } = await connected;
  await client.joinGroup(room);
  return { connectionId, userId, protocol: makeProtocol().name };
}

async function say({ data, dataType }) {
  return client.sendToGroup(room, fromWire(data, toArrayBuffer), dataType);
}

function dropSocket() {
  client._wsClient._socket.terminate();
}

serve(
  { start, say, dropSocket, stop: () => client.stop() },
  {
    versions: installedVersions(["@azure/web-pubsub-client"]),
    onClose: () => client?.stop(),
  },
);
