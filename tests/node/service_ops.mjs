// Drives @azure/web-pubsub (the service SDK) from JSON lines; see common.mjs for the framing.
//
//   WPS_CONNECTION_STRING=<connection string> [WPS_HUB=<default hub>] node service_ops.mjs
//   (or: node service_ops.mjs <connection string> [<default hub>])
//
// Ops:
//   {"op": "call", "hub": "h", "method": "sendToAll", "args": [...], "options": {...}}
//       Calls client.<method>(...args, options) on the WebPubSubServiceClient of hub "h".
//       With "group": "g" it calls client.group("g").<method>(...) instead. An `onResponse`
//       callback is always added to the options; the result is
//       {"value": <returned value>, "responses": [{status, method, url, errorCode}, ...]}.
//       Iterators returned by listConnections are drained: with "pages": true into a list of
//       pages (byPage()), otherwise into a list of members.
//   {"op": "versions"} -> the installed package versions.

import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { describeError, fromWire, installedVersions, serve } from "./common.mjs";

const connectionString = process.argv[2] ?? process.env.WPS_CONNECTION_STRING;
const defaultHub = process.argv[3] ?? process.env.WPS_HUB;
if (!connectionString) {
  process.stderr.write("usage: node service_ops.mjs <connection string> [<hub>]\n");
  process.exit(2);
}

const HUB_METHODS = new Set([
  "sendToAll",
  "sendToUser",
  "sendToConnection",
  "connectionExists",
  "closeConnection",
  "closeAllConnections",
  "closeUserConnections",
  "removeUserFromAllGroups",
  "removeConnectionFromAllGroups",
  "addConnectionsToGroups",
  "removeConnectionsFromGroups",
  "groupExists",
  "userExists",
  "grantPermission",
  "revokePermission",
  "hasPermission",
  "getClientAccessToken",
]);
const GROUP_METHODS = new Set([
  "addConnection",
  "removeConnection",
  "closeAllConnections",
  "addUser",
  "removeUser",
  "sendToAll",
  "listConnections",
]);

const clients = new Map();

function clientFor(hub) {
  if (!hub) {
    throw new Error("no hub given (pass 'hub' or set WPS_HUB)");
  }
  let client = clients.get(hub);
  if (client === undefined) {
    // http endpoints need allowInsecureConnection; no retries so failures surface at once.
    client = new WebPubSubServiceClient(connectionString, hub, {
      allowInsecureConnection: true,
      retryOptions: { maxRetries: 0 },
    });
    clients.set(hub, client);
  }
  return client;
}

async function drain(iterable, pages) {
  const items = [];
  for await (const item of pages ? iterable.byPage() : iterable) {
    items.push(item);
  }
  return items;
}

async function call({ hub, group, method, args = [], options = {}, pages = false }) {
  const client = clientFor(hub ?? defaultHub);
  const allowed = group === undefined ? HUB_METHODS : GROUP_METHODS;
  if (!allowed.has(method)) {
    throw new Error(`'${method}' is not a ${group === undefined ? "hub" : "group"} method`);
  }
  const target = group === undefined ? client : client.group(group);
  const responses = [];
  const onResponse = (raw) => {
    responses.push({
      status: raw.status,
      method: raw.request.method,
      url: raw.request.url,
      errorCode: raw.headers.get("x-ms-error-code") ?? null,
    });
  };
  const toBuffer = (buffer) => buffer;
  const callArgs = [...fromWire(args, toBuffer), { ...fromWire(options, toBuffer), onResponse }];
  try {
    let value = await target[method](...callArgs);
    if (value !== null && typeof value === "object" && Symbol.asyncIterator in value) {
      value = await drain(value, pages);
    }
    return { value: value ?? null, responses };
  } catch (err) {
    if (err instanceof Error) {
      err.responses = responses;
    }
    throw err;
  }
}

const versions = installedVersions(["@azure/web-pubsub", "@azure/core-rest-pipeline"]);
serve(
  {
    call,
    versions: async () => versions,
  },
  { versions },
);

process.on("unhandledRejection", (err) => {
  process.stderr.write(`unhandled rejection: ${JSON.stringify(describeError(err))}\n`);
});
