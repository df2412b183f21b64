// The Socket.IO peer app (socketio-server.js) served through webpubsub instead of holding its
// clients itself: `useAzureSocketIO` hands them to the service (Web PubSub for Socket.IO).
//
//   node socketio-azure.js PORT CONNECTION_STRING
//
// Clients connect to the service at /clients/socketio/hubs/bench (Engine.IO over WebSocket)
// and join the room of ?room=NAME; POST /publish[?room=NAME] here emits to all (or the room),
// which the service fans out. Answers 202 once the service has accepted the broadcast (the
// adapter's send-to-all request answered), so the publisher is paced by the service as it is
// by plain Socket.IO's synchronous emit, instead of piling requests up in this process.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { useAzureSocketIO } = require("@azure/web-pubsub-socket.io");

const port = Number(process.argv[2] || 0);
const connectionString = process.argv[3];

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.method !== "POST" || url.pathname !== "/publish") {
    res.writeHead(404, { "Content-Length": "0" });
    res.end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const room = url.searchParams.get("room");
    (room ? io.to(room) : io).emit("m", body);
    const sent = broadcasts;
    broadcasts = [];
    Promise.all(sent).then(() => {
      res.writeHead(202, { "Content-Length": "0" });
      res.end();
    });
  });
});
httpServer.keepAliveTimeout = 0;

const io = new Server(httpServer, { perMessageDeflate: false, serveClient: false });
let broadcasts = []; // the adapter's broadcasts started by the request being handled

io.on("connection", (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === "string" && room) {
    socket.join(room);
    socket.on("s", (data) => io.to(room).emit("m", data));
  }
});

async function main() {
  await useAzureSocketIO(io, { hub: "bench", connectionString });
  // The Web PubSub adapter's broadcast is async (a REST request to the service) and emit()
  // drops its promise: keep it, so the publish request can wait for it.
  const adapter = io.of("/").adapter;
  const broadcast = adapter.broadcast.bind(adapter);
  adapter.broadcast = (packet, opts) => {
    const done = broadcast(packet, opts);
    broadcasts.push(done);
    return done;
  };
  httpServer.listen(port, "127.0.0.1", 4096, () => {
    console.log(`listening on ${httpServer.address().port}`);
  });
}

main();

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
