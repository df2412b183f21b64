// An app server for MQTT clients built with the official @azure/web-pubsub-express handler,
// for tests/compat/test_mqttjs.py. Usage: node express_mqtt.mjs <hub>. Prints {"port": N}
// once listening, then one JSON line per event it sees (with what express made of it).
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const hub = process.argv[2] ?? "chat";
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const handler = new WebPubSubEventHandler(hub, {
  path: "/eventhandler/",
  handleConnect(req, res) {
    print({ event: "connect", context: req.context, mqtt: req.mqtt ?? null, subprotocols: req.subprotocols });
    const username = req.mqtt?.username;
    if (username === "intruder") {
      res.fail(401);
    } else if (username === "banned") {
      res.failWith({ mqtt: { code: 138, reason: "banned" } });
    } else {
      res.success({
        roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"],
        mqtt: { userProperties: [{ name: "k", value: "v" }] },
      });
    }
  },
  handleUserEvent(req, res) {
    print({ event: "user", name: req.context.eventName, dataType: req.dataType, data: req.data,
            clientProtocol: req.context.clientProtocol });
    if (req.context.eventName === "fail") {
      res.fail(400);
    } else {
      res.success("pong", "text");
    }
  },
  onConnected(req) {
    print({ event: "connected", context: req.context });
  },
  onDisconnected(req) {
    print({ event: "disconnected", context: req.context, mqtt: req.mqtt ?? null, reason: req.reason ?? null });
  },
});

const app = express();
app.use(handler.getMiddleware());
const server = app.listen(0, "127.0.0.1", () => print({ port: server.address().port }));
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
