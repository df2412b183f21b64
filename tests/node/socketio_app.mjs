// A Socket.IO app server on the official packages (socket.io + @azure/web-pubsub-socket.io),
// driven by tests/compat/test_socketio_*.py over JSON lines (see common.mjs). It talks to our
// service only through the tunnel that useAzureSocketIO opens.
//
// ops: start {hub, connectionString, pingInterval?, pingTimeout?}  -> resolves once the tunnel
//      is connected (useAzureSocketIO awaits it); emit {event, args, room?, nsp?}; and the
//      acceptance checks' helpers below. Events: {"type":"event","event":"connection",...}.
import { createRequire } from "node:module";
import { Server } from "socket.io";
import { emit, fromWire, installedVersions, serve } from "./common.mjs";

const require = createRequire(import.meta.url);
const { useAzureSocketIO } = require("@azure/web-pubsub-socket.io");

let io;
const sockets = new Map(); // socket.id -> socket

const bin = (value) => fromWire(value, (buffer) => buffer);

function attach(nsp) {
  io.of(nsp).on("connection", (socket) => {
    sockets.set(socket.id, socket);
    emit({
      type: "event",
      event: "connection",
      nsp,
      id: socket.id,
      connId: socket.conn.id,
      query: socket.handshake.query,
      auth: socket.handshake.auth,
      claims: socket.request?.claims ?? null,
    });
    socket.emit("hello", "world");
    socket.onAny((event, ...args) => {
      const last = args[args.length - 1];
      if (typeof last === "function") {
        args.pop();
        if (event === "add") {
          last(args[0] + args[1]);
        } else {
          last(...args); // echo back, binary included
        }
      }
      emit({ type: "event", event: "message", nsp, id: socket.id, name: event, args });
    });
    socket.on("disconnect", (reason) => {
      sockets.delete(socket.id);
      emit({ type: "event", event: "disconnect", nsp, id: socket.id, reason });
    });
  });
}

function target(params) {
  let scope = io.of(params.nsp ?? "/");
  for (const room of params.rooms ?? []) {
    scope = scope.to(room);
  }
  for (const room of params.except ?? []) {
    scope = scope.except(room);
  }
  return scope;
}

serve(
  {
    async start({ hub, connectionString, pingInterval, pingTimeout, namespaces, refuse }) {
      const options = {};
      if (pingInterval) options.pingInterval = pingInterval;
      if (pingTimeout) options.pingTimeout = pingTimeout;
      io = new Server(0, options);
      if (refuse) {
        // check 12: a middleware that refuses with data
        io.use((socket, next) => next(Object.assign(new Error("unauthorized"), { data: { code: 7 } })));
      }
      for (const nsp of namespaces ?? ["/"]) {
        attach(nsp);
      }
      await useAzureSocketIO(io, { hub, connectionString });
      return "started";
    },
    async emit(params) {
      target(params).emit(params.event, ...bin(params.args ?? []));
      return "emitted";
    },
    async emitWithAck(params) {
      // A broadcast with acknowledgements (the service's :invoke): the answers, or how it failed.
      try {
        return { answers: await target(params).timeout(params.timeout ?? 3000).emitWithAck(params.event, ...bin(params.args ?? [])) };
      } catch (err) {
        return { error: err.message, answers: err.responses ?? null };
      }
    },
    async socketEmit({ socket: id, event, args }) {
      sockets.get(id).emit(event, ...bin(args ?? []));
      return "emitted";
    },
    async socketBroadcast({ socket: id, event, args, rooms }) {
      let scope = sockets.get(id).broadcast;
      if (rooms) {
        scope = sockets.get(id);
        for (const room of rooms) scope = scope.to(room);
      }
      scope.emit(event, ...bin(args ?? []));
      return "emitted";
    },
    async askClient({ socket: id, event, args, timeout }) {
      return await sockets.get(id).timeout(timeout ?? 3000).emitWithAck(event, ...bin(args ?? []));
    },
    async join({ socket: id, room }) {
      await sockets.get(id).join(room);
      return "joined";
    },
    async leave({ socket: id, room }) {
      await sockets.get(id).leave(room);
      return "left";
    },
    async rooms({ socket: id }) {
      return [...sockets.get(id).rooms];
    },
    async disconnectSocket({ socket: id, close }) {
      sockets.get(id).disconnect(close ?? false);
      return "disconnected";
    },
    async disconnectAll({ nsp, close }) {
      io.of(nsp ?? "/").disconnectSockets(close ?? false);
      return "disconnected";
    },
    async emitMany({ count }) {
      // check 14: broadcasts to all and to a room, interleaved
      for (let i = 0; i < count; i++) {
        io.emit("bc", i);
        io.to("g").emit("gc", i);
      }
      return "emitted";
    },
    async socketsJoin({ room, into }) {
      (into ? io.in(into) : io).socketsJoin(room);
      return "joined";
    },
    async socketsLeave({ room, from }) {
      io.in(from).socketsLeave(room);
      return "left";
    },
    async fetchLocal() {
      return (await io.local.fetchSockets()).map((socket) => socket.id);
    },
    async fetchAll() {
      try {
        await io.fetchSockets();
        return "fetched";
      } catch (err) {
        return { error: err.message };
      }
    },
    async count({ nsp }) {
      return io.of(nsp ?? "/").sockets.size;
    },
  },
  {
    versions: installedVersions([
      "socket.io",
      "socket.io-client",
      "@azure/web-pubsub-socket.io",
      "@azure/web-pubsub-client",
    ]),
    onClose: async () => {
      if (io) {
        io.close();
      }
    },
  },
);
