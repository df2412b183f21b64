// The "chat with negotiate" sample of @azure/web-pubsub-socket.io, against webpubsub serve:
//   node server.js "<connection string>"        (PORT=3000 by default)
// The page asks /negotiate for the service's endpoint, path and a token for its user, then
// connects straight to the service (long-polling first, then WebSocket), cross-origin.
const path = require("node:path");
const http = require("node:http");
const express = require("express");
const { Server } = require("socket.io");
const { useAzureSocketIO, negotiate } = require("@azure/web-pubsub-socket.io");

async function main() {
  const app = express();
  const server = http.createServer(app);
  const io = new Server(server);
  const azure = { hub: "eio_hub", connectionString: process.argv[2] };
  await useAzureSocketIO(io, azure);

  // negotiate() takes the options (or the Server, when the package's own socket.io is the
  // app's: @azure/web-pubsub-socket.io 1.2.1 pins socket.io ~4.7, so with 4.8 it is not).
  app.get("/negotiate", negotiate(azure, (req) => ({ userId: req.query.username })));
  app.use(express.static(path.join(__dirname, "public")));

  io.on("connection", (socket) => {
    const user = socket.request.claims?.userId?.[0] ?? "anonymous";
    socket.broadcast.emit("user joined", user);
    socket.on("new message", (text) => io.emit("new message", { user, text }));
    socket.on("disconnect", () => socket.broadcast.emit("user left", user));
  });

  server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
    console.log(`chat on http://127.0.0.1:${server.address().port}`);
  });
}

main();
