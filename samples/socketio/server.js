// Azure's Socket.IO quickstart app server, unchanged but for where the connection string
// comes from: `node server.js "<connection string>"` (webpubsub serve prints one).
const { Server } = require("socket.io");
const { useAzureSocketIO } = require("@azure/web-pubsub-socket.io");

async function main() {
  const io = new Server(Number(process.env.PORT ?? 3000));
  await useAzureSocketIO(io, { hub: "Hub", connectionString: process.argv[2] });
  io.on("connection", (socket) => {
    // Sends a message to the client
    socket.emit("hello", "world");

    // Receives a message from the client
    socket.on("howdy", (arg) => {
      console.log(arg); // Prints "stranger"
    });

    // The chat sample: every chat message goes to everyone
    socket.on("chat message", (msg) => io.emit("chat message", msg));
  });
  console.log("app server ready");
}

main();
