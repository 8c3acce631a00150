// The chat page: log in, then a live socket to the viewer's room that reconnects and resumes.
"use strict";

const TOKEN_KEY = "cinema.token";
const LOGIN_URL = "/auth/v1/jwt/login";
const LOGOUT_URL = "/auth/v1/jwt/logout";
// Close codes after which retrying with the same token cannot help (see fastapi_ws/protocol.py).
const NO_RETRY = new Set([4400, 4401, 4403, 4404]);
const REASONS = {
  TOKEN_EXPIRED: "Your session has expired: please log in again.",
  TOKEN_REVOKED: "You were logged out: please log in again.",
  FORBIDDEN: "This room is not yours.",
  ROOM_NOT_FOUND: "There is no such room.",
};

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

let socket = null;
let lastSeq = null;
let attempts = 0;
let unsent = null; // the last chat text sent and not yet seen back, put back if refused
let retryTimer = null;
// A superuser may open a viewer's room with ?room=<user id>.
const roomUserId = new URLSearchParams(location.search).get("room");

function setState(state, text) {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = text;
}

function notice(text) {
  const box = $("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

function tokenClaims(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

function showLogin(message) {
  $("room").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setState("offline", "Offline");
}

function showRoom() {
  $("login").hidden = true;
  $("room").hidden = false;
  $("logout").hidden = false;
}

async function logIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const body = new URLSearchParams({ username: $("email").value, password: $("password").value });
  let response;
  try {
    response = await fetch(LOGIN_URL, { method: "POST", body });
  } catch {
    $("login-error").textContent = "The server cannot be reached. Try again in a moment.";
    return;
  }
  if (response.status === 429) {
    $("login-error").textContent = "Too many attempts: wait a little and try again.";
    return;
  }
  if (!response.ok) {
    $("login-error").textContent = response.status === 400
      ? "Wrong e-mail or password, or the e-mail is not confirmed yet."
      : "Login failed. Try again in a moment.";
    return;
  }
  const { access_token: token } = await response.json();
  sessionStorage.setItem(TOKEN_KEY, token);
  lastSeq = null;
  $("messages").replaceChildren();
  showRoom();
  connect();
}

function logOut() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(retryTimer);
  if (socket) socket.close(1000, "logout");
  socket = null;
  if (token) {
    fetch(LOGOUT_URL, { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }
  $("messages").replaceChildren();
  showLogin();
}

function renderMessage(message) {
  const mine = roomUserId ? message.author === "support" : message.author === "viewer";
  const item = el("li", `message ${message.kind}${mine ? " mine" : ""}`);
  item.dataset.seq = message.seq;
  const who = { system: "Cinema", viewer: roomUserId ? "Viewer" : "You", support: "Support" }[message.author] || "";
  const time = new Date(message.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(el("div", "meta", `${who} · ${time}`), el("div", "body", message.body));
  if (message.kind === "recommendations" && message.items.length) {
    const cards = el("div", "cards");
    for (const film of message.items) {
      const card = el("article", "card");
      card.append(
        // No score: it ranks the picks among themselves, it is no star rating; the reason
        // says why the film was picked.
        el("div", "title", film.title || "Untitled"),
        el("div", "reason", film.reason || ""),
      );
      cards.append(card);
    }
    item.append(cards);
  }
  return item;
}

function append(message) {
  // A resumed stream never repeats a message; this guards against a late duplicate anyway.
  if (lastSeq !== null && message.seq <= lastSeq) return;
  const list = $("messages");
  list.append(renderMessage(message));
  lastSeq = message.seq;
  list.scrollTop = list.scrollHeight;
}

function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin();
  clearTimeout(retryTimer);
  setState("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws/v1/chat/connect`);
  socket = ws;
  ws.onopen = () => {
    const auth = { type: "auth", token };
    if (roomUserId) auth.room_user_id = roomUserId;
    ws.send(JSON.stringify(auth));
    if (lastSeq !== null) ws.send(JSON.stringify({ type: "resume", last_seq: lastSeq }));
  };
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "history") {
      frame.messages.forEach(append);
      attempts = 0;
      notice("");
      setState("live", "Live");
    } else if (frame.type === "message") {
      if (frame.kind === "chat" && frame.body === unsent) unsent = null;
      append(frame);
    } else if (frame.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    } else if (frame.type === "error") {
      notice(frame.detail === "RATE_LIMITED" ? "Slow down a little." : `Not sent (${frame.detail}).`);
      // The refused message goes back in the box, unless the viewer is typing another.
      const input = $("chat-text");
      if (unsent !== null && !input.value) input.value = unsent;
      unsent = null;
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    if (NO_RETRY.has(event.code)) {
      if (event.code === 4401) {
        sessionStorage.removeItem(TOKEN_KEY);
        return showLogin(REASONS[event.reason] || "Please log in.");
      }
      setState("offline", "Offline");
      return notice(REASONS[event.reason] || `Closed (${event.reason || event.code}).`);
    }
    // Exponential backoff with jitter, so a restarted server is not stormed by every tab.
    const delay = Math.min(15000, 500 * 2 ** attempts) * (0.75 + Math.random() / 2);
    attempts += 1;
    setState("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s`);
    retryTimer = setTimeout(connect, delay);
  };
}

function sendChat(event) {
  event.preventDefault();
  const input = $("chat-text");
  const text = input.value.trim();
  if (!text) return;
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    notice("Not connected: your message was not sent.");
    return;
  }
  socket.send(JSON.stringify({ type: "chat", text }));
  unsent = text;
  input.value = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", logIn);
  $("chat-form").addEventListener("submit", sendChat);
  $("logout").addEventListener("click", logOut);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token && tokenClaims(token).exp * 1000 > Date.now()) {
    showRoom();
    connect();
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
  }
});
