// baton's live view: one conversation, its delegation tree and a task
// timeline, kept current from the server's event stream.
//
// Plain JavaScript, no build step, no library. The token comes from the
// URL fragment (#token=...), which browsers never send to the server; it
// is kept in sessionStorage for this tab and removed from the address bar.
// The event stream is read with fetch() rather than EventSource so the
// token travels in the Authorization header, never in a URL.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out", "interrupted"]);
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  conversation: null, // id, e.g. "conv-1"
  lastSeq: 0,         // the last event seen, for Last-Event-ID
  stream: null,       // AbortController of the open stream
  tree: null,         // the last /tree snapshot
  treeTimer: null,
  eventCount: 0,
  clock: 0,           // the newest event's time (ms since the conversation began)
};

// ---- HTTP -----------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(data && data.message ? data.message : res.status + " " + res.statusText);
    err.code = data && data.code;
    throw err;
  }
  return data;
}

function showError(err) {
  const el = $("error");
  if (!err) { el.hidden = true; return; }
  el.textContent = err.code ? err.code + ": " + err.message : String(err.message || err);
  el.hidden = false;
}

// ---- start ------------------------------------------------------------------

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) sessionStorage.setItem("baton-token", token);
  state.token = sessionStorage.getItem("baton-token");
  const conv = params.get("conv");
  // Keep the token out of the address bar (and of screenshots).
  history.replaceState(null, "", conv ? "#conv=" + conv : location.pathname);
  return conv;
}

async function start() {
  const wanted = readFragment();
  if (!state.token) { $("login").hidden = false; return; }
  let list;
  try {
    list = await api("GET", "/v1/conversations");
  } catch (err) {
    if (err.code === "unauthorized") { sessionStorage.removeItem("baton-token"); $("login").hidden = false; }
    showError(err);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  fillSelect($("agent-select"), list.agents, list.agents[0]);
  let id = wanted && list.conversations.some((c) => c.id === wanted) ? wanted : null;
  if (!id && list.conversations.length) id = list.conversations[list.conversations.length - 1].id;
  if (!id) id = (await api("POST", "/v1/conversations", {})).id;
  await refreshConversationList(id);
  open(id);
}

function fillSelect(select, values, selected) {
  select.replaceChildren(...values.map((v) => {
    const o = document.createElement("option");
    o.value = o.textContent = v;
    o.selected = v === selected;
    return o;
  }));
}

async function refreshConversationList(selected) {
  const list = await api("GET", "/v1/conversations");
  fillSelect($("conversation-select"), list.conversations.map((c) => c.id), selected);
  $("conversation-select").querySelectorAll("option").forEach((o) => {
    const c = list.conversations.find((c) => c.id === o.value);
    if (c) o.textContent = c.id + " (" + c.agent + ")";
  });
}

// ---- one conversation -------------------------------------------------------

function open(id) {
  if (state.stream) state.stream.abort();
  state.conversation = id;
  state.lastSeq = 0;
  state.tree = null;
  state.eventCount = 0;
  state.clock = 0;
  history.replaceState(null, "", "#conv=" + id);
  $("transcript").replaceChildren();
  $("events").replaceChildren();
  $("tree").replaceChildren();
  $("timeline").replaceChildren();
  refreshTree();
  connect(id);
}

// Reads the SSE stream; reconnects with Last-Event-ID, so nothing is lost.
async function connect(id) {
  const ctl = new AbortController();
  state.stream = ctl;
  while (!ctl.signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + state.token, Accept: "text/event-stream" };
      if (state.lastSeq) headers["Last-Event-ID"] = String(state.lastSeq);
      const res = await fetch("/v1/conversations/" + id + "/events", { headers, signal: ctl.signal });
      if (!res.ok) {
        const data = await res.json().catch(() => ({}));
        showError({ code: data.code, message: data.message || res.statusText });
        if (res.status === 404 || res.status === 401) { setConn("offline"); return; }
        throw new Error(res.statusText);
      }
      setConn("live");
      showError(null);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          onFrame(frame);
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
    }
    if (ctl.signal.aborted) return;
    setConn("reconnecting");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function setConn(s) {
  const el = $("conn-state");
  el.dataset.state = s;
  el.textContent = s;
}

function onFrame(frame) {
  let id = null, event = "message", data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith("id: ")) id = Number(line.slice(4));
    else if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const ev = JSON.parse(data);
  if (event === "dropped") {
    logEvent("dropped " + ev.count + " events (" + ev.from_seq + "–" + ev.to_seq + "): reloading history", "dropped");
    reloadHistory();
    refreshTree();
    return;
  }
  if (id !== null) state.lastSeq = id;
  onEvent(ev);
}

function onEvent(ev) {
  state.clock = Math.max(state.clock, ev.at_ms);
  logEvent(describe(ev));
  switch (ev.type) {
    case "user_message":
      say("user", ev.text);
      break;
    case "assistant_message":
      if (ev.task === null) say("assistant", ev.text);
      break;
    case "task_finished":
      if (ev.outcome && ev.outcome.status !== "succeeded") note(ev.task_id + " " + ev.outcome.status.replace("_", " "));
      break;
    case "turn_failed":
      if (ev.task === null) note("turn failed: " + ev.error);
      break;
  }
  if (ev.type.startsWith("task_") || ev.type.startsWith("approval_") || ev.type === "turn_finished" || ev.type === "idle") {
    scheduleTreeRefresh();
  }
}

function describe(ev) {
  const who = ev.agent ? ev.agent + (ev.task ? "@" + ev.task : "") + " " : "";
  const what = {
    task_created: () => ev.task_id + " → " + (ev.kind.agent || ev.kind.tool),
    task_started: () => ev.task_id + " attempt " + ev.attempt,
    task_finished: () => ev.task_id + " " + ev.outcome.status,
    task_retrying: () => ev.task_id + " retry after " + ev.backoff_ms + " ms",
    tool_call_started: () => ev.tool,
    tool_call_finished: () => ev.tool + (ev.ok ? "" : " (error)"),
    idle: () => ev.running_tasks + " running",
    turn_started: () => "turn " + ev.turn,
    turn_finished: () => "turn " + ev.turn + ", " + (ev.usage.prompt_tokens + ev.usage.completion_tokens) + " tokens",
  }[ev.type];
  return "#" + ev.seq + " " + (ev.at_ms / 1000).toFixed(3) + "s " + ev.type + " " + who + (what ? what() : "");
}

function logEvent(text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  const list = $("events");
  list.append(li);
  while (list.children.length > 500) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
  state.eventCount += 1;
  $("event-count").textContent = "(" + state.eventCount + ")";
}

function say(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  $("transcript").append(li);
  li.scrollIntoView({ block: "nearest" });
}

function note(text) {
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  $("transcript").append(li);
}

// After lost events the transcript is rebuilt from the history.
async function reloadHistory() {
  const h = await api("GET", "/v1/conversations/" + state.conversation + "/history");
  $("transcript").replaceChildren();
  for (const m of h.messages) {
    if (m.role === "user") say("user", m.content);
    else if (m.role === "assistant" && m.content) say("assistant", m.content);
    else if (m.role === "task_result" && m.task_status !== "succeeded") note(m.task_id + " " + m.task_status);
  }
}

// ---- the tree and the timeline ----------------------------------------------

// At most one /tree request every 150 ms, however many events arrive.
function scheduleTreeRefresh() {
  if (state.treeTimer) return;
  state.treeTimer = setTimeout(() => { state.treeTimer = null; refreshTree(); }, 150);
}

async function refreshTree() {
  const id = state.conversation;
  try {
    const tree = await api("GET", "/v1/conversations/" + id + "/tree");
    if (id !== state.conversation) return;
    state.tree = tree;
    renderTree(tree);
    renderTimeline(tree);
  } catch (err) {
    showError(err);
  }
}

function renderTree(tree) {
  const all = flatten(tree.children);
  const done = all.filter((n) => TERMINAL.has(n.task.status)).length;
  $("tree-summary").textContent = tree.root + ": " + all.length + " tasks, " + done + " ended";
  $("tokens").textContent = tree.tokens_used + " tokens";
  $("tree").replaceChildren(...tree.children.map(renderNode));
}

function renderNode(node) {
  const t = node.task;
  const li = document.createElement("li");
  li.className = "task";
  li.dataset.taskId = t.id;
  li.dataset.status = t.status;
  li.dataset.source = t.source;
  const row = document.createElement("div");
  row.className = "task-row";
  const dot = span("dot");
  const name = span("source", t.source);
  const id = span("task-id", t.id);
  const status = span("status", t.status.replace("_", " "));
  const meta = span("meta", [
    "attempts " + t.attempts,
    t.tokens + " tokens",
    t.duration_ms !== null ? t.duration_ms + " ms" : "running for " + Math.max(0, now() - t.created_ms) + " ms",
  ].join(" · "));
  row.append(dot, name, id, status, meta);
  if (t.detail) row.title = t.detail;
  if (t.status === "awaiting_approval") {
    row.append(button("approve", t.id, () => steer(t.id, "approve")));
    row.append(button("reject", t.id, () => steer(t.id, "reject")));
  }
  if (!TERMINAL.has(t.status)) {
    row.append(button("cancel", t.id, () => steer(t.id, "cancel")));
  }
  li.append(row);
  if (node.children.length) {
    const ul = document.createElement("ul");
    ul.append(...node.children.map(renderNode));
    li.append(ul);
  }
  return li;
}

function button(action, taskId, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = action;
  b.dataset.taskId = taskId;
  b.textContent = action;
  b.addEventListener("click", onClick);
  return b;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  if (text !== undefined) s.textContent = text;
  return s;
}

function flatten(nodes, depth = 1, out = []) {
  for (const n of nodes) { out.push(Object.assign({ depth }, n)); flatten(n.children, depth + 1, out); }
  return out;
}

// The conversation's clock: the newest event's or task's time.
function now() {
  let t = state.clock;
  if (!state.tree) return t;
  for (const n of flatten(state.tree.children)) t = Math.max(t, n.task.finished_ms || n.task.created_ms);
  return t;
}

function end(task, clock) {
  return task.finished_ms !== null ? task.finished_ms : clock;
}

// The critical path: from the root down, always the child that ended last.
function criticalPath(nodes, clock, out = new Set()) {
  if (!nodes.length) return out;
  const last = nodes.reduce((a, b) => (end(b.task, clock) > end(a.task, clock) ? b : a));
  out.add(last.task.id);
  return criticalPath(last.children, clock, out);
}

function renderTimeline(tree) {
  const all = flatten(tree.children);
  const box = $("timeline");
  if (!all.length) { box.replaceChildren(); return; }
  const clock = Math.max(now(), ...all.map((n) => n.task.created_ms + 1));
  const t0 = Math.min(...all.map((n) => n.task.created_ms));
  const span_ = Math.max(1, clock - t0);
  const critical = criticalPath(tree.children, clock);
  const rows = all.map((n) => {
    const row = document.createElement("div");
    row.className = "tl-row";
    const label = document.createElement("div");
    label.className = "tl-label";
    label.textContent = "\u00a0".repeat(2 * (n.depth - 1)) + n.task.source + " " + n.task.id;
    const track = document.createElement("div");
    track.className = "tl-track";
    const bar = document.createElement("div");
    bar.className = "tl-bar" + (critical.has(n.task.id) ? " critical" : "");
    bar.dataset.status = n.task.status;
    bar.style.left = ((n.task.created_ms - t0) / span_) * 100 + "%";
    bar.style.width = ((end(n.task, clock) - n.task.created_ms) / span_) * 100 + "%";
    bar.title = n.task.id + " " + n.task.status + ": " + n.task.created_ms + "–" + end(n.task, clock) + " ms";
    track.append(bar);
    row.append(label, track);
    return row;
  });
  const axis = document.createElement("div");
  axis.className = "tl-axis";
  axis.textContent = span_ + " ms";
  box.replaceChildren(...rows, axis);
}

// ---- actions --------------------------------------------------------------------

// Cancels, approves or rejects a task.
async function steer(taskId, action) {
  try {
    await api("POST", "/v1/conversations/" + state.conversation + "/tasks/" + taskId + "/" + action);
    refreshTree();
  } catch (err) {
    showError(err);
  }
}

async function send() {
  const input = $("message-input");
  const text = input.value.trim();
  if (!text) return;
  try {
    await api("POST", "/v1/conversations/" + state.conversation + "/messages", { text });
    input.value = "";
    showError(null);
  } catch (err) {
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("message-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("message-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
  });
  $("conversation-select").addEventListener("change", (e) => open(e.target.value));
  $("new-conversation").addEventListener("click", async () => {
    try {
      const c = await api("POST", "/v1/conversations", { agent: $("agent-select").value });
      await refreshConversationList(c.id);
      open(c.id);
    } catch (err) {
      showError(err);
    }
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("baton-token", $("token-input").value.trim());
    $("token-input").value = "";
    start();
  });
  window.addEventListener("hashchange", () => {
    const conv = new URLSearchParams(location.hash.slice(1)).get("conv");
    if (location.hash.includes("token=")) start();
    else if (conv && conv !== state.conversation) open(conv);
  });
  start();
});
