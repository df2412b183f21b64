// An app server built with the official @azure/web-pubsub-express handler, for
// tests/compat/test_express_handler.py: the service calls it like it would call any app.
// Usage: node express_handler.mjs <hub>. Prints {"port": N} once listening, then one JSON
// line per connected/disconnected event it sees.
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const hub = process.argv[2] ?? "chat";
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
// The service percent-encodes CloudEvents attributes that can be non-ASCII (CloudEvents HTTP
// binding 3.1.3.2); @azure/web-pubsub-express 1.1.0 passes header values through as they
// are, so the app decodes them (a no-op for ids without '%', which the service encodes).
const decode = (value) => (value === undefined ? undefined : decodeURIComponent(value));

const handler = new WebPubSubEventHandler(hub, {
  path: "/eventhandler/",
  handleConnect(req, res) {
    const name = req.queries?.name?.[0];
    if (name === "intruder") {
      res.fail(401, "intruders are not welcome");
      return;
    }
    // The state set here must reach `connected` and every later event (issue 14.7).
    res.setState("count", 100);
    res.success({
      userId: name,
      groups: ["room"],
      roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
    });
  },
  handleUserEvent(req, res) {
    const count = req.context.states.count + 1; // NaN (null in JSON) if the state was lost
    res.setState("count", count);
    const eventName = decode(req.context.eventName);
    if (eventName === "fail") {
      res.fail(400, "bad input");
    } else if (eventName === "json") {
      res.success(JSON.stringify({ echo: req.data, count }), "json");
    } else if (eventName === "chat") {
      res.success(`express:${req.data}:${count}`, "text");
    } else {
      res.success(`${decode(req.context.userId)}|${eventName}`, "text");
    }
  },
  onConnected(req) {
    print({
      event: "connected",
      userId: decode(req.context.userId),
      rawUserId: req.context.userId,
      connectionId: req.context.connectionId,
      count: req.context.states.count ?? null,
    });
  },
  onGroupJoined(req) {
    print({ event: "joined", group: req.group, connectionId: req.context.connectionId });
  },
  onGroupLeft(req) {
    print({ event: "left", group: req.group, connectionId: req.context.connectionId });
  },
  onDisconnected(req) {
    print({ event: "disconnected", userId: decode(req.context.userId), reason: req.reason ?? "" });
  },
});

const app = express();
app.use(handler.getMiddleware());
const server = app.listen(0, "127.0.0.1", () => print({ port: server.address().port }));
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
