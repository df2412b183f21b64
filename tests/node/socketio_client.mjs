// socket.io-client 4.8 clients against our service, driven by tests/compat/test_socketio.py
// over JSON lines (see common.mjs). Each client has a name; what it receives is reported as
// {"type":"event","client":name,"event":...}.
//
// A client answers the server's acks by rule: "q" -> n + 1, "silent" -> never, else echo.
import { io } from "socket.io-client";
import { emit, fromWire, installedVersions, serve } from "./common.mjs";

const clients = new Map();
const bin = (value) => fromWire(value, (buffer) => buffer);

function report(name, event, extra) {
  emit({ type: "event", client: name, event, ...extra });
}

serve(
  {
    async connect({ name, url, path, transports, query, auth, mute }) {
      const options = { path, forceNew: true, reconnection: false, query, auth };
      if (transports) options.transports = transports;
      const socket = io(url, options);
      clients.set(name, socket);
      socket.onAny((event, ...args) => {
        const last = args[args.length - 1];
        if (typeof last === "function") {
          args.pop();
          if (mute) {
            // a client that never acknowledges anything
          } else if (event === "q") last(args[0] + 1);
          else if (event !== "silent") last(...args);
        }
        report(name, "message", { name: event, args });
      });
      socket.on("disconnect", (reason) => report(name, "disconnect", { reason }));
      socket.io.engine?.on("upgrade", (transport) => report(name, "upgrade", { transport: transport.name }));
      socket.io.engine?.on("ping", () => report(name, "ping"));
      return await new Promise((resolve, reject) => {
        socket.once("connect", () => {
          resolve({ id: socket.id, engineId: socket.io.engine.id, transport: socket.io.engine.transport.name });
        });
        socket.once("connect_error", (err) => {
          report(name, "connect_error", { message: err.message, data: err.data ?? null });
          reject(Object.assign(new Error(err.message), { code: err.data?.code }));
        });
      });
    },
    async emit({ name, event, args }) {
      clients.get(name).emit(event, ...bin(args ?? []));
      return "sent";
    },
    async emitWithAck({ name, event, args, timeout }) {
      const socket = clients.get(name);
      return await socket.timeout(timeout ?? 3000).emitWithAck(event, ...bin(args ?? []));
    },
    async transport({ name }) {
      return clients.get(name).io.engine.transport.name;
    },
    async disconnect({ name }) {
      clients.get(name).disconnect();
      return "disconnected";
    },
    async closeEngine({ name }) {
      clients.get(name).io.engine.close();
      return "closed";
    },
  },
  {
    versions: installedVersions(["socket.io-client"]),
    onClose: async () => {
      for (const socket of clients.values()) socket.disconnect();
    },
  },
);
