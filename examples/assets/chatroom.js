// chatroom.js: a dependency-free client for the chatroom wire protocol (docs/protocol.md).
//
//   import { ChatClient } from "/static/chatroom.js";
//   const chat = new ChatClient({ room: "General", name: "Alice" });
//   chat.on("welcome", (w) => ...);      // also after every successful resume
//   chat.on("event", (e) => ...);        // message, joined, left, renamed: each id once, in order
//   chat.on("status", (s) => ...);       // "connecting" | "open" | "reconnecting" | "closed"
//   chat.on("rejected", (err) => ...);   // the join was refused: {code, message}; fix and
//                                        //   call chat.joinAs(otherName) on the same socket
//   chat.on("error", (err) => ...);      // other {code, message} answers the server sent
//   chat.on("end", (why) => ...);        // the session is over for good: {code, reason}
//   chat.connect();
//   await chat.send("hello");            // resolves with the event id, rejects with {code, message}
//   await chat.rename("Bob");
//   chat.leave();
//
// It reconnects with exponential backoff and resumes with the token of its last welcome
// (kept in sessionStorage, so a reload resumes too) and the last event id it saw; an
// event whose id it has already seen is never delivered twice.

const RESUME_KEY = (room) => `chatroom.resume.${room.toLowerCase()}`;

export class ChatClient {
  /**
   * @param {object} options
   * @param {string} options.room   room to join
   * @param {string} options.name   display name to join with
   * @param {string} [options.url]  WebSocket URL (default: ws(s)://<this host>/ws)
   * @param {Storage} [options.storage] where the resume token lives (default sessionStorage)
   */
  constructor({ room, name, url, storage } = {}) {
    this.room = room;
    this.name = name;
    this.url = url ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    this.storage = storage ?? window.sessionStorage;
    this.key = RESUME_KEY(room);
    this.lastId = 0;
    this.members = [];
    this.handlers = {};
    this.pending = new Map();
    this.nextRef = 1;
    this.backoff = 500;
    this.joined = false;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
    this.token = null;
  }

  /** Whether this tab holds a resumable session for `room` (e.g. after a reload). */
  static hasSession(room, storage = window.sessionStorage) {
    return storage.getItem(RESUME_KEY(room)) !== null;
  }

  /** Registers a handler for "welcome", "event", "status", "error" or "end". */
  on(kind, handler) {
    (this.handlers[kind] ??= []).push(handler);
    return this;
  }

  emit(kind, value) {
    for (const handler of this.handlers[kind] ?? []) handler(value);
  }

  /** Opens the connection and joins (or resumes, if this tab holds a token). */
  connect() {
    this.stopped = false;
    // Leaving the page (reload, navigation, back-forward cache) closes the socket
    // cleanly; the membership stays resumable for the grace period.
    window.addEventListener("pagehide", () => this.socket?.close());
    window.addEventListener("pageshow", (e) => {
      if (e.persisted && !this.stopped) this.open(true);
    });
    this.open(false);
  }

  open(again) {
    clearTimeout(this.timer);
    this.emit("status", again ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = 500;
      this.emit("status", "open");
      this.sendJoin();
    };
    socket.onmessage = (m) => this.receive(m.data);
    socket.onclose = (e) => {
      if (socket !== this.socket) return;
      this.closed(e.code, e.reason);
    };
  }

  /** After a "rejected" join: tries again with another name on the same connection. */
  joinAs(name) {
    this.name = name;
    this.resuming = false;
    if (!this.raw({ type: "join", room: this.room, name, ref: "join" })) this.open(true);
  }

  sendJoin() {
    const saved = this.storage.getItem(this.key);
    const frame = { type: "join", room: this.room, name: this.name, ref: "join" };
    this.resuming = false;
    if (saved) {
      // A page that was just (re)loaded has seen nothing yet (`lastId` 0): it asks for
      // everything retained. A reconnect asks for what it missed.
      frame.resume = JSON.parse(saved).token;
      frame.since = this.lastId;
      this.resuming = true;
    }
    this.raw(frame);
  }

  raw(frame) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  request(frame) {
    return new Promise((resolve, reject) => {
      const ref = this.nextRef++;
      if (!this.joined || !this.raw({ ...frame, ref })) {
        reject({ code: "not_connected", message: "not connected; retrying shortly" });
        return;
      }
      this.pending.set(ref, { resolve, reject });
    });
  }

  /** Sends a message; resolves with its event id. */
  send(text) {
    return this.request({ type: "send", text });
  }

  /** Changes the display name; resolves with the `renamed` event id. */
  rename(name) {
    return this.request({ type: "rename", name });
  }

  /** Leaves the room for good and closes the connection. */
  leave() {
    this.raw({ type: "leave" });
    this.forget();
    this.stop({ code: 1000, reason: "left" });
  }

  stop(why) {
    this.stopped = true;
    this.joined = false;
    clearTimeout(this.timer);
    this.socket?.close();
    this.emit("status", "closed");
    this.emit("end", why);
  }

  forget() {
    this.token = null;
    this.storage.removeItem(this.key);
  }

  remember() {
    if (this.token) {
      this.storage.setItem(this.key, JSON.stringify({ token: this.token, since: this.lastId }));
    }
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.welcome(frame);
        break;
      case "ack":
        this.pending.get(frame.ref)?.resolve(frame.id);
        this.pending.delete(frame.ref);
        break;
      case "error":
        this.failed(frame);
        break;
      case "message":
      case "joined":
      case "left":
      case "renamed":
        this.event(frame);
        break;
      default:
        break; // frame types from a newer server
    }
  }

  welcome(w) {
    // A fresh join starts a new timeline for this client (the room may even be a new
    // one with ids from 1): the page redraws from `history`. A resume continues it.
    const resumed = this.resuming;
    this.resuming = false;
    if (!resumed) this.lastId = 0;
    this.joined = true;
    this.name = w.name;
    this.members = [...w.members];
    this.room = w.room;
    // After a resume, history holds exactly what was missed (or, with a gap, what is
    // retained); anything already seen is skipped by id.
    const fresh = w.history.filter((e) => e.id > this.lastId);
    this.emit("welcome", { ...w, resumed, history: fresh });
    for (const e of fresh) this.lastId = Math.max(this.lastId, e.id);
    this.lastId = Math.max(this.lastId, w.last_id);
    this.token = w.resume;
    this.remember();
  }

  event(e) {
    if (e.id <= this.lastId) return; // never twice
    this.lastId = e.id;
    if (e.type === "joined") this.members.push(e.name);
    if (e.type === "left") this.members = this.members.filter((m) => m !== e.name);
    if (e.type === "renamed") {
      this.members = this.members.map((m) => (m === e.from ? e.to : m));
      if (e.from === this.name) this.name = e.to;
    }
    this.remember();
    this.emit("event", e);
  }

  failed(err) {
    if (err.ref !== undefined && this.pending.has(err.ref)) {
      this.pending.get(err.ref).reject(err);
      this.pending.delete(err.ref);
      return;
    }
    if (err.ref === "join" && err.code === "resume_failed") {
      // The old session is gone: join afresh under the same name.
      this.forget();
      this.resuming = false;
      this.raw({ type: "join", room: this.room, name: this.name, ref: "join" });
      return;
    }
    if (err.ref === "join" && err.code === "rate_limited") {
      // The room is busy (or takes no more joins this second): try the same join
      // again after a while, backing off as a reconnect does.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.sendJoin(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
      return;
    }
    if (err.ref === "join" && err.code !== "already_joined") {
      this.emit("rejected", err);
      return;
    }
    this.emit("error", err);
  }

  closed(code, reason) {
    this.joined = false;
    clearTimeout(this.timer); // a join retry belonged to the socket that closed
    for (const { reject } of this.pending.values()) {
      reject({ code: "not_connected", message: "connection lost" });
    }
    this.pending.clear();
    if (this.stopped) return;
    if (code === 4001 || code === 4003) {
      if (code === 4003) this.forget();
      this.stop({ code, reason });
      return;
    }
    this.emit("status", "reconnecting");
    this.timer = setTimeout(() => this.open(true), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }
}

/** Client-side hint for a display name; the server decides. Returns an error text or null. */
export function nameProblem(name, max = 32) {
  const trimmed = name.normalize("NFC").trim();
  if (trimmed.length === 0) return "Please enter a name.";
  if ([...trimmed].length > max) return `Names can have at most ${max} characters.`;
  if (/[\p{Cc}\p{Cf}\p{Co}\p{Zl}\p{Zp}]/u.test(trimmed)) return "Names cannot contain control or invisible characters.";
  return null;
}
