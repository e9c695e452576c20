//! The `soak` scenario: for a bounded time, steady traffic in many rooms plus
//! join/leave churn, connections dropped without a close and resumed, renames,
//! clients that stop reading and bursts of invalid frames; then every client goes and
//! the server must end where it started: nothing lost or duplicated, no member or room
//! left over, its descriptors and memory given back.
//!
//! Loss and duplication are judged by the protocol's own promise: a member sees every
//! event id of its room once, in order, without a hole, across resumes (the welcome of a
//! resume replays what it missed). At the end every member reads up to the highest id
//! any sender of its room was acknowledged, so the tail counts too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{HttpClient, all_rooms};
use crate::{DRAIN_LIMIT, Socket, Target, ended_within, open, rss_bytes};

/// What a soak run does. The fields are named as on the command line.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// How long the clients are active in the measured round.
    pub seconds: u32,
    /// A round of the same clients before it (its counts are included; its rooms are
    /// `warm-N`), so that the start figures are those of a server that has served.
    pub warmup: Duration,
    /// Rooms with steady traffic.
    pub rooms: u32,
    /// Members per room; each sends, drops and resumes, renames and pauses.
    pub members: u32,
    /// Each member sends a message about this often (jittered ±50%).
    pub send_every: Duration,
    /// Each member drops its connection and resumes, renames or stops reading for
    /// `pause` about this often (jittered ±50%).
    pub action_every: Duration,
    /// How long a member stops reading.
    pub pause: Duration,
    /// Concurrent join/(send)/leave loops over the rooms; a third of their cycles end
    /// by dropping the connection without a leave or a close.
    pub churners: u32,
    /// Each churner waits this long between cycles.
    pub churn_pause: Duration,
    /// Concurrent loops of bursts of invalid frames.
    pub bursters: u32,
    /// A new client that joins, then never reads again, this often.
    pub stall_every: Duration,
    /// The server's keepalive bound: a client that stopped reading at least this long
    /// before the end must have been dropped by the server.
    pub stall_bound: Duration,
    /// How long to wait, once every client is gone, for the server to forget them (the
    /// resume grace of dropped members runs out first).
    pub settle: Duration,
    /// RSS is sampled this often while the clients are active.
    pub sample_every: Duration,
}

impl Default for SoakPlan {
    fn default() -> Self {
        SoakPlan {
            seconds: 600,
            warmup: Duration::from_secs(30),
            rooms: 40,
            members: 10,
            send_every: Duration::from_secs(2),
            action_every: Duration::from_secs(20),
            pause: Duration::from_secs(2),
            churners: 8,
            churn_pause: Duration::from_millis(200),
            bursters: 2,
            stall_every: Duration::from_secs(10),
            stall_bound: Duration::from_secs(45),
            settle: Duration::from_secs(60),
            sample_every: Duration::from_secs(60),
        }
    }
}

/// What a soak run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakFigures {
    /// Events members received (live or replayed by a resume).
    pub events: u64,
    /// Event ids members never received (holes, also across resumes and at the end).
    pub lost: u64,
    /// Event ids members received more than once.
    pub duplicated: u64,
    /// Messages members sent.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends and renames answered with an error (by code).
    pub refused: HashMap<String, u64>,
    /// Sends and renames with no answer while their connection was open (at the end,
    /// or when the server ended it).
    pub unanswered: u64,
    /// Sends and renames pending when the member itself dropped its connection (their
    /// outcome shows in the resumed timeline, so they are not counted as lost).
    pub abandoned: u64,
    /// Resumes after a dropped connection.
    pub resumes: u64,
    /// Of the resumes, those made while the old connection was still open.
    pub takeovers: u64,
    /// Resumes refused (the member then joined afresh).
    pub resume_failed: u64,
    /// Welcomes that reported a gap.
    pub gaps: u64,
    /// Renames acknowledged.
    pub renames: u64,
    /// Pauses in reading.
    pub pauses: u64,
    /// Member connections the server ended (by close code, `none` without one).
    pub member_closes: HashMap<String, u64>,
    /// Churn cycles done.
    pub churn_cycles: u64,
    /// Churn cycles ended by dropping the connection.
    pub churn_drops: u64,
    /// Churn joins refused.
    pub churn_refused: u64,
    /// Bursts of invalid frames sent (their connections' ends are tallied by close
    /// code, `none`: not within 3 s).
    pub bursts: u64,
    /// Invalid frames sent in those bursts.
    pub burst_frames: u64,
    /// How the server ended burst connections.
    pub burst_closes: HashMap<String, u64>,
    /// Clients that stopped reading (due to be dropped: those stopped at least
    /// `stall_bound` before the end).
    pub stallers: u64,
    /// Stallers due to be dropped by the end.
    pub stallers_due: u64,
    /// Of them, dropped by the server.
    pub stallers_dropped: u64,
    /// Connections that could not be opened or joined (by error).
    pub connect_errors: HashMap<String, u64>,
    /// Server RSS before any client.
    pub rss_fresh: Option<u64>,
    /// Server RSS when the measured round starts (after the warm-up round, if any, and
    /// its clients are gone).
    pub rss_start: Option<u64>,
    /// Server RSS samples while the clients were active.
    pub rss_samples: Vec<(u64, u64)>,
    /// Server RSS after the clients left and the server settled.
    pub rss_end: Option<u64>,
    /// Server open file descriptors when the measured round starts.
    pub fds_start: Option<u64>,
    /// Server open file descriptors at the end.
    pub fds_end: Option<u64>,
    /// Rooms `GET /rooms` still listed when the settle time ran out (or when it
    /// listed none).
    pub leftover_rooms: u64,
    /// Members still listed.
    pub leftover_members: u64,
    /// Seconds the server took to list nothing (or the settle limit).
    pub settle_seconds: f64,
    /// Runs of disruption in the measured round (members cut off, connections
    /// refused, `unavailable` answers, failed resumes; runs apart by less than 3 s
    /// merged): when each began (seconds into the round), how long it lasted until
    /// the last disruption of the run, and how many there were. A fault injected
    /// into a cluster shows as one run; its length is the time the fault took to
    /// heal, as clients saw it.
    pub disruptions: Vec<(f64, f64, u64)>,
}

impl SoakFigures {
    /// The table's rows.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mib =
            |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let map = |m: &HashMap<String, u64>| {
            let mut v: Vec<_> = m.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            v.sort();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        vec![
            ("events", self.events.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicated", self.duplicated.to_string()),
            (
                "sends",
                format!(
                    "{} (acked {}, unanswered {}, abandoned in a drop {}); refused {}",
                    self.sent,
                    self.acked,
                    self.unanswered,
                    self.abandoned,
                    map(&self.refused)
                ),
            ),
            (
                "resumes",
                format!(
                    "{} ({} takeovers; failed {}, gaps {}); renames {}, pauses {}",
                    self.resumes,
                    self.takeovers,
                    self.resume_failed,
                    self.gaps,
                    self.renames,
                    self.pauses
                ),
            ),
            ("member closes", map(&self.member_closes)),
            (
                "churn",
                format!(
                    "{} cycles ({} dropped, {} refused)",
                    self.churn_cycles, self.churn_drops, self.churn_refused
                ),
            ),
            (
                "invalid bursts",
                format!(
                    "{} ({} frames); closes {}",
                    self.bursts,
                    self.burst_frames,
                    map(&self.burst_closes)
                ),
            ),
            (
                "stallers",
                format!(
                    "{} ({} due, {} dropped by the server)",
                    self.stallers, self.stallers_due, self.stallers_dropped
                ),
            ),
            ("connect errors", map(&self.connect_errors)),
            (
                "RSS",
                format!(
                    "fresh {}, start {}, samples [{}], end {}",
                    mib(self.rss_fresh),
                    mib(self.rss_start),
                    self.rss_samples
                        .iter()
                        .map(|(t, b)| format!("{t}s {}", mib(Some(*b))))
                        .collect::<Vec<_>>()
                        .join(", "),
                    mib(self.rss_end)
                ),
            ),
            (
                "open fds",
                format!(
                    "start {}, end {}",
                    self.fds_start.map_or("-".into(), |n| n.to_string()),
                    self.fds_end.map_or("-".into(), |n| n.to_string())
                ),
            ),
            (
                "disruptions",
                if self.disruptions.is_empty() {
                    "none".to_owned()
                } else {
                    self.disruptions
                        .iter()
                        .map(|(at, lasted, n)| format!("at {at:.1} s for {lasted:.1} s ({n})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            ),
            (
                "left over",
                format!(
                    "{} rooms, {} members (settled in {:.1} s)",
                    self.leftover_rooms, self.leftover_members, self.settle_seconds
                ),
            ),
        ]
    }
}

/// Open file descriptors of a process, from /proc/PID/fd.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// A small deterministic generator (xorshift64*): jitter and choices, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `d` × a factor in [0.5, 1.5).
    fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.5 + self.below(1000) as f64 / 1000.0)
    }
}

/// Counters shared by every task of a run.
#[derive(Default)]
struct Counts {
    events: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    unanswered: AtomicU64,
    abandoned: AtomicU64,
    takeovers: AtomicU64,
    resumes: AtomicU64,
    resume_failed: AtomicU64,
    gaps: AtomicU64,
    renames: AtomicU64,
    pauses: AtomicU64,
    churn_cycles: AtomicU64,
    churn_drops: AtomicU64,
    churn_refused: AtomicU64,
    bursts: AtomicU64,
    burst_frames: AtomicU64,
    stallers: AtomicU64,
    stallers_due: AtomicU64,
    stallers_dropped: AtomicU64,
    /// The source address of the next connection.
    next_source: AtomicU32,
    /// (kind, key) -> count: refusals, closes, connect errors.
    tallies: std::sync::Mutex<HashMap<(&'static str, String), u64>>,
    /// When the measured round began (none during the warm-up).
    measuring: std::sync::Mutex<Option<Instant>>,
    /// When each disruption happened, in seconds into the measured round.
    disrupted_at: std::sync::Mutex<Vec<f64>>,
}

impl Counts {
    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn tally(&self, kind: &'static str, key: impl Into<String>) {
        let key = key.into();
        let disrupts = match kind {
            "member close" | "connect" => true,
            "refused" => key.contains("unavailable") || key.starts_with("resume"),
            _ => false,
        };
        if disrupts {
            let since = self.measuring.lock().ok().and_then(|m| *m);
            if let (Some(since), Ok(mut at)) = (since, self.disrupted_at.lock()) {
                at.push(since.elapsed().as_secs_f64());
            }
        }
        if let Ok(mut t) = self.tallies.lock() {
            *t.entry((kind, key)).or_default() += 1;
        }
    }

    /// The disruptions, as runs apart by at least 3 s.
    fn disruptions(&self) -> Vec<(f64, f64, u64)> {
        let mut at = self
            .disrupted_at
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        at.sort_by(f64::total_cmp);
        let mut runs: Vec<(f64, f64, u64)> = Vec::new();
        for t in at {
            match runs.last_mut() {
                Some((start, lasted, n)) if t - (*start + *lasted) < 3.0 => {
                    *lasted = t - *start;
                    *n += 1;
                }
                _ => runs.push((t, 0.0, 1)),
            }
        }
        runs
    }

    fn tallies_of(&self, kind: &str) -> HashMap<String, u64> {
        self.tallies
            .lock()
            .map(|t| {
                t.iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|((_, key), n)| (key.clone(), *n))
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Room {
    name: String,
    /// The highest event id any sender of this room was acknowledged.
    max_acked: AtomicU64,
    /// Members meet here once their sends are answered, before the final read.
    barrier: tokio::sync::Barrier,
}

struct Run {
    target: Target,
    plan: SoakPlan,
    end: Instant,
    rooms: Vec<Room>,
    counts: Arc<Counts>,
}

impl Run {
    /// Opens a connection from the next source address; errors are tallied.
    async fn open(&self) -> Option<Socket> {
        let n = self.counts.next_source.fetch_add(1, Ordering::Relaxed);
        match open(&self.target, n).await {
            Ok(ws) => Some(ws),
            Err(e) => {
                let kind = e.split(':').next().unwrap_or("error").to_owned();
                self.counts.tally("connect", kind);
                None
            }
        }
    }
}

fn close_code(msg: &Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => u16::from(frame.code).to_string(),
        Some(Ok(Message::Close(None))) => "close without code".into(),
        Some(Err(_)) => "error".into(),
        None => "none".into(),
        Some(Ok(_)) => "other".into(),
    }
}

/// Runs the soak plan against `target`: a warm-up round (when asked), then the
/// measured round, each followed by the wait for the server to forget every client.
pub(crate) async fn soak(target: Target, plan: SoakPlan) -> SoakFigures {
    let counts = Arc::new(Counts::default());
    let rss_fresh = target.pid.and_then(rss_bytes);
    if !plan.warmup.is_zero() {
        round(target, &plan, plan.warmup, "warm", counts.clone()).await;
        settle(target, &plan, &counts).await;
    }
    let rss_start = target.pid.and_then(rss_bytes);
    // The warm-up's last connections may still be closing: wait for a steady count.
    let fds_start = match target.pid {
        Some(pid) => {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut last = open_fds(pid);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = open_fds(pid);
                if now == last || Instant::now() >= deadline {
                    break now;
                }
                last = now;
            }
        }
        None => None,
    };
    let duration = Duration::from_secs(u64::from(plan.seconds));
    if let Ok(mut m) = counts.measuring.lock() {
        *m = Some(Instant::now());
    }
    let rss_samples = round(target, &plan, duration, "soak", counts.clone()).await;
    let (leftover_rooms, leftover_members, settle_seconds) = settle(target, &plan, &counts).await;
    // The server closes the last sockets a little after the members are gone.
    let fds_end = match (target.pid, fds_start) {
        (Some(pid), Some(start)) => {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let now = open_fds(pid);
                if now.is_none_or(|n| n <= start) || Instant::now() >= deadline {
                    break now;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        _ => None,
    };
    let c = &counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    SoakFigures {
        rss_fresh,
        rss_start,
        rss_samples,
        rss_end: target.pid.and_then(rss_bytes),
        fds_start,
        fds_end,
        leftover_rooms,
        leftover_members,
        settle_seconds,
        disruptions: c.disruptions(),
        events: get(&c.events),
        lost: get(&c.lost),
        duplicated: get(&c.duplicated),
        sent: get(&c.sent),
        acked: get(&c.acked),
        refused: c.tallies_of("refused"),
        unanswered: get(&c.unanswered),
        abandoned: get(&c.abandoned),
        resumes: get(&c.resumes),
        takeovers: get(&c.takeovers),
        resume_failed: get(&c.resume_failed),
        gaps: get(&c.gaps),
        renames: get(&c.renames),
        pauses: get(&c.pauses),
        member_closes: c.tallies_of("member close"),
        churn_cycles: get(&c.churn_cycles),
        churn_drops: get(&c.churn_drops),
        churn_refused: get(&c.churn_refused),
        bursts: get(&c.bursts),
        burst_frames: get(&c.burst_frames),
        burst_closes: c.tallies_of("burst close"),
        stallers: get(&c.stallers),
        stallers_due: get(&c.stallers_due),
        stallers_dropped: get(&c.stallers_dropped),
        connect_errors: c.tallies_of("connect"),
    }
}

/// One round of clients for `duration`; returns the RSS samples taken meanwhile.
async fn round(
    target: Target,
    plan: &SoakPlan,
    duration: Duration,
    tag: &str,
    counts: Arc<Counts>,
) -> Vec<(u64, u64)> {
    let started = Instant::now();
    let run = Arc::new(Run {
        target,
        end: started + duration,
        rooms: (0..plan.rooms.max(1))
            .map(|r| Room {
                name: format!("{tag}-{r}"),
                max_acked: AtomicU64::new(0),
                barrier: tokio::sync::Barrier::new(plan.members.max(1) as usize),
            })
            .collect(),
        plan: plan.clone(),
        counts,
    });
    let mut tasks = Vec::new();
    for room in 0..run.rooms.len() {
        for m in 0..run.plan.members.max(1) {
            tasks.push(tokio::spawn(member(run.clone(), room, m)));
        }
    }
    for w in 0..run.plan.churners {
        tasks.push(tokio::spawn(churner(run.clone(), w)));
    }
    for w in 0..run.plan.bursters {
        tasks.push(tokio::spawn(burster(run.clone(), w)));
    }
    tasks.push(tokio::spawn(stallers(run.clone())));
    let sampler = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let Some(pid) = run.target.pid else {
                return samples;
            };
            let every = run.plan.sample_every.max(Duration::from_millis(100));
            let mut tick = tokio::time::interval_at((started + every).into(), every);
            while Instant::now() + every / 2 < run.end {
                tick.tick().await;
                if let Some(rss) = rss_bytes(pid) {
                    samples.push((started.elapsed().as_secs(), rss));
                }
            }
            samples
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    sampler.await.unwrap_or_default()
}

/// Every client is gone: waits (at most `plan.settle`) for the server to forget them
/// (away members expire after the resume grace). Returns the rooms and members
/// `GET /rooms` still lists, and the seconds waited.
async fn settle(target: Target, plan: &SoakPlan, counts: &Counts) -> (u64, u64, f64) {
    let settling = Instant::now();
    let mut http = HttpClient::new(target.addr);
    let (mut rooms_left, mut members_left) = (u64::MAX, u64::MAX);
    loop {
        match all_rooms(&mut http).await {
            Ok(rooms) => {
                rooms_left = rooms.len() as u64;
                members_left = rooms.iter().map(|(_, m)| m).sum();
            }
            Err(e) => counts.tally("connect", format!("GET /rooms: {e}")),
        }
        if rooms_left == 0 || settling.elapsed() >= plan.settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (rooms_left, members_left, settling.elapsed().as_secs_f64())
}

/// A member's view of its room's timeline, and its requests awaiting an answer.
struct Track<'a> {
    counts: &'a Counts,
    room: &'a Room,
    /// The last event id seen (0: none yet).
    last: u64,
    /// ref -> what it was (`true`: a send, `false`: a rename).
    pending: HashMap<u64, bool>,
    next_ref: u64,
}

impl Track<'_> {
    fn event(&mut self, id: u64) {
        self.counts.add(&self.counts.events, 1);
        if self.last == 0 || id == self.last + 1 {
            self.last = id;
        } else if id <= self.last {
            self.counts.add(&self.counts.duplicated, 1);
        } else {
            self.counts.add(&self.counts.lost, id - self.last - 1);
            self.last = id;
        }
    }

    /// Handles a text frame; returns it parsed.
    fn frame(&mut self, text: &str) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        match v["type"].as_str()? {
            "message" | "joined" | "left" | "renamed" => {
                if let Some(id) = v["id"].as_u64() {
                    self.event(id);
                }
            }
            "ack" => {
                if let Some(was_send) = v["ref"].as_u64().and_then(|r| self.pending.remove(&r)) {
                    if was_send {
                        self.counts.add(&self.counts.acked, 1);
                        if let Some(id) = v["id"].as_u64() {
                            self.room.max_acked.fetch_max(id, Ordering::Relaxed);
                        }
                    } else {
                        self.counts.add(&self.counts.renames, 1);
                    }
                }
            }
            "error" => {
                if let Some(r) = v["ref"].as_u64() {
                    self.pending.remove(&r);
                }
                let code = v["code"].as_str().unwrap_or("?").to_owned();
                self.counts.tally("refused", code);
            }
            _ => {}
        }
        Some(v)
    }

    /// Takes a welcome: its history continues the timeline (all of it, on a first
    /// join). Returns the resume token.
    fn welcome(&mut self, v: &serde_json::Value) -> String {
        if v["gap"].as_bool() == Some(true) {
            self.counts.add(&self.counts.gaps, 1);
        }
        let last_id = v["last_id"].as_u64().unwrap_or(0);
        if let Some(history) = v["history"].as_array() {
            for e in history {
                if let Some(id) = e["id"].as_u64() {
                    if self.last == 0 || id > self.last {
                        self.event(id);
                    } else {
                        // Replayed although it was seen: a resume returns only ids
                        // after `since`.
                        self.counts.add(&self.counts.duplicated, 1);
                    }
                }
            }
        }
        if self.last == 0 {
            self.last = last_id;
        } else if last_id > self.last {
            // The welcome claims events its history did not hold.
            self.counts.add(&self.counts.lost, last_id - self.last);
            self.last = last_id;
        }
        v["resume"].as_str().unwrap_or_default().to_owned()
    }

    fn request(&mut self, is_send: bool) -> u64 {
        self.next_ref += 1;
        self.pending.insert(self.next_ref, is_send);
        self.next_ref
    }
}

/// Sends `join` and reads until its welcome (which the track takes) or an error.
async fn join(
    ws: &mut Socket,
    track: &mut Track<'_>,
    frame: serde_json::Value,
) -> Result<String, String> {
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("send join: {e}"))?;
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
        let msg = match next {
            Ok(msg) => msg,
            Err(_) => return Err("no welcome in time".into()),
        };
        let Some(Ok(Message::Text(text))) = msg else {
            if let Some(Ok(_)) = msg {
                continue;
            }
            return Err(format!("ended while joining: {}", close_code(&msg)));
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("welcome") => return Ok(track.welcome(&v)),
            Some("error") => return Err(v["code"].as_str().unwrap_or("error").to_owned()),
            _ => {}
        }
    }
}

/// A member of a room: sends, reads and checks every event, and now and then drops
/// its connection and resumes, renames, or stops reading for a while.
async fn member(run: Arc<Run>, room: usize, m: u32) {
    let plan = &run.plan;
    let room_state = &run.rooms[room];
    let mut rng = Rng::new((room as u64) << 32 | u64::from(m));
    let mut track = Track {
        counts: &run.counts,
        room: room_state,
        last: 0,
        pending: HashMap::new(),
        next_ref: 0,
    };
    let base = format!("m{m}");
    let mut renamed = false;
    let mut fresh = 0u32;
    let mut session: Option<(Socket, String)> = None;
    // The token the next (re)join resumes with; kept when a resume could not even
    // connect (a node down) or was answered `unavailable`, to be tried again.
    let mut carried: Option<String> = None;
    let mut next_send = Instant::now() + rng.jitter(plan.send_every);
    let mut next_action = Instant::now() + rng.jitter(plan.action_every);
    while Instant::now() < run.end {
        let Some((ws, token)) = &mut session else {
            // (Re)join: resume when there is a token, else a fresh join.
            session = member_join(&run, &mut track, &base, &mut fresh, &mut carried).await;
            if session.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        let now = Instant::now();
        if now >= next_send {
            next_send += rng.jitter(plan.send_every);
            let r = track.request(true);
            let frame = serde_json::json!({"type": "send", "text": format!("soak {m}"), "ref": r});
            if ws.send(Message::text(frame.to_string())).await.is_ok() {
                run.counts.add(&run.counts.sent, 1);
            } else {
                track.pending.remove(&r);
            }
            continue;
        }
        if now >= next_action {
            next_action = now + rng.jitter(plan.action_every);
            match rng.below(3) {
                0 => {
                    // Resume on a new connection: half of the time after dropping the
                    // old one without a close (the member is away meanwhile and events
                    // pile up), half of the time while it is still open (a takeover:
                    // the server closes it with 4001).
                    let token = std::mem::take(token);
                    let n = track.pending.len() as u64;
                    run.counts.add(&run.counts.abandoned, n);
                    track.pending.clear();
                    if rng.below(2) == 0 {
                        run.counts.add(&run.counts.takeovers, 1);
                    } else {
                        drop(session.take());
                        tokio::time::sleep(rng.jitter(Duration::from_millis(400))).await;
                    }
                    carried = Some(token);
                    session = member_join(&run, &mut track, &base, &mut fresh, &mut carried).await;
                }
                1 => {
                    renamed = !renamed;
                    let name = if renamed {
                        format!("{base}-r")
                    } else {
                        base.clone()
                    };
                    let r = track.request(false);
                    let frame = serde_json::json!({"type": "rename", "name": name, "ref": r});
                    let _ = ws.send(Message::text(frame.to_string())).await;
                }
                _ => {
                    run.counts.add(&run.counts.pauses, 1);
                    tokio::time::sleep(plan.pause).await;
                }
            }
            continue;
        }
        let wake = next_send.min(next_action).min(run.end);
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => { track.frame(&text); }
                Some(Ok(_)) => {}
                other => {
                    run.counts.tally("member close", close_code(&other));
                    let token = std::mem::take(token);
                    forget_pending(&mut track);
                    carried = Some(token);
                    session = member_join(&run, &mut track, &base, &mut fresh, &mut carried).await;
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    // The end: collect the answers still owed, meet the room's other members, then
    // read up to the highest id any sender was acknowledged.
    if let Some((ws, _)) = &mut session {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while !track.pending.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    track.frame(&text);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
    }
    forget_pending(&mut track);
    let _ = tokio::time::timeout(DRAIN_LIMIT, room_state.barrier.wait()).await;
    let target = room_state.max_acked.load(Ordering::Relaxed);
    if let Some((mut ws, _)) = session {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while track.last < target && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    track.frame(&text);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        if track.last < target {
            run.counts.add(&run.counts.lost, target - track.last);
        }
        // Half leave properly, half just go (their membership expires).
        if m % 2 == 0 {
            let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
    }
}

/// Requests whose connection is gone will get no answer: count them.
fn forget_pending(track: &mut Track<'_>) {
    let n = track.pending.len() as u64;
    track.counts.add(&track.counts.unanswered, n);
    track.pending.clear();
}

/// Joins the member's room: resumes with the token in `carried` when there is one
/// (since the last id seen), else (or when the resume fails) joins afresh under a new
/// name. The token stays in `carried` when no connection opens or the store is
/// unavailable, for the next attempt.
async fn member_join(
    run: &Run,
    track: &mut Track<'_>,
    base: &str,
    fresh: &mut u32,
    carried: &mut Option<String>,
) -> Option<(Socket, String)> {
    let room = track.room.name.clone();
    let mut ws = run.open().await?;
    if let Some(token) = carried.take() {
        run.counts.add(&run.counts.resumes, 1);
        let frame = serde_json::json!({"type": "join", "room": room, "name": base, "resume": token, "since": track.last});
        match join(&mut ws, track, frame).await {
            Ok(token) => return Some((ws, token)),
            Err(code) if code.contains("unavailable") => {
                // The store is out for a moment: the membership still holds.
                run.counts.tally("refused", format!("resume: {code}"));
                *carried = Some(token);
                return None;
            }
            Err(code) => {
                run.counts.add(&run.counts.resume_failed, 1);
                run.counts.tally("refused", format!("resume: {code}"));
            }
        }
    }
    // A fresh join under a name nobody else in the run uses (the old membership may
    // still hold the last one). It starts a new timeline: what the member missed in
    // between is the failed resume's (or failed connection's), counted there.
    track.last = 0;
    let name = if *fresh == 0 {
        base.to_owned()
    } else {
        format!("{base}-{fresh}")
    };
    *fresh += 1;
    let frame = serde_json::json!({"type": "join", "room": room, "name": name});
    match join(&mut ws, track, frame).await {
        Ok(token) => Some((ws, token)),
        Err(e) => {
            run.counts.tally("connect", format!("join: {e}"));
            None
        }
    }
}

/// Join a room under a fresh name, maybe send one message, then leave and close, or
/// (a third of the time) drop the connection without either.
async fn churner(run: Arc<Run>, w: u32) {
    let mut rng = Rng::new(0xC0FFEE + u64::from(w));
    let mut cycle = 0u64;
    while Instant::now() < run.end {
        cycle += 1;
        let Some(mut ws) = run.open().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let room = &run.rooms[rng.below(run.rooms.len() as u64) as usize].name;
        let join =
            serde_json::json!({"type": "join", "room": room, "name": format!("ch{w}-{cycle}")});
        let _ = ws.send(Message::text(join.to_string())).await;
        let welcomed = read_until(&mut ws, r#""type":"welcome""#, r#""type":"error""#).await;
        if !welcomed {
            run.counts.add(&run.counts.churn_refused, 1);
        } else if rng.below(2) == 0 {
            let send = r#"{"type":"send","text":"churn","ref":1}"#;
            let _ = ws.send(Message::text(send)).await;
            read_until(&mut ws, r#""type":"ack""#, r#""type":"error""#).await;
        }
        if rng.below(3) == 0 {
            run.counts.add(&run.counts.churn_drops, 1);
            drop(ws);
        } else {
            let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        run.counts.add(&run.counts.churn_cycles, 1);
        tokio::time::sleep(run.plan.churn_pause).await;
    }
}

/// Reads until a text frame containing `good` (true) or `bad`, the end, or 5 s.
async fn read_until(ws: &mut Socket, good: &str, bad: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(good) => return true,
            Ok(Some(Ok(Message::Text(t)))) if t.contains(bad) => return false,
            Ok(Some(Ok(_))) => continue,
            _ => return false,
        }
    }
}

/// Bursts of invalid frames, sometimes from a member of a room, ending (half of the
/// time) with a frame over any sensible size limit.
async fn burster(run: Arc<Run>, w: u32) {
    let mut rng = Rng::new(0xB0057 + u64::from(w));
    let long_text = "x".repeat(5000);
    let invalid: Vec<Message> = vec![
        Message::text("not json"),
        Message::text(r#"{"type":"dance"}"#),
        Message::text(r#"{"type":"send"}"#),
        Message::text(r#"{"type":"send","text":""}"#),
        Message::text(r#"{"type":"send","text":"x","ref":[1]}"#),
        Message::text("[1,2,3]"),
        Message::binary(vec![0u8, 159, 146, 150]),
        Message::text(r#"{"type":"join","room":"","name":""}"#),
        Message::text(r#"{"type":"rename","name":"\u0000"}"#),
        Message::text(format!(r#"{{"type":"send","text":"{long_text}"}}"#)),
    ];
    let mut cycle = 0u64;
    while Instant::now() < run.end {
        cycle += 1;
        let Some(mut ws) = run.open().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if rng.below(2) == 0 {
            let room = &run.rooms[rng.below(run.rooms.len() as u64) as usize].name;
            let join =
                serde_json::json!({"type": "join", "room": room, "name": format!("bz{w}-{cycle}")});
            let _ = ws.send(Message::text(join.to_string())).await;
            read_until(&mut ws, r#""type":"welcome""#, r#""type":"error""#).await;
        }
        let frames = 10 + rng.below(90);
        for _ in 0..frames {
            let frame = invalid[rng.below(invalid.len() as u64) as usize].clone();
            if ws.feed(frame).await.is_err() {
                break;
            }
        }
        if rng.below(2) == 0 {
            let _ = ws.feed(Message::text("y".repeat(1 << 20))).await;
        }
        let _ = ws.flush().await;
        run.counts.add(&run.counts.bursts, 1);
        run.counts.add(&run.counts.burst_frames, frames);
        // Read the answers until the server closes (a flood or an oversized frame) or
        // 3 s pass; then just go.
        let ending = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let msg = ws.next().await;
                if !matches!(
                    msg,
                    Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))
                ) {
                    return close_code(&msg);
                }
            }
        })
        .await
        .unwrap_or_else(|_| "none".into());
        run.counts.tally("burst close", ending);
        drop(ws);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every `stall_every`, a client joins a room, then never reads again; at the end,
/// those stalled for at least `stall_bound` must have been dropped by the server.
async fn stallers(run: Arc<Run>) {
    let plan = &run.plan;
    let mut held: Vec<(Instant, Socket)> = Vec::new();
    let mut n = 0u64;
    let mut tick = tokio::time::interval(plan.stall_every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        let at = tokio::time::timeout_at(run.end.into(), tick.tick()).await;
        if at.is_err() {
            break;
        }
        n += 1;
        let Some(mut ws) = run.open().await else {
            continue;
        };
        let room = &run.rooms[(n % run.rooms.len() as u64) as usize].name;
        let join = serde_json::json!({"type": "join", "room": room, "name": format!("st{n}")});
        let _ = ws.send(Message::text(join.to_string())).await;
        if read_until(&mut ws, r#""type":"welcome""#, r#""type":"error""#).await {
            run.counts.add(&run.counts.stallers, 1);
            held.push((Instant::now(), ws));
        }
    }
    for (since, mut ws) in held {
        if run.end.saturating_duration_since(since) < plan.stall_bound {
            continue;
        }
        run.counts.add(&run.counts.stallers_due, 1);
        if ended_within(&mut ws, Duration::from_secs(2)).await {
            run.counts.add(&run.counts.stallers_dropped, 1);
        }
    }
}
