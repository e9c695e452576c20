//! The `abuse` scenario: one big room chatting at a steady rate, measured alone and
//! then while other clients abuse it, each abuse in its own phase of the same run:
//! (a) clients looping `GET /rooms/{room}`, (b) sockets looping join/leave on the
//! room, (c) sockets in the room that never read. Each phase reports the delivery
//! latency of the messages sent in it and whether any delivery was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::{Socket, Target, connect, ended_within, open, open_with, sent_at};

/// What an abuse run does. The fields are named as on the command line.
#[derive(Debug, Clone)]
pub struct AbusePlan {
    /// Members of the room (all read and time every message).
    pub members: u32,
    /// How many of them send (the rate is shared: each stays under the per-connection
    /// rate limit).
    pub senders: u32,
    /// Messages per second in the room.
    pub rate: u32,
    /// Length of each phase.
    pub seconds: u32,
    /// (a) clients looping `GET /rooms/{room}`.
    pub http: u32,
    /// (b) sockets looping join/leave on the room.
    pub churners: u32,
    /// (c) sockets that join the room and never read.
    pub nonreaders: u32,
}

impl Default for AbusePlan {
    fn default() -> Self {
        AbusePlan {
            members: 500,
            senders: 20,
            rate: 100,
            seconds: 20,
            http: 200,
            churners: 200,
            nonreaders: 100,
        }
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AbusePhase {
    /// `alone`, `http`, `join-leave` or `non-readers`.
    pub phase: String,
    /// Messages sent in the phase.
    pub sent: u64,
    /// Their deliveries expected (× members).
    pub expected: u64,
    /// Their deliveries received.
    pub delivered: u64,
    /// Latency of those deliveries in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// What the abusers did: requests answered, joins welcomed, or sockets that
    /// joined.
    pub abuse_ops: u64,
    /// Abusers' requests or joins refused.
    pub abuse_refused: u64,
    /// Abusers' connections the server ended during the phase (flood closes of the
    /// join/leave loopers, non-readers dropped).
    pub abusers_cut: u64,
}

/// What an abuse run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AbuseFigures {
    /// One entry per phase, `alone` first.
    pub phases: Vec<AbusePhase>,
    /// Event ids the room's members never received (whole run).
    pub lost: u64,
    /// Event ids the room's members received twice (whole run).
    pub duplicated: u64,
}

impl AbuseFigures {
    /// The table's rows.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        let alone = self.phases.first().map_or(0, |p| p.latency_us[1]);
        for p in &self.phases {
            let [p50, p99, p999, max] = p.latency_us;
            let ratio = if alone > 0 {
                format!(" ({:.2}x alone)", p99 as f64 / alone as f64)
            } else {
                String::new()
            };
            rows.push((
                p.phase.clone(),
                format!(
                    "p50 {p50} p99 {p99}{ratio} p99.9 {p999} max {max} µs; delivered {} of {}; abuse ops {} (refused {}, abusers cut {})",
                    p.delivered, p.expected, p.abuse_ops, p.abuse_refused, p.abusers_cut
                ),
            ));
        }
        rows.push((
            "ids".into(),
            format!("lost {}, duplicated {}", self.lost, self.duplicated),
        ));
        rows
    }
}

const PHASES: [&str; 4] = ["alone", "http", "join-leave", "non-readers"];
const ROOM: &str = "abuse";

/// The id of an event frame (not of an ack, a welcome or an error), read without a
/// JSON parse: the server writes `"type"` first and `"id"` second.
fn event_id(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix(r#"{"type":""#)?;
    let (kind, rest) = rest.split_once('"')?;
    if !matches!(kind, "message" | "joined" | "left" | "renamed") {
        return None;
    }
    let rest = &rest[rest.find(r#""id":"#)? + 5..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// How long the room chats before the first phase: its first seconds (tasks starting,
/// buffers growing) are not what any phase should be judged by.
const WARM_UP: Duration = Duration::from_secs(5);

struct Shared {
    /// When the room starts chatting.
    origin: Instant,
    /// When the first phase starts, [`WARM_UP`] later.
    start: Instant,
    phase_len: Duration,
    sent: [AtomicU64; 4],
    delivered: [AtomicU64; 4],
    lost: AtomicU64,
    duplicated: AtomicU64,
    latency: std::sync::Mutex<Vec<Histogram<u64>>>,
}

impl Shared {
    /// Nanoseconds since the room started chatting.
    fn stamp(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The phase a message stamped `stamp_ns` was sent in; `None` in the warm-up.
    fn phase_of(&self, stamp_ns: u64) -> Option<usize> {
        let since_start = stamp_ns.checked_sub(WARM_UP.as_nanos() as u64)?;
        let phase = since_start / self.phase_len.as_nanos().max(1) as u64;
        Some((phase as usize).min(PHASES.len() - 1))
    }
}

/// Runs the abuse plan against `target`.
pub(crate) async fn abuse(target: Target, plan: AbusePlan) -> AbuseFigures {
    let members = plan.members.max(1);
    let mut sockets = Vec::with_capacity(members as usize);
    for m in 0..members {
        sockets.push(connect(&target, m, ROOM, &format!("m{m}")).await);
    }
    // Let the last `joined` announcements reach everyone and the server settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let phase_len = Duration::from_secs(u64::from(plan.seconds.max(1)));
    let origin = Instant::now();
    let shared = Arc::new(Shared {
        origin,
        start: origin + WARM_UP,
        phase_len,
        sent: Default::default(),
        delivered: Default::default(),
        lost: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        latency: std::sync::Mutex::new(
            (0..PHASES.len())
                .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"))
                .collect(),
        ),
    });
    let sending_ends = shared.start + phase_len * PHASES.len() as u32;
    let reading_ends = sending_ends + Duration::from_secs(5);
    let senders = plan.senders.clamp(1, members);
    let period = Duration::from_secs_f64(f64::from(senders) / f64::from(plan.rate.max(1)));
    let mut tasks = Vec::new();
    for (m, ws) in sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let sends = (m as u32) < senders;
        // Senders start spread over one period, so the room's rate is even.
        let offset = period.mul_f64(m as f64 / f64::from(senders));
        tasks.push(tokio::spawn(async move {
            let (mut sink, stream) = ws.split();
            let reader = tokio::spawn(read_member(stream, shared.clone(), reading_ends));
            if sends {
                let mut tick = tokio::time::interval_at((shared.origin + offset).into(), period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    let at = tick.tick().await;
                    if at.into_std() >= sending_ends {
                        break;
                    }
                    let stamp = shared.stamp();
                    let frame = format!(r#"{{"type":"send","text":"{stamp}"}}"#);
                    if sink.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    if let Some(p) = shared.phase_of(stamp) {
                        shared.sent[p].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = reader.await;
            let _ = sink.close().await;
        }));
    }
    // The abuses, one per phase after the first.
    let mut ops = [Ops::default(); 4];
    for (p, slot) in ops.iter_mut().enumerate().skip(1) {
        let from = shared.start + phase_len * p as u32;
        let until = from + phase_len;
        tokio::time::sleep_until(from.into()).await;
        *slot = match p {
            1 => http_loops(target, plan.http, until).await,
            2 => join_leave_loops(target, plan.churners, members, until).await,
            _ => non_readers(target, plan.nonreaders, members + plan.churners, until).await,
        };
    }
    for t in tasks {
        let _ = t.await;
    }
    let histograms = shared.latency.lock().map(|h| h.clone()).unwrap_or_default();
    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(p, name)| {
            let h = &histograms[p];
            let sent = shared.sent[p].load(Ordering::Relaxed);
            AbusePhase {
                phase: (*name).into(),
                sent,
                expected: sent * u64::from(members),
                delivered: shared.delivered[p].load(Ordering::Relaxed),
                latency_us: [
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.value_at_quantile(0.999),
                    h.max(),
                ],
                abuse_ops: ops[p].done,
                abuse_refused: ops[p].refused,
                abusers_cut: ops[p].cut,
            }
        })
        .collect();
    AbuseFigures {
        phases,
        lost: shared.lost.load(Ordering::Relaxed),
        duplicated: shared.duplicated.load(Ordering::Relaxed),
    }
}

/// A member's reader: checks the ids and times every message by the phase it was
/// sent in.
async fn read_member<S>(mut stream: S, shared: Arc<Shared>, until: Instant)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut local: Vec<Histogram<u64>> = (0..PHASES.len())
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"))
        .collect();
    let mut delivered = [0u64; 4];
    let (mut last, mut lost, mut duplicated) = (0u64, 0u64, 0u64);
    let reading = async {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            if let Some(id) = event_id(&text) {
                if last == 0 || id == last + 1 {
                    last = id;
                } else if id <= last {
                    duplicated += 1;
                } else {
                    lost += id - last - 1;
                    last = id;
                }
            }
            let timed = sent_at(&text)
                .flatten()
                .and_then(|sent| Some((sent, shared.phase_of(sent)?)));
            if let Some((sent, p)) = timed {
                delivered[p] += 1;
                let _ = local[p].record((shared.stamp().saturating_sub(sent) / 1000).max(1));
            }
        }
    };
    let _ = tokio::time::timeout_at(until.into(), reading).await;
    for (all, mine) in shared.delivered.iter().zip(delivered) {
        all.fetch_add(mine, Ordering::Relaxed);
    }
    shared.lost.fetch_add(lost, Ordering::Relaxed);
    shared.duplicated.fetch_add(duplicated, Ordering::Relaxed);
    if let Ok(mut h) = shared.latency.lock() {
        for (all, mine) in h.iter_mut().zip(&local) {
            let _ = all.add(mine);
        }
    }
}

/// (a) `clients` kept-alive HTTP clients loop `GET /rooms/{room}` until `until`.
/// Returns (answers 200, other answers or errors, -).
async fn http_loops(target: Target, clients: u32, until: Instant) -> Ops {
    let mut loops = Vec::new();
    for _ in 0..clients {
        loops.push(tokio::spawn(async move {
            let mut client = HttpClient::new(target.addr);
            let mut ops = Ops::default();
            while Instant::now() < until {
                match client.get(&format!("/rooms/{ROOM}")).await {
                    Ok(r) if r.status == 200 => ops.done += 1,
                    _ => ops.refused += 1,
                }
            }
            ops
        }));
    }
    sum(loops).await
}

/// (b) `sockets` connections loop join/leave on the room until `until`, each at most
/// 4 cycles a second (8 frames: within the default per-connection rate, so that the
/// abuse lasts the whole phase), opening a new connection whenever the server ends
/// one. Returns (joins welcomed, joins refused, connections the server ended).
async fn join_leave_loops(target: Target, sockets: u32, first: u32, until: Instant) -> Ops {
    let mut loops = Vec::new();
    for i in 0..sockets {
        loops.push(tokio::spawn(async move {
            let mut ops = Ops::default();
            let mut attempt = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            'connections: while Instant::now() < until {
                attempt += 1;
                let Ok(mut ws) = open(&target, first + i).await else {
                    ops.refused += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let join = serde_json::json!({"type": "join", "room": ROOM, "name": format!("ch{i}-{attempt}")})
                    .to_string();
                while Instant::now() < until {
                    tick.tick().await;
                    if ws.send(Message::text(join.as_str())).await.is_err() {
                        ops.cut += 1;
                        continue 'connections;
                    }
                    match welcome_or_error(&mut ws, until).await {
                        Some(true) => ops.done += 1,
                        Some(false) => ops.refused += 1,
                        None if Instant::now() < until => {
                            ops.cut += 1;
                            continue 'connections;
                        }
                        None => break,
                    }
                    if ws.send(Message::text(r#"{"type":"leave"}"#)).await.is_err() {
                        ops.cut += 1;
                        continue 'connections;
                    }
                }
                let _ = ws.close(None).await;
            }
            ops
        }));
    }
    sum(loops).await
}

/// Reads until a welcome (`true`) or an error (`false`); `None` if the connection
/// ended or `until` passed.
async fn welcome_or_error(ws: &mut Socket, until: Instant) -> Option<bool> {
    loop {
        match tokio::time::timeout_at(until.into(), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(r#"{"type":"welcome""#) => {
                return Some(true);
            }
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(r#"{"type":"error""#) => {
                return Some(false);
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// (c) `sockets` connections, each with a 4 KiB receive buffer so that the server's
/// writes to it back up quickly, join the room and never read again; at `until` those
/// the server has ended by then are counted, and all are dropped. Returns (joined,
/// refused, ended by the server).
async fn non_readers(target: Target, sockets: u32, first: u32, until: Instant) -> Ops {
    let mut held = Vec::new();
    let mut ops = Ops::default();
    for i in 0..sockets {
        let Ok(mut ws) = open_with(&target, first + i, Some(4096)).await else {
            ops.refused += 1;
            continue;
        };
        let join =
            serde_json::json!({"type": "join", "room": ROOM, "name": format!("nr{i}")}).to_string();
        // A join refused for the room's rates is tried again in a moment, as a client
        // would: the abuse is sockets in the room that do not read.
        loop {
            if ws.send(Message::text(join.as_str())).await.is_err() {
                ops.refused += 1;
                break;
            }
            match welcome_or_error(&mut ws, until).await {
                Some(true) => {
                    ops.done += 1;
                    held.push(ws);
                    break;
                }
                Some(false) if Instant::now() < until => {
                    ops.refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    ops.refused += 1;
                    break;
                }
            }
        }
    }
    tokio::time::sleep_until(until.into()).await;
    for mut ws in held {
        // What the socket holds comes at once; a connection the server ended then ends.
        if ended_within(&mut ws, Duration::from_millis(500)).await {
            ops.cut += 1;
        }
    }
    ops
}

/// What an abuse's clients did.
#[derive(Debug, Default, Clone, Copy)]
struct Ops {
    /// Requests answered, joins welcomed, sockets joined.
    done: u64,
    /// Requests or joins refused.
    refused: u64,
    /// Abusers' connections the server ended.
    cut: u64,
}

async fn sum(loops: Vec<tokio::task::JoinHandle<Ops>>) -> Ops {
    let mut total = Ops::default();
    for l in loops {
        if let Ok(ops) = l.await {
            total.done += ops.done;
            total.refused += ops.refused;
            total.cut += ops.cut;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::event_id;

    #[test]
    fn event_ids_are_read_from_events_only() {
        assert_eq!(
            event_id(r#"{"type":"message","id":7,"ts":1,"from":"c0","text":"1"}"#),
            Some(7)
        );
        assert_eq!(
            event_id(r#"{"type":"left","id":12,"ts":1,"name":"c1"}"#),
            Some(12)
        );
        assert_eq!(event_id(r#"{"type":"ack","ref":1,"id":9}"#), None);
        assert_eq!(event_id(r#"{"type":"welcome","last_id":3}"#), None);
    }
}
