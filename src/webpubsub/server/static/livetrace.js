// Live Trace viewer: reads /livetrace/stream (server-sent events) and renders the records.
// Plain JavaScript, no build step. Every value from the service goes through textContent.
"use strict";

(() => {
  const MAX_RECORDS = 10000; // captured records kept for filtering and download
  const MAX_ROWS = 1000; // rows kept in the table
  const CATEGORY_NAMES = {
    ConnectivityLogs: "Connectivity",
    MessagingLogs: "Messaging",
    HttpRequestLogs: "HTTP requests",
    EventHandlerLogs: "Event handler",
  };

  const $ = (id) => document.getElementById(id);
  const categories = (document.body.dataset.categories || "").split(",").filter(Boolean);
  const state = {
    records: [],
    pending: [],
    paused: false,
    source: null,
    enabled: new Set(categories),
    text: { hub: "", user: "", connection: "", group: "", text: "" },
    counts: { open: 0, closed: 0, in: 0, out: 0, http: 0, upstream: 0 },
    dropped: 0,
    frame: 0,
  };

  // -- the stream -----------------------------------------------------------------------

  function connect() {
    disconnect();
    const query = $("f-preview").checked ? "?preview=1" : "";
    const source = new EventSource("/livetrace/stream" + query);
    state.source = source;
    setStatus("connecting", "Connecting…");
    source.addEventListener("hello", () => setStatus("live", "Live"));
    source.addEventListener("records", (event) => receive(JSON.parse(event.data)));
    source.addEventListener("dropped", (event) => {
      state.dropped = JSON.parse(event.data).dropped;
      updateCounters();
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("error", "Signed out: reload to sign in again");
      } else {
        setStatus("connecting", "Reconnecting…");
      }
    };
  }

  function disconnect() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  function setStatus(kind, text) {
    $("status").className = "status " + kind;
    $("status-text").textContent = text;
  }

  function receive(batch) {
    for (const record of batch) {
      count(record);
      state.records.push(record);
      state.pending.push(record);
    }
    if (state.records.length > MAX_RECORDS) {
      state.records.splice(0, state.records.length - MAX_RECORDS);
    }
    if (!state.frame) state.frame = requestAnimationFrame(flush);
  }

  function count(record) {
    const c = state.counts;
    switch (record.operationName) {
      case "ConnectionStarted": c.open++; break;
      case "ConnectionEnded": c.closed++; break;
      case "MessageReceived": c.in++; break;
      case "MessageSent": c.out += record.recipients || 0; break;
    }
    if (record.category === "HttpRequestLogs") c.http++;
    if (record.category === "EventHandlerLogs") c.upstream++;
  }

  // -- filtering ------------------------------------------------------------------------

  function contains(value, wanted) {
    return !wanted || (value != null && String(value).toLowerCase().includes(wanted));
  }

  function matches(record) {
    const t = state.text;
    return (
      state.enabled.has(record.category) &&
      contains(record.hub, t.hub) &&
      contains(record.userId, t.user) &&
      contains(record.connectionId, t.connection) &&
      contains(record.group, t.group) &&
      contains(JSON.stringify(record), t.text)
    );
  }

  // -- rendering ------------------------------------------------------------------------

  function flush() {
    state.frame = 0;
    const rows = $("rows");
    const fresh = state.pending.filter(matches);
    state.pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0 && i >= fresh.length - MAX_ROWS; i--) {
      fragment.appendChild(row(fresh[i], true));
    }
    rows.insertBefore(fragment, rows.firstChild);
    while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
    updateCounters();
  }

  function rerender() {
    const rows = $("rows");
    rows.textContent = "";
    state.pending = [];
    const shown = state.records.filter(matches).slice(-MAX_ROWS);
    const fragment = document.createDocumentFragment();
    for (let i = shown.length - 1; i >= 0; i--) fragment.appendChild(row(shown[i], false));
    rows.appendChild(fragment);
    updateCounters();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function pick(filter, value) {
    // A click on a hub, connection or user filters by it.
    if (value == null || value === "") return el("span", null, "–");
    const span = el("span", "pick", value);
    span.title = value + " (click to filter by " + filter + ")";
    span.addEventListener("click", () => {
      $("f-" + filter).value = value;
      readFilters();
    });
    return span;
  }

  function cell(className, child) {
    const td = el("td", className);
    td.appendChild(child);
    return td;
  }

  function row(record, fresh) {
    const tr = el("tr", "level-" + record.level + (fresh ? " fresh" : ""));
    const time = (record.time || "").slice(11, 23);
    tr.appendChild(el("td", "time", time));
    const tag = el("span", "tag " + record.category, CATEGORY_NAMES[record.category] || record.category);
    tr.appendChild(cell(null, tag));
    tr.appendChild(el("td", null, record.operationName));
    tr.appendChild(cell(null, pick("hub", record.hub)));
    tr.appendChild(cell("id", pick("connection", record.connectionId)));
    tr.appendChild(cell(null, pick("user", record.userId)));
    tr.appendChild(cell("details", details(record)));
    tr.title = record.message || "";
    return tr;
  }

  function kv(parent, key, value) {
    if (value == null || value === "") return;
    const span = el("span", "kv");
    span.appendChild(el("span", "k", key));
    span.appendChild(typeof value === "object" ? value : document.createTextNode(String(value)));
    parent.appendChild(span);
  }

  function statusCode(status) {
    const text = status == null ? "error" : String(status);
    const kind = status == null ? "cx" : "c" + text[0];
    return el("span", "code " + kind, text);
  }

  function details(r) {
    const box = document.createDocumentFragment();
    const wrap = el("span");
    switch (r.category) {
      case "ConnectivityLogs":
        kv(wrap, "subprotocol", r.subprotocol || "none");
        kv(wrap, "ip", r.ip);
        kv(wrap, "groups", r.groups && r.groups.join(", "));
        kv(wrap, "reason", r.reason);
        break;
      case "MessagingLogs":
        kv(wrap, r.kind ? "type" : "target", r.kind || r.target);
        if (r.kind) kv(wrap, "target", r.target);
        kv(wrap, "size", r.size != null ? r.size + " B" : null);
        kv(wrap, "data", r.dataType);
        kv(wrap, "recipients", r.recipients);
        break;
      case "HttpRequestLogs":
        kv(wrap, r.method, r.url);
        kv(wrap, "status", statusCode(r.status));
        kv(wrap, "latency", r.duration + " ms");
        kv(wrap, "op", r.operation);
        break;
      case "EventHandlerLogs":
        kv(wrap, "event", r.event);
        kv(wrap, "status", statusCode(r.status));
        kv(wrap, "latency", r.duration + " ms");
        kv(wrap, "url", r.url);
        kv(wrap, "error", r.error);
        break;
      default:
        wrap.textContent = r.message || "";
    }
    box.appendChild(wrap);
    if (r.preview != null) box.appendChild(el("span", "preview", r.preview));
    return box;
  }

  function updateCounters() {
    const c = state.counts;
    $("stat-open").textContent = c.open;
    $("stat-closed").textContent = c.closed;
    $("stat-in").textContent = c.in;
    $("stat-out").textContent = c.out;
    $("stat-http").textContent = c.http;
    $("stat-upstream").textContent = c.upstream;
    $("stat-dropped").textContent = state.dropped;
    $("stat-dropped").parentElement.classList.toggle("active", state.dropped > 0);
    const shown = $("rows").childElementCount;
    $("shown").textContent = shown + " of " + state.records.length + " records shown";
    $("empty").classList.toggle("hidden", shown > 0);
  }

  // -- controls -------------------------------------------------------------------------

  function readFilters() {
    for (const name of Object.keys(state.text)) {
      state.text[name] = $("f-" + name).value.trim().toLowerCase();
    }
    rerender();
  }

  function buildCategoryChips() {
    const box = $("categories");
    for (const category of categories) {
      const button = el("button", "toggle");
      button.type = "button";
      button.dataset.category = category;
      button.setAttribute("aria-pressed", "true");
      button.appendChild(el("span", "swatch " + category));
      button.appendChild(document.createTextNode(CATEGORY_NAMES[category] || category));
      button.addEventListener("click", () => {
        const on = !state.enabled.has(category);
        if (on) state.enabled.add(category);
        else state.enabled.delete(category);
        button.setAttribute("aria-pressed", String(on));
        rerender();
      });
      box.appendChild(button);
    }
  }

  function togglePause() {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (state.paused) {
      disconnect();
      setStatus("paused", "Paused");
    } else {
      connect();
    }
  }

  function clearAll() {
    state.records = [];
    state.pending = [];
    state.counts = { open: 0, closed: 0, in: 0, out: 0, http: 0, upstream: 0 };
    state.dropped = 0;
    rerender();
  }

  function download() {
    const body = JSON.stringify(state.records, null, 2);
    const blob = new Blob([body], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "livetrace-" + new Date().toISOString().replace(/[:.]/g, "-") + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function start() {
    buildCategoryChips();
    for (const name of Object.keys(state.text)) {
      $("f-" + name).addEventListener("input", readFilters);
    }
    $("f-preview").addEventListener("change", () => {
      if (!state.paused) connect();
    });
    $("pause").addEventListener("click", togglePause);
    $("clear").addEventListener("click", clearAll);
    $("download").addEventListener("click", download);
    updateCounters();
    connect();
  }

  start();
})();
