// Negotiate, then connect to the service (not to this app): polling first, then WebSocket.
const messages = document.getElementById("messages");

function show(text, note) {
  const item = document.createElement("li");
  item.textContent = text;
  if (note) item.className = "note";
  messages.appendChild(item);
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = document.getElementById("username").value;
  const answer = await fetch(`/negotiate?username=${encodeURIComponent(username)}`);
  const { endpoint, path, token } = await answer.json();
  const socket = io(endpoint, { path, query: { access_token: token } });
  window.chatSocket = socket; // for the tests

  socket.on("connect", () => {
    document.getElementById("login").hidden = true;
    document.getElementById("chat").hidden = false;
    show(`connected as ${username}`, true);
  });
  socket.io.engine.on("upgrade", (transport) => {
    document.getElementById("transport").textContent = transport.name;
  });
  socket.on("new message", ({ user, text }) => show(`${user}: ${text}`));
  socket.on("user joined", (user) => show(`${user} joined`, true));
  socket.on("user left", (user) => show(`${user} left`, true));

  document.getElementById("chat").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const input = document.getElementById("text");
    socket.emit("new message", input.value);
    input.value = "";
  });
});
