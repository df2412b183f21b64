// The Socket.IO peer app (socketio-server.js) served through webpubsub instead of holding its
// clients itself: `useAzureSocketIO` hands them to the service (Web PubSub for Socket.IO).
//
//   node socketio-azure.js PORT CONNECTION_STRING
//
// Clients connect to the service at /clients/socketio/hubs/bench (Engine.IO over WebSocket)
// and join the room of ?room=NAME; POST /publish[?room=NAME] here emits to all (or the room),
// which the service fans out. Answers 202 once the emit is handed to Socket.IO.
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
    res.writeHead(202, { "Content-Length": "0" });
    res.end();
  });
});
httpServer.keepAliveTimeout = 0;

const io = new Server(httpServer, { perMessageDeflate: false, serveClient: false });

io.on("connection", (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === "string" && room) {
    socket.join(room);
    socket.on("s", (data) => io.to(room).emit("m", data));
  }
});

async function main() {
  await useAzureSocketIO(io, { hub: "bench", connectionString });
  httpServer.listen(port, "127.0.0.1", 4096, () => {
    console.log(`listening on ${httpServer.address().port}`);
  });
}

main();

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
