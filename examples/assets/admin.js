// The operator's page: everything it shows comes from /admin/api/, with the token the
// operator typed once (kept for this tab only). Text is always set as text.

const KEY = "chatroom-admin-token";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);

let selected = null;
let timer = null;

function token() {
  return sessionStorage.getItem(KEY);
}

function showLogin(message) {
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  $("console").hidden = true;
  $("login").hidden = false;
  $("token-hint").textContent = message || "";
  $("token-input").focus();
}

class Unauthorized extends Error {}

async function api(path, body) {
  const init = { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/admin/api/${path}`, init);
  if (response.status === 401) {
    throw new Unauthorized();
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.error || `HTTP ${response.status}`);
  }
  return data;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function renderRooms(rooms) {
  const list = $("admin-rooms");
  list.replaceChildren();
  for (const { room, members } of rooms) {
    const li = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.textContent = room;
    open.addEventListener("click", () => {
      selected = room;
      $("room-hint").textContent = "";
      refresh();
    });
    const count = document.createElement("span");
    count.textContent = plural(members, "member", "members");
    li.append(open, count);
    list.append(li);
  }
  $("admin-no-rooms").hidden = rooms.length > 0;
}

function renderRoom(details) {
  $("room-panel").hidden = false;
  $("room-title").textContent = details.room;
  const list = $("room-members");
  list.replaceChildren();
  for (const member of details.members) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "member-name";
    name.textContent = member.name;
    if (!member.present) {
      const away = document.createElement("span");
      away.className = "away";
      away.textContent = "away";
      name.append(away);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => kick(details.room, member.name));
    li.append(name, remove);
    list.append(li);
  }
}

async function kick(room, name) {
  try {
    const { removed } = await api(`rooms/${encodeURIComponent(room)}/kick`, { name });
    $("room-hint").textContent = removed ? "" : `${name} was no longer in the room.`;
  } catch (e) {
    handle(e, $("room-hint"));
  }
  refresh();
}

// One line chart: the values over time, scaled to the largest.
function draw(canvas, points, format) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const values = points.filter((p) => p.v !== null);
  canvas.dataset.points = String(values.length);
  if (values.length === 0) {
    return;
  }
  const now = Date.now();
  const span = 10 * 60 * 1000;
  const max = Math.max(...values.map((p) => p.v), 1e-9) * 1.15;
  const x = (t) => width - ((now - t) / span) * width;
  const y = (v) => height - 4 - (v / max) * (height - 16);
  g.strokeStyle = "#dde2ea";
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, y(0));
  g.lineTo(width, y(0));
  g.stroke();
  g.strokeStyle = "#2f6fde";
  g.fillStyle = "#2f6fde";
  g.lineWidth = 2;
  g.beginPath();
  values.forEach((p, i) => (i === 0 ? g.moveTo(x(p.t), y(p.v)) : g.lineTo(x(p.t), y(p.v))));
  g.stroke();
  const last = values[values.length - 1];
  g.beginPath();
  g.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI);
  g.fill();
  g.fillStyle = "#667085";
  g.font = "11px system-ui, sans-serif";
  g.fillText(format(max / 1.15), 4, 12);
}

function formatValue(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toFixed(3);
}

function renderStats(stats) {
  const store = $("store");
  store.textContent = `store ${stats.store}`;
  store.className = `status ${stats.store === "connected" ? "open" : "closed"}`;
  const series = (pick) => stats.samples.map((s) => ({ t: s.at_ms, v: pick(s) }));
  const charts = [
    ["connections", (s) => s.connections, (v) => v.toFixed(0)],
    ["messages", (s) => s.messages_per_sec, formatValue],
    ["latency", (s) => s.latency_p99_ms, formatValue],
  ];
  for (const [name, pick, format] of charts) {
    const points = series(pick);
    draw($(`chart-${name}`), points, format);
    const last = points.length ? points[points.length - 1].v : null;
    $(`now-${name}`).textContent = last === null ? "–" : format(last);
  }
}

function handle(error, hint) {
  if (error instanceof Unauthorized) {
    showLogin("That token was not accepted.");
    return;
  }
  hint.textContent = error.message;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [rooms, stats] = await Promise.all([api("rooms"), api("stats")]);
    renderRooms(rooms.rooms);
    renderStats(stats);
    if (selected !== null) {
      try {
        renderRoom(await api(`rooms/${encodeURIComponent(selected)}`));
      } catch (e) {
        if (e instanceof Unauthorized) throw e;
        $("room-panel").hidden = true;
        selected = null;
      }
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      handle(e);
      return;
    }
    $("room-hint").textContent = e.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  $("login").hidden = true;
  $("console").hidden = false;
  refresh();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  $("token-input").value = "";
  start();
});

$("post-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("post-input");
  const text = input.value;
  if (!text.trim() || selected === null) return;
  try {
    await api(`rooms/${encodeURIComponent(selected)}/messages`, { text });
    input.value = "";
    $("room-hint").textContent = "";
  } catch (e) {
    handle(e, $("room-hint"));
  }
});

if (token()) {
  start();
} else {
  showLogin();
}
