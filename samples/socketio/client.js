// Azure's Socket.IO quickstart client: `node client.js http://127.0.0.1:8080`.
const io = require("socket.io-client");

const socket = io(process.argv[2], { path: "/clients/socketio/hubs/Hub" });

// Receives a message from the server
socket.on("hello", (arg) => {
  console.log(arg); // Prints "world"
  // The chat sample: say something, hear it back from the app server, leave
  socket.emit("chat message", "hi from the quickstart");
});

socket.on("chat message", (msg) => {
  console.log("chat:", msg);
  socket.disconnect();
});

// Sends a message to the server
socket.emit("howdy", "stranger");
