// The Socket.IO 4.8 peer of the benchmark: the same broadcast / rooms semantics as webpubsub.
//
//   node socketio-server.js PORT
//
// * A client joins the room named by ?room=NAME in its handshake URL (webpubsub: the
//   webpubsub.group claim of its token).
// * POST /publish            -> io.emit("m", body)              (webpubsub: REST :send)
//   POST /publish?room=NAME  -> io.to(NAME).emit("m", body)     (webpubsub: REST groups/NAME/:send)
//   Both answer 202 once the message is handed to Socket.IO, as webpubsub does.
// * A client that emits ("s", data) sends data to everyone in its room, itself included
//   (webpubsub: sendToGroup without noEcho).
// Defaults otherwise (ws transport, no compression), bound to 127.0.0.1 only.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);

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
httpServer.keepAliveTimeout = 0; // the publisher keeps one connection for a whole run

const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === "string" && room) {
    socket.join(room);
    socket.on("s", (data) => io.to(room).emit("m", data));
  }
});

// The same listen backlog as webpubsub (4096), so handshake bursts compare like with like.
httpServer.listen(port, "127.0.0.1", 4096, () => {
  console.log(`listening on ${httpServer.address().port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
