//! `chatroom-load`: drives a running chat server over real WebSockets (PROTOCOL.md) on
//! loopback addresses only, with every loop bounded in count and time.
//!
//! Scenarios: `burst` (R rooms × C clients × S senders × M messages, as fast as
//! possible), `steady` (one sender per room at a fixed rate for a fixed time), `idle`
//! (N connections joined and held; RSS per connection from /proc) and `churn`
//! (join/send/leave cycles at a given concurrency). Each message carries its send time,
//! so every delivery gives an end-to-end latency.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpSocket;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_with_config};

mod abuse;
mod http;
mod soak;

pub use abuse::{AbuseFigures, AbusePhase, AbusePlan};
pub use soak::{SoakFigures, SoakPlan, open_fds};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Each client's WebSocket read buffer.
const READ_BUFFER: usize = 8 * 1024;

/// The longest any scenario waits for deliveries after its last send.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// What to run. The fields are named as on the command line (`--rooms` etc.).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Scenario {
    /// R rooms × C clients, S of them sending M messages each, as fast as possible.
    Burst {
        rooms: u32,
        clients: u32,
        senders: u32,
        messages: u32,
    },
    /// R rooms × C clients, one sender per room at `rate` messages/s for `seconds`.
    Steady {
        rooms: u32,
        clients: u32,
        rate: u32,
        seconds: u32,
    },
    /// N connections joined into R rooms and held for `seconds`.
    Idle {
        connections: u32,
        rooms: u32,
        seconds: u32,
    },
    /// `cycles` join/send/leave cycles, `concurrency` at a time.
    Churn { cycles: u32, concurrency: u32 },
    /// Steady traffic, churn, drops and resumes, renames, stalled readers and invalid
    /// frames for a bounded time; then the server must be back where it started.
    Soak(SoakPlan),
    /// One big room's delivery latency alone and under three abuses.
    Abuse(AbusePlan),
}

/// The server under load.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its address (must be a loopback address).
    pub addr: SocketAddr,
    /// Its process id, for CPU time and RSS from /proc.
    pub pid: Option<u32>,
    /// The other nodes of a cluster: connections go round-robin over `addr` and these
    /// (the `n`th connection to the `n mod k`th address), so that the members of a
    /// room, its senders among them, are spread over the nodes.
    pub also: [Option<SocketAddr>; MORE],
    /// More processes whose CPU time counts as the server's (the other nodes, the
    /// cluster's Redis).
    pub also_pids: [Option<u32>; MORE],
}

/// How many more nodes (and processes) a [`Target`] can have.
pub const MORE: usize = 7;

impl Target {
    /// One server at `addr` (with its pid, for CPU time and memory).
    pub fn new(addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            addr,
            pid,
            also: [None; MORE],
            also_pids: [None; MORE],
        }
    }

    /// The address of the `n`th connection.
    pub fn addr_for(&self, n: u32) -> SocketAddr {
        let more: Vec<SocketAddr> = self.also.iter().flatten().copied().collect();
        match (n as usize) % (more.len() + 1) {
            0 => self.addr,
            i => more[i - 1],
        }
    }

    /// CPU seconds (user + system) of the server's processes so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let mut total = cpu_seconds(self.pid?)?;
        for pid in self.also_pids.iter().flatten() {
            total += cpu_seconds(*pid)?;
        }
        Some(total)
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Deliveries expected (each message × each member of its room).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries expected but neither received nor refused: `expected - delivered -
    /// refused x members per message`. Must be 0.
    pub lost: u64,
    /// Messages the server refused (the sender was answered `rate_limited`: its room,
    /// or on a cluster its connection's queue to Redis, was full). A refused message
    /// has no effect, so its deliveries are not expected.
    pub refused: u64,
    /// Wall time from the first send to the last delivery, in seconds.
    pub seconds: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_sec: f64,
    /// End-to-end latency percentiles in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Server CPU seconds (user + system) per million deliveries, if the pid was given.
    pub server_cpu_s_per_million: Option<f64>,
    /// Joins (or cycles, for churn) per second.
    pub joins_per_sec: f64,
    /// Connections held (idle).
    pub held: u64,
    /// Server RSS growth per held connection in bytes (idle, with a pid).
    pub rss_per_connection: Option<f64>,
    /// Server CPU microseconds (user + system) per cycle (churn, with a pid).
    pub server_cpu_us_per_cycle: Option<f64>,
    /// The soak scenario's figures.
    pub soak: Option<SoakFigures>,
    /// The abuse scenario's figures.
    pub abuse: Option<AbuseFigures>,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("scenario            {}\n", self.scenario);
        let row = |k: &str, v: String| format!("{k:<20}{v}\n");
        if self.expected > 0 {
            out += &row(
                "deliveries",
                format!(
                    "{} of {} (lost {})",
                    self.delivered, self.expected, self.lost
                ),
            );
            if self.refused > 0 {
                out += &row("refused messages", self.refused.to_string());
            }
        }
        if self.latency_us[3] > 0 {
            out += &row("deliveries/s", format!("{:.0}", self.deliveries_per_sec));
            let [p50, p99, p999, max] = self.latency_us;
            out += &row(
                "latency (µs)",
                format!("p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}"),
            );
        }
        if let Some(cpu) = self.server_cpu_s_per_million {
            out += &row("server CPU", format!("{cpu:.2} s per million deliveries"));
        }
        if self.joins_per_sec > 0.0 {
            out += &row("joins/s", format!("{:.0}", self.joins_per_sec));
        }
        if self.held > 0 {
            out += &row("held", self.held.to_string());
        }
        if let Some(us) = self.server_cpu_us_per_cycle {
            out += &row("server CPU", format!("{us:.0} µs per cycle"));
        }
        if let Some(rss) = self.rss_per_connection {
            out += &row("RSS/connection", format!("{:.0} bytes", rss));
        }
        if let Some(soak) = &self.soak {
            for (k, v) in soak.rows() {
                out += &row(k, v);
            }
        }
        if let Some(abuse) = &self.abuse {
            for (k, v) in abuse.rows() {
                out += &row(&k, v);
            }
        }
        out += &row("time", format!("{:.2} s", self.seconds));
        out
    }
}

/// Refuses anything but loopback targets.
pub fn check_target(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; chatroom-load only targets this machine"
        ))
    }
}

/// Raises this process's open-file limit as far as allowed; returns the new soft limit.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    rlimit::increase_nofile_limit(wanted).unwrap_or(1024)
}

/// (user + system) CPU seconds of a process, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// (user + system) CPU seconds from a `stat` file of /proc: `/proc/PID/stat`,
/// `/proc/self/stat`, `/proc/thread-self/stat`.
pub fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size of a process in bytes, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Opens a WebSocket to the chat endpoint from the `n`th source address (127.0.0.2,
/// 127.0.0.3, ...: about 28k ephemeral ports each), without joining.
pub(crate) async fn open(target: &Target, n: u32) -> Result<Socket, String> {
    open_with(target, n, None).await
}

/// [`open`], with this receive buffer size (`SO_RCVBUF`) if given.
pub(crate) async fn open_with(
    target: &Target,
    n: u32,
    recv_buffer: Option<u32>,
) -> Result<Socket, String> {
    let source_count = 200u32;
    let source = Ipv4Addr::new(
        127,
        0,
        (2 + n % source_count / 250) as u8,
        (2 + n % source_count % 250) as u8,
    );
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(bytes) = recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .map_err(|e| format!("bind a loopback source address: {e}"))?;
    let stream = socket
        .connect(target.addr_for(n))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let url = format!("ws://{}/ws", target.addr_for(n));
    // tungstenite zero-fills its whole read buffer before every read (128 KiB by
    // default): a small one keeps the generator's CPU for the server.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// Whether the server has ended `ws` (a close, an error or the end of the stream)
/// within `patience`, reading and discarding whatever the socket still holds.
pub(crate) async fn ended_within(ws: &mut Socket, patience: Duration) -> bool {
    tokio::time::timeout(patience, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Connects from the `n`th source address and joins `room` as `name`; a join refused
/// as `rate_limited` (the room's join rate) is tried again after a moment, as a client
/// would, for up to `DRAIN_LIMIT`.
async fn connect(target: &Target, n: u32, room: &str, name: &str) -> Socket {
    let mut ws = open(target, n).await.expect("connect");
    let join = serde_json::json!({"type": "join", "room": room, "name": name}).to_string();
    ws.send(Message::text(join.as_str())).await.expect("join");
    let give_up = Instant::now() + DRAIN_LIMIT;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"welcome""#) => return ws,
            Some(Ok(Message::Text(t)))
                if t.contains(r#""code":"rate_limited""#) && Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ws.send(Message::text(join.as_str())).await.expect("join");
            }
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"error""#) => {
                panic!("join refused: {t}")
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended while joining: {other:?}"),
        }
    }
}

/// Shared counters of a run.
struct Tally {
    start: Instant,
    delivered: AtomicU64,
    /// Messages answered `rate_limited` (refused, without effect).
    refused: AtomicU64,
    last_delivery_ns: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            start: Instant::now(),
            delivered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
        })
    }

    fn stamp(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn finish(
    name: &str,
    tally: &Tally,
    (expected, per_message): (u64, u64),
    first_send_ns: u64,
    cpu: Option<(&Target, f64)>,
) -> Report {
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    let last = tally.last_delivery_ns.load(Ordering::Relaxed);
    let seconds = (last.saturating_sub(first_send_ns)) as f64 / 1e9;
    let h = tally
        .latency
        .try_lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"));
    let server_cpu_s_per_million = cpu.and_then(|(target, before)| {
        let used = target.cpu_seconds()? - before;
        (delivered > 0).then(|| used / delivered as f64 * 1e6)
    });
    Report {
        scenario: name.into(),
        expected,
        delivered,
        lost: expected
            .saturating_sub(delivered)
            .saturating_sub(refused.saturating_mul(per_message)),
        refused,
        seconds,
        deliveries_per_sec: if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        latency_us: [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ],
        server_cpu_s_per_million,
        ..Report::default()
    }
}

/// Runs a scenario against `target`.
pub async fn run(scenario: &Scenario, target: Target) -> Report {
    match *scenario {
        Scenario::Burst {
            rooms,
            clients,
            senders,
            messages,
        } => burst(target, rooms, clients, senders, messages).await,
        Scenario::Steady {
            rooms,
            clients,
            rate,
            seconds,
        } => steady(target, rooms, clients, rate, seconds).await,
        Scenario::Idle {
            connections,
            rooms,
            seconds,
        } => idle(target, connections, rooms, seconds).await,
        Scenario::Churn {
            cycles,
            concurrency,
        } => churn(target, cycles, concurrency).await,
        Scenario::Soak(ref plan) => {
            let started = Instant::now();
            let figures = soak::soak(target, plan.clone()).await;
            Report {
                scenario: "soak".into(),
                expected: figures.events + figures.lost,
                delivered: figures.events,
                lost: figures.lost,
                seconds: started.elapsed().as_secs_f64(),
                soak: Some(figures),
                ..Report::default()
            }
        }
        Scenario::Abuse(ref plan) => {
            let started = Instant::now();
            let figures = abuse::abuse(target, plan.clone()).await;
            Report {
                scenario: "abuse".into(),
                expected: figures.phases.iter().map(|p| p.expected).sum(),
                delivered: figures.phases.iter().map(|p| p.delivered).sum(),
                lost: figures.lost,
                seconds: started.elapsed().as_secs_f64(),
                abuse: Some(figures),
                ..Report::default()
            }
        }
    }
}

/// Joins `rooms × clients` connections; returns them per room.
async fn populate(target: &Target, rooms: u32, clients: u32, tag: &str) -> (Vec<Vec<Socket>>, f64) {
    let started = Instant::now();
    let mut all = Vec::new();
    let mut n = 0;
    for r in 0..rooms {
        let mut members = Vec::new();
        for c in 0..clients {
            members.push(connect(target, n, &format!("{tag}-room-{r}"), &format!("c{c}")).await);
            n += 1;
        }
        all.push(members);
    }
    let joins = f64::from(rooms * clients) / started.elapsed().as_secs_f64();
    // Let the `joined` announcements reach everyone before timing starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (all, joins)
}

/// How the senders of a room pace their messages.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as the connection takes them, flushed once at the end.
    FlatOut,
    /// One message per period, each flushed at once.
    Every(Duration),
}

async fn burst(target: Target, rooms: u32, clients: u32, senders: u32, messages: u32) -> Report {
    let plan = Broadcast {
        name: "burst",
        rooms,
        clients,
        senders,
        messages,
        pace: Pace::FlatOut,
    };
    plan.run(target).await
}

async fn steady(target: Target, rooms: u32, clients: u32, rate: u32, seconds: u32) -> Report {
    let plan = Broadcast {
        name: "steady",
        rooms,
        clients,
        senders: 1,
        messages: rate.saturating_mul(seconds),
        pace: Pace::Every(Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))),
    };
    plan.run(target).await
}

/// R rooms × C clients, the first S clients of each room sending M messages each;
/// every client counts (and times) every message of its room.
struct Broadcast {
    name: &'static str,
    rooms: u32,
    clients: u32,
    senders: u32,
    messages: u32,
    pace: Pace,
}

impl Broadcast {
    async fn run(self, target: Target) -> Report {
        let (all, joins) = populate(&target, self.rooms, self.clients, self.name).await;
        let tally = Tally::new();
        let per_client = u64::from(self.senders.min(self.clients)) * u64::from(self.messages);
        let sending_time = match self.pace {
            Pace::FlatOut => Duration::ZERO,
            Pace::Every(period) => period * self.messages,
        };
        let deadline = Instant::now() + sending_time + DRAIN_LIMIT;
        let cpu = target.cpu_seconds();
        let first = tally.stamp();
        let mut tasks = Vec::new();
        for members in all {
            for (i, ws) in members.into_iter().enumerate() {
                let tally = tally.clone();
                if i as u32 >= self.senders {
                    tasks.push(tokio::spawn(async move {
                        receive(ws, per_client, tally, deadline).await;
                    }));
                    continue;
                }
                let (sink, stream) = ws.split();
                let (messages, pace) = (self.messages, self.pace);
                tasks.push(tokio::spawn(async move {
                    let reader = tokio::spawn(receive(stream, per_client, tally.clone(), deadline));
                    let mut sink = sink;
                    let _ = send_stamped(&mut sink, messages, pace, &tally).await;
                    let _ = reader.await;
                    let _ = sink.close().await;
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let expected = u64::from(self.rooms) * u64::from(self.clients) * per_client;
        // Each message goes to every member of its room.
        let per_message = u64::from(self.clients);
        let mut report = finish(
            self.name,
            &tally,
            (expected, per_message),
            first,
            cpu.map(|c| (&target, c)),
        );
        report.joins_per_sec = joins;
        report
    }
}

/// Sends `messages` messages whose text is the send time (ns since the run started).
async fn send_stamped<K>(
    sink: &mut K,
    messages: u32,
    pace: Pace,
    tally: &Tally,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    K: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut tick = match pace {
        Pace::FlatOut => None,
        Pace::Every(period) => {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            Some(tick)
        }
    };
    for _ in 0..messages {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        let frame = format!(r#"{{"type":"send","text":"{}"}}"#, tally.stamp());
        match tick {
            None => sink.feed(Message::text(frame)).await?,
            Some(_) => sink.send(Message::text(frame)).await?,
        }
    }
    sink.flush().await
}

/// The send time carried by a `message` event (its text), if `frame` is one.
/// No JSON parse: the load generator must stay cheaper than the server it measures.
/// The server writes `"type"` first and a member's `"text"` last, so both checks are
/// anchored at the ends of the frame; anything else falls back to a substring search.
/// Inside JSON strings quotes are escaped, so the patterns only match structure.
fn sent_at(frame: &str) -> Option<Option<u64>> {
    const KIND: &str = r#"{"type":"message""#;
    const TEXT: &str = r#""text":""#;
    if !frame.starts_with(KIND) && !frame.contains(r#""type":"message""#) {
        return None;
    }
    if let Some(body) = frame.strip_suffix(r#""}"#) {
        let digits = body.len() - body.bytes().rev().take_while(u8::is_ascii_digit).count();
        if body[..digits].ends_with(TEXT) {
            return Some(body[digits..].parse().ok());
        }
    }
    let text = frame.split_once(TEXT).map(|(_, rest)| rest);
    Some(
        text.and_then(|t| t.split_once('"'))
            .and_then(|(digits, _)| digits.parse().ok()),
    )
}

/// Reads until `expected` messages arrived (or `deadline` passed), recording the
/// latency of each (its text is the send time in ns since the run started).
async fn receive<S>(mut stream: S, expected: u64, tally: Arc<Tally>, deadline: Instant) -> u64
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut got = 0u64;
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut last = 0;
    // One timer for the whole run, not one per frame.
    let counting = async {
        while got < expected {
            let Some(Ok(msg)) = stream.next().await else {
                break;
            };
            let Message::Text(text) = msg else { continue };
            if text.contains(r#""code":"rate_limited""#) {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(sent) = sent_at(&text) else { continue };
            if let Some(sent) = sent {
                last = tally.stamp();
                let _ = local.record((last.saturating_sub(sent) / 1000).max(1));
            }
            got += 1;
        }
    };
    let _ = tokio::time::timeout_at(deadline.into(), counting).await;
    tally.last_delivery_ns.fetch_max(last, Ordering::Relaxed);
    tally.delivered.fetch_add(got, Ordering::Relaxed);
    let _ = tally.latency.lock().await.add(&local);
    got
}

async fn idle(target: Target, connections: u32, rooms: u32, seconds: u32) -> Report {
    let before = target.pid.and_then(rss_bytes);
    let started = Instant::now();
    let mut held = Vec::with_capacity(connections as usize);
    for n in 0..connections {
        let room = format!("idle-room-{}", n % rooms.max(1));
        held.push(connect(&target, n, &room, &format!("c{n}")).await);
    }
    let joins = f64::from(connections) / started.elapsed().as_secs_f64();
    // Hold them, reading whatever arrives (joined announcements, pings), bounded in time.
    let hold_until = Instant::now() + Duration::from_secs(u64::from(seconds));
    let mut readers = Vec::new();
    for mut ws in held {
        readers.push(tokio::spawn(async move {
            let mut alive = true;
            while Instant::now() < hold_until {
                match tokio::time::timeout(
                    hold_until.saturating_duration_since(Instant::now()),
                    ws.next(),
                )
                .await
                {
                    Ok(Some(Ok(_))) => continue,
                    Ok(_) => {
                        alive = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            (alive, ws)
        }));
    }
    let mut still = Vec::new();
    for r in readers {
        if let Ok((true, ws)) = r.await {
            still.push(ws);
        }
    }
    let after = target.pid.and_then(rss_bytes);
    let report = Report {
        scenario: "idle".into(),
        held: still.len() as u64,
        joins_per_sec: joins,
        seconds: started.elapsed().as_secs_f64(),
        rss_per_connection: before
            .zip(after)
            .map(|(b, a)| (a as f64 - b as f64) / f64::from(connections.max(1))),
        ..Report::default()
    };
    for mut ws in still {
        let _ = ws.close(None).await;
    }
    report
}

async fn churn(target: Target, cycles: u32, concurrency: u32) -> Report {
    let done = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let cpu = target.pid.and_then(|p| cpu_seconds(p).map(|c| (p, c)));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let done = done.clone();
        let delivered = delivered.clone();
        let share = cycles / concurrency.max(1) + u32::from(w < cycles % concurrency.max(1));
        workers.push(tokio::spawn(async move {
            for i in 0..share {
                // A fresh name each cycle: the previous cycle's leave may still be on
                // its way when the next join arrives.
                let name = format!("churner-{i}");
                let mut ws = connect(&target, w * 100_000 + i, &format!("churn-{w}"), &name).await;
                let send = serde_json::json!({"type": "send", "text": "ping", "ref": 1});
                ws.send(Message::text(send.to_string()))
                    .await
                    .expect("send");
                let deadline = Instant::now() + DRAIN_LIMIT;
                while Instant::now() < deadline {
                    match tokio::time::timeout(DRAIN_LIMIT, ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""type":"message""#) => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(Some(Ok(_))) => continue,
                        _ => break,
                    }
                }
                let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
                let _ = ws.close(None).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cycles_done = done.load(Ordering::Relaxed);
    Report {
        scenario: "churn".into(),
        expected: u64::from(cycles),
        delivered: delivered.load(Ordering::Relaxed),
        lost: u64::from(cycles).saturating_sub(delivered.load(Ordering::Relaxed)),
        seconds,
        joins_per_sec: cycles_done as f64 / seconds,
        server_cpu_us_per_cycle: cpu.and_then(|(pid, before)| {
            let used = cpu_seconds(pid)? - before;
            (cycles_done > 0).then(|| used / cycles_done as f64 * 1e6)
        }),
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::sent_at;

    #[test]
    fn the_send_time_is_read_from_a_message_event_however_its_fields_are_ordered() {
        let member = r#"{"type":"message","id":7,"ts":1,"from":"c0","text":"123456"}"#;
        assert_eq!(sent_at(member), Some(Some(123_456)));
        let reordered = r#"{"id":7,"type":"message","text":"42","from":"c0"}"#;
        assert_eq!(sent_at(reordered), Some(Some(42)));
        let chat = r#"{"type":"message","id":7,"ts":1,"from":"c0","text":"hello"}"#;
        assert_eq!(sent_at(chat), Some(None));
        assert_eq!(
            sent_at(r#"{"type":"joined","id":8,"ts":1,"name":"c1"}"#),
            None
        );
    }
}
