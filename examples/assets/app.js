// The example site's pages: the lobby and a room (name prompt, name taken, chat).
// All user text is rendered with textContent, never as HTML.
import { ChatClient, nameProblem } from "/static/chatroom.js";

const $ = (id) => document.getElementById(id);
const REMEMBERED_NAME = "chatroom.name";

const POLITE = {
  rate_limited: "You are sending messages a little too quickly. Please wait a moment.",
  message_too_long: "That message is too long.",
  empty_message: "Type a message first.",
  not_connected: "Not connected right now, so that was not sent. Reconnecting…",
  invalid_name: "That name cannot be used.",
  too_many_rooms: "This server has as many rooms as it takes. Please join one of the active rooms.",
};

const polite = (err) =>
  err.code === "name_taken" || err.code === "forbidden" ? err.message : POLITE[err.code] ?? err.message;

const namesUrl = (room, name) =>
  `/rooms/${encodeURIComponent(room)}/names/${encodeURIComponent(name.normalize("NFC").trim())}`;

async function availability(room, name) {
  try {
    const answer = await fetch(namesUrl(room, name));
    return answer.ok ? await answer.json() : { available: true, reason: null };
  } catch {
    return { available: true, reason: null }; // the join will tell
  }
}

function lobby() {
  const input = $("room-input");
  $("room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = input.value.normalize("NFC").trim();
    if (!room) {
      $("room-hint").textContent = "Please enter a room name.";
      return;
    }
    location.href = `/room/${encodeURIComponent(room)}`;
  });
  const list = $("rooms");
  // The listing comes a page at a time (largest rooms first); "More rooms" asks for
  // one more page on every refresh from then on.
  const PAGE = 50;
  let pages = 1;
  const more = $("more-rooms");
  more.addEventListener("click", () => {
    pages += 1;
    refresh();
  });
  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) {
      again = true; // asked for while one runs: once more when it is done
      return;
    }
    refreshing = true;
    try {
      // Counts may change between pages: a room that moved is shown once.
      const rooms = new Map();
      let query = `limit=${PAGE}`;
      let next = null;
      for (let page = 0; page < pages && query; page++) {
        const response = await fetch(`/rooms?${query}`);
        for (const r of await response.json()) if (!rooms.has(r.room)) rooms.set(r.room, r);
        next = /<\?([^>]*)>;\s*rel="next"/.exec(response.headers.get("link") || "");
        query = next ? next[1] : null;
      }
      more.hidden = !next;
      list.replaceChildren(
        ...[...rooms.values()].map(({ room, members }) => {
          const li = document.createElement("li");
          const a = document.createElement("a");
          a.href = `/room/${encodeURIComponent(room)}`;
          a.textContent = room;
          const count = document.createElement("span");
          count.className = "muted";
          count.textContent = members === 1 ? "1 member" : `${members} members`;
          li.append(a, count);
          return li;
        }),
      );
      $("no-rooms").hidden = rooms.size > 0;
    } catch {
      // The server is restarting; try again on the next tick.
    } finally {
      refreshing = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }
  refresh();
  setInterval(refresh, 3000);
}

function room() {
  const roomName = decodeURIComponent(location.pathname.slice("/room/".length));
  document.title = `${roomName} · chatroom`;
  $("prompt-room").textContent = roomName;
  $("room-title").textContent = roomName;
  const messages = $("messages");
  const seen = new Set();
  let chat = null;

  function show(section) {
    for (const id of ["prompt", "chat", "ended"]) $(id).hidden = id !== section;
  }

  function prompt({ taken = null, hint = "" } = {}) {
    show("prompt");
    $("taken").hidden = taken === null;
    $("taken-name").textContent = taken ?? "";
    $("name-hint").textContent = hint;
    const input = $("name-input");
    if (taken !== null) input.value = taken;
    input.focus();
    input.select();
  }

  function line(kind, parts, ts) {
    const li = document.createElement("li");
    li.className = kind;
    if (ts) {
      const time = document.createElement("time");
      const at = new Date(ts);
      time.dateTime = at.toISOString();
      time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      li.append(time);
    }
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text;
      li.append(span);
    }
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    messages.append(li);
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  }

  function render(e) {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    switch (e.type) {
      case "message":
        line(e.from === chat.name ? "message own" : "message", [["from", e.from], ["text", e.text]], e.ts);
        break;
      case "joined":
        line("system", [["note", `${e.name} joined`]], e.ts);
        break;
      case "left":
        line("system", [["note", `${e.name} left`]], e.ts);
        break;
      case "renamed":
        line("system", [["note", `${e.from} is now ${e.to}`]], e.ts);
        break;
    }
  }

  function members() {
    $("members").replaceChildren(
      ...chat.members.map((name) => {
        const li = document.createElement("li");
        li.textContent = name;
        if (name === chat.name) li.className = "me";
        return li;
      }),
    );
    $("member-count").textContent = `(${chat.members.length})`;
  }

  function start(name) {
    if (chat) {
      chat.joinAs(name);
      return;
    }
    chat = new ChatClient({ room: roomName, name });
    chat.on("welcome", (w) => {
      localStorage.setItem(REMEMBERED_NAME, w.name);
      $("room-title").textContent = w.room;
      if (!w.resumed) {
        messages.replaceChildren();
        seen.clear();
      }
      if (w.gap && seen.size > 0) line("system", [["note", "Some messages could not be recovered."]]);
      for (const e of w.history) render(e);
      members();
      show("chat");
      $("message-input").focus();
    });
    chat.on("event", (e) => {
      render(e);
      if (e.type !== "message") members();
    });
    chat.on("rejected", (err) => {
      if (err.code === "name_taken") prompt({ taken: chat.name });
      else prompt({ hint: polite(err) });
    });
    chat.on("status", (s) => {
      const status = $("status");
      status.className = `status ${s}`;
      status.textContent = { open: "connected", connecting: "connecting…", reconnecting: "reconnecting…", closed: "disconnected" }[s];
    });
    chat.on("error", (err) => {
      $("send-error").textContent = polite(err);
    });
    chat.on("end", ({ code }) => {
      if (code === 1000) return;
      $("ended-text").textContent =
        code === 4001
          ? "This chat was opened in another tab or window, so it was closed here."
          : "You were removed from this room.";
      show("ended");
    });
    chat.connect();
  }

  $("name-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("name-input").value;
    const problem = nameProblem(name);
    if (problem) {
      $("name-hint").textContent = problem;
      return;
    }
    const { available, reason } = await availability(roomName, name);
    if (!available && reason === "name_taken") {
      prompt({ taken: name.normalize("NFC").trim() });
      return;
    }
    $("name-hint").textContent = "";
    start(name);
  });

  $("name-input").addEventListener("input", () => {
    const value = $("name-input").value;
    $("name-hint").textContent = value ? nameProblem(value) ?? "" : "";
  });

  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message-input");
    const text = input.value;
    if (!text.trim()) {
      $("send-error").textContent = POLITE.empty_message;
      return;
    }
    $("send-error").textContent = "";
    input.value = "";
    chat.send(text).catch((err) => {
      if (err.code === "not_connected" || err.code === "rate_limited") input.value ||= text;
      $("send-error").textContent = polite(err);
    });
  });

  $("rename-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("rename-input");
    const problem = nameProblem(input.value);
    if (problem) {
      $("rename-error").textContent = problem;
      return;
    }
    chat
      .rename(input.value)
      .then(() => {
        input.value = "";
        $("rename-error").textContent = "";
        localStorage.setItem(REMEMBERED_NAME, chat.name);
      })
      .catch((err) => {
        $("rename-error").textContent = polite(err);
      });
  });

  $("leave").addEventListener("click", () => {
    chat?.leave();
    location.href = "/";
  });

  // A tab that holds a resume token (a reload) goes straight back in; a remembered
  // name is entered automatically unless it is taken; otherwise, ask.
  const remembered = localStorage.getItem(REMEMBERED_NAME);
  if (ChatClient.hasSession(roomName) && remembered) {
    start(remembered);
  } else if (remembered && !nameProblem(remembered)) {
    availability(roomName, remembered).then(({ available, reason }) => {
      if (available) start(remembered);
      else if (reason === "name_taken") prompt({ taken: remembered });
      else prompt();
    });
  } else {
    prompt();
  }
}

if (document.body.dataset.page === "lobby") lobby();
if (document.body.dataset.page === "room") room();
