//! The per-connection driver: serves one client from `join` to close over any
//! [`Stream`] of [`Incoming`] frames and [`Sink`] of [`Outgoing`] frames.
//!
//! It implements the lifecycle of PROTOCOL.md that is not a room rule: the join
//! timeout, frame decoding and `bad_frame`, `not_joined`/`already_joined`, the frame
//! size limit (1009), the rate limit and flood close (1008), keepalive pings, the
//! close a room asks for (slow consumer 1008, `resumed elsewhere` 4001, `removed`
//! 4003) and shutdown (1001). A web adapter only converts its messages to these types.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::backplane::{Membership, NotTaken};
use crate::error::{ErrorCode, FrameError, HasErrorCode, RenameError, SendError};
use crate::hooks::{ConnectionContext, Filter, MessageAttempt, RenameAttempt, Verdict};
use crate::hub::Hub;
use crate::limits::Limits;
use crate::name::{DisplayName, RoomName};
use crate::protocol::{ClientFrame, DecodeError, Ref, error_frame};
use crate::queue::Received;
use crate::rate::Bucket;
use crate::room::check_message;
use crate::telemetry::{CloseLabel, Open};
use crate::transport::{CloseFrame, ConnectionEnd, Incoming, Outgoing, close_code};

impl Hub {
    /// Serves one client connection until it ends: the whole lifecycle of PROTOCOL.md.
    ///
    /// `incoming` yields the client's frames and ends when the connection is lost;
    /// `outgoing` takes the server's frames. A web adapter converts its WebSocket
    /// messages to [`Incoming`]/[`Outgoing`] and awaits this (usually in a spawned task).
    /// The result says whether the connection closed with a handshake or was dropped.
    ///
    /// A transport that is one value (a WebSocket is both a stream and a sink) is
    /// better given whole to [`Hub::serve_transport`]: splitting it costs a lock per
    /// frame.
    pub fn serve<S, K>(
        &self,
        context: ConnectionContext,
        incoming: S,
        outgoing: K,
    ) -> impl Future<Output = ConnectionEnd> + use<S, K>
    where
        S: Stream<Item = Incoming> + Unpin,
        K: Sink<Outgoing> + Unpin,
    {
        self.serve_transport(context, Duplex { incoming, outgoing })
    }

    /// [`Hub::serve`] for a transport that is both the stream of the client's frames
    /// and the sink for the server's.
    pub fn serve_transport<T>(
        &self,
        context: ConnectionContext,
        transport: T,
    ) -> impl Future<Output = ConnectionEnd> + use<T>
    where
        T: Stream<Item = Incoming> + Sink<Outgoing> + Unpin,
    {
        self.tracker()
            .track_future(drive(self.clone(), context, transport))
    }
}

/// How long the final close frame may take to write before the peer is dropped; and
/// how long a write already under way may still take once the connection must close
/// (the room let go of the member, or the hub shuts down), before the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most queued frames written before one flush.
const BATCH: usize = 64;
/// How many writes of queued frames go by between samples of the queue's depth.
const SAMPLE_EVERY: u32 = 16;
/// The slowest a client may take a large frame (bytes per second) before its write
/// deadline runs out: a frame of `n` bytes adds `n / MIN_WRITE_RATE` seconds to it, so
/// a newcomer on a slow link still gets a welcome of megabytes.
const MIN_WRITE_RATE: u64 = 32 * 1024;

/// Why the connection ends.
enum Ending {
    /// The peer closed the connection (its stream ended).
    PeerClosed,
    /// The peer stopped answering keepalive pings: dropped without a close frame.
    PeerGone,
    /// Close with this frame.
    Close(CloseFrame),
    /// The room let go of the member (or the hub shut down): close with this frame.
    Released(CloseFrame),
    /// The room let go of the member (or the hub shut down) while a write was blocked,
    /// and the write did not complete in time: drop outright.
    Dropped,
    /// The sink failed.
    SinkBroken,
}

type Flow = Result<(), Ending>;

struct Joined {
    room: RoomName,
    membership: Membership,
}

struct Driver<T> {
    hub: Hub,
    limits: Arc<Limits>,
    /// Shared with the rooms the connection joins (for the hooks and `Hub::members`).
    context: Arc<ConnectionContext>,
    /// The client's transport: a stream of its frames and a sink for ours.
    io: T,
    joined: Option<Joined>,
    bucket: Bucket,
    rejections: VecDeque<Instant>,
    join_deadline: Instant,
    /// When this stretch out of a room began: the opening, or the last `leave`.
    unjoined_since: Instant,
    last_heard: Instant,
    ping_sent: Option<Instant>,
    /// A `leave` waits for the room: the member's queue ending without a close frame
    /// is then the leave taking effect, not the room letting go.
    leaving: bool,
    span: tracing::Span,
    /// Queued frames written since the queue's depth was last sampled.
    unsampled: u32,
    /// The connection in the metrics, closed once whatever the end.
    open: Open,
}

enum Step {
    Shutdown,
    Queued(Received),
    Incoming(Option<Incoming>),
    Timer,
}

/// Serves one connection until it ends. See the module docs.
pub(crate) async fn drive<T>(hub: Hub, context: ConnectionContext, io: T) -> ConnectionEnd
where
    T: Stream<Item = Incoming> + Sink<Outgoing> + Unpin,
{
    let limits = hub.limits_arc();
    let now = Instant::now();
    let peer = context
        .peer_addr
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let span = tracing::info_span!(
        "connection",
        peer = %peer,
        room = tracing::field::Empty,
        member = tracing::field::Empty,
        link = tracing::field::Empty
    );
    let open = Open::new(hub.metrics().clone());
    let d = Driver {
        bucket: Bucket::new(&limits, now),
        join_deadline: now + limits.join_timeout,
        unjoined_since: now,
        hub,
        limits,
        context: Arc::new(context),
        io,
        joined: None,
        rejections: VecDeque::new(),
        last_heard: now,
        ping_sent: None,
        leaving: false,
        span: span.clone(),
        unsampled: 0,
        open,
    };
    // Everything the connection does (hooks included) is logged in its span.
    serve(d).instrument(span).await
}

async fn serve<T>(mut d: Driver<T>) -> ConnectionEnd
where
    T: Stream<Item = Incoming> + Sink<Outgoing> + Unpin,
{
    let cancel = d.hub.cancel_token();
    let timer = sleep_until(d.next_deadline());
    tokio::pin!(timer);
    let ending = loop {
        let deadline = d.next_deadline();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let step = {
            let frames = d.joined.as_ref().map(|j| &j.membership.frames);
            // The timer and the client come before the member's queue, so that a busy
            // room can starve neither the keepalive and the join timeout nor the
            // client's answers to pings (the write deadlines count on both). A client
            // cannot starve the queue in turn: its frames are rate-limited.
            tokio::select! {
                biased;
                () = cancel.cancelled() => Step::Shutdown,
                () = &mut timer => Step::Timer,
                m = d.io.next() => Step::Incoming(m),
                f = async move { match frames { Some(rx) => rx.recv().await, None => std::future::pending().await } } => Step::Queued(f),
            }
        };
        let flow = match step {
            Step::Shutdown => Err(Ending::Close(CloseFrame::going_away())),
            Step::Queued(Received::Frame(frame)) => d.write(Outgoing::Text(frame), true).await,
            Step::Queued(Received::Ended(close)) => Err(d.released_by_room(close)),
            Step::Incoming(None) => Err(Ending::PeerClosed),
            Step::Incoming(Some(frame)) => d.on_incoming(frame).await,
            Step::Timer => d.on_timer().await,
        };
        if let Err(ending) = flow {
            break ending;
        }
    };
    let (hub, context) = (d.hub.clone(), d.context.clone());
    let end = d.finish(ending).await;
    hub.hooks()
        .on_disconnect(crate::hooks::Disconnected {
            context: &context,
            end: &end,
        })
        .await;
    end
}

impl<T: Sink<Outgoing> + Unpin> Driver<T> {
    /// When a connection out of a room must have joined: the join timeout since its
    /// last attempt, and at most `max_unjoined` since it was last in a room.
    fn join_limit(&self) -> Option<Instant> {
        match self.joined {
            None => Some(
                self.join_deadline
                    .min(self.unjoined_since + self.limits.max_unjoined),
            ),
            Some(_) => None,
        }
    }

    /// The next moment a timer matters: the join timeout, or the keepalive.
    fn next_deadline(&self) -> Instant {
        let far = self.last_heard + Duration::from_secs(24 * 3600);
        let join = self.join_limit().unwrap_or(far);
        let keepalive = match (self.limits.ping_interval, self.ping_sent) {
            (None, _) => far,
            (Some(_), Some(sent)) => sent + self.limits.ping_timeout,
            (Some(every), None) => self.last_heard + every,
        };
        join.min(keepalive)
    }

    async fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        if self.join_limit().is_some_and(|limit| now >= limit) {
            return Err(join_timeout());
        }
        match (self.limits.ping_interval, self.ping_sent) {
            (Some(_), Some(sent)) if now >= sent + self.limits.ping_timeout => {
                tracing::debug!(parent: &self.span, "keepalive timed out");
                Err(Ending::PeerGone)
            }
            (Some(every), None) if now >= self.last_heard + every => {
                self.ping_sent = Some(now);
                self.write(Outgoing::Ping, false).await
            }
            _ => Ok(()),
        }
    }

    async fn on_incoming(&mut self, frame: Incoming) -> Flow {
        let now = Instant::now();
        self.last_heard = now;
        self.ping_sent = None;
        let bytes = match frame {
            Incoming::Pong => return Ok(()),
            Incoming::TooLarge => return Err(too_large()),
            Incoming::Text(bytes) if bytes.len() > self.limits.max_frame_bytes => {
                return Err(too_large());
            }
            Incoming::Text(bytes) => Some(bytes),
            Incoming::Binary => None,
        };
        if !self.bucket.take(now) {
            // Refused without its work; only its `ref` is read, to echo it.
            let reference = bytes.as_deref().and_then(ClientFrame::peek_ref);
            return self.rate_limited(now, reference).await;
        }
        let Some(bytes) = bytes else {
            let err = FrameError::BadFrame("binary frames are not accepted".into());
            return self.reply_error(&err, None).await;
        };
        match ClientFrame::decode(&bytes) {
            Ok(frame) => self.dispatch(frame).await,
            Err(DecodeError { error, reference }) => self.reply_error(&error, reference).await,
        }
    }

    /// Answers `rate_limited`; the last straw of a flood closes with 1008.
    async fn rate_limited(&mut self, now: Instant, reference: Option<Ref>) -> Flow {
        let window = self.limits.flood_window;
        while self
            .rejections
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.rejections.pop_front();
        }
        self.rejections.push_back(now);
        self.reply_error(&FrameError::RateLimited, reference)
            .await?;
        if self.rejections.len() >= self.limits.flood_rejections as usize {
            tracing::debug!(parent: &self.span, "closing a flooding connection");
            return Err(Ending::Close(CloseFrame::new(
                close_code::POLICY,
                "flooding",
            )));
        }
        Ok(())
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Flow {
        match frame {
            ClientFrame::Join {
                room,
                name,
                resume,
                since,
                reference,
            } => self.join(room, name, resume, since, reference).await,
            ClientFrame::Send { text, reference } => self.send(text, reference).await,
            ClientFrame::Rename { name, reference } => self.rename(name, reference).await,
            ClientFrame::Leave { reference } => self.leave(reference).await,
        }
    }

    async fn join(
        &mut self,
        room: String,
        name: String,
        resume: Option<String>,
        since: Option<u64>,
        reference: Option<Ref>,
    ) -> Flow {
        if self.joined.is_some() {
            self.hub
                .metrics()
                .join(resume.is_some(), ErrorCode::AlreadyJoined.as_str());
            return self
                .reply_error(&crate::error::JoinError::AlreadyJoined, reference)
                .await;
        }
        // Each attempt gives the client another full join timeout.
        self.join_deadline = Instant::now() + self.limits.join_timeout;
        let request = crate::hub::JoinFrame {
            room: &room,
            name: &name,
            resume: resume.as_deref(),
            since,
            reference: reference.clone(),
        };
        let resuming = resume.is_some();
        match self.hub.join(&self.context, request).await {
            Ok((room, membership)) => {
                self.hub.metrics().join(resuming, "welcome");
                self.span.record("room", room.as_str());
                self.span.record("member", name.as_str());
                self.span.record("link", membership.link);
                tracing::debug!(parent: &self.span, "joined");
                self.joined = Some(Joined { room, membership });
                Ok(())
            }
            Err(e) => {
                self.hub.metrics().join(resuming, e.code().as_str());
                self.reply_error(&e, reference).await
            }
        }
    }

    async fn send(&mut self, text: String, reference: Option<Ref>) -> Flow {
        let Some(joined) = &self.joined else {
            return self.reply_error(&SendError::NotJoined, reference).await;
        };
        if let Err(e) = check_message(&text, self.limits.max_message_chars) {
            return self.reply_error(&e, reference).await;
        }
        let attempt = MessageAttempt {
            room: &joined.room,
            text: &text,
            context: &self.context,
        };
        let text: Arc<str> = match self.hub.hooks().filter_message(attempt).await {
            Some(Filter::Allow) => text.into(),
            Some(Filter::Replace(replacement)) => replacement.into(),
            Some(Filter::Deny(why)) => {
                return self
                    .reply_error(&SendError::Forbidden(why), reference)
                    .await;
            }
            None => return self.reply_error(&FrameError::Internal, reference).await,
        };
        let m = &joined.membership;
        let taken = m.room.send(m.member, m.link, text, reference.clone());
        self.taken(taken, reference).await
    }

    /// What a member command the room did or did not take means for the connection.
    async fn taken(&mut self, taken: Result<(), NotTaken>, reference: Option<Ref>) -> Flow {
        match taken {
            Ok(()) => Ok(()),
            Err(NotTaken::Busy) => self.reply_error(&FrameError::RoomBusy, reference).await,
            Err(NotTaken::Gone) => Err(self.room_gone()),
            Err(NotTaken::Unavailable) => {
                self.reply_error(&FrameError::StoreUnavailable, reference)
                    .await
            }
        }
    }

    async fn rename(&mut self, name: String, reference: Option<Ref>) -> Flow {
        let Some(joined) = &self.joined else {
            return self.reply_error(&RenameError::NotJoined, reference).await;
        };
        let mut parsed = DisplayName::parse_max(&name, self.limits.max_name_chars)
            .map_err(RenameError::InvalidName);
        if let Ok(new) = &parsed {
            let attempt = RenameAttempt {
                room: &joined.room,
                name: new,
                context: &self.context,
            };
            match self.hub.hooks().authorize_rename(attempt).await {
                Some(Verdict::Allow) => {}
                Some(Verdict::Deny(why)) => parsed = Err(RenameError::Forbidden(why)),
                None => return self.reply_error(&FrameError::Internal, reference).await,
            }
        }
        // Errors go through the room too, so they arrive in order with the events.
        let m = &joined.membership;
        let taken = m.room.rename(m.member, m.link, parsed, reference.clone());
        self.taken(taken, reference).await
    }

    async fn leave(&mut self, reference: Option<Ref>) -> Flow {
        let Some(joined) = &self.joined else {
            return self.reply_error(&FrameError::NotJoined, reference).await;
        };
        let m = &joined.membership;
        let reply = match m.room.leave(m.member, m.link) {
            Ok(reply) => reply,
            Err(busy_or_gone) => return self.taken(Err(busy_or_gone), reference).await,
        };
        // The room answers once it handled everything queued before the leave: keep
        // delivering meanwhile, or a busy room would fill the member's queue.
        self.leaving = true;
        let left = self.await_leave(reply).await;
        self.leaving = false;
        match left? {
            Ok(true) => {}
            // This connection no longer holds the membership (a newer one took it over,
            // or the room cut it off): nothing changed, and the close that says why is
            // queued for the main loop.
            Ok(false) => return Ok(()),
            // The leave did not happen: the member stays, and hears why.
            Err(NotTaken::Unavailable) => {
                return self
                    .reply_error(&FrameError::StoreUnavailable, reference)
                    .await;
            }
            Err(_) => return Err(self.room_gone()),
        }
        let Some(Joined { membership, .. }) = self.joined.take() else {
            return Ok(());
        };
        let now = Instant::now();
        self.join_deadline = now + self.limits.join_timeout;
        self.unjoined_since = now;
        // Everything the room queued before the leave took effect is still owed.
        while let Some(frame) = membership.frames.try_recv() {
            self.write(Outgoing::Text(frame), false).await?;
        }
        tracing::debug!(parent: &self.span, "left");
        Ok(())
    }

    /// Waits for the room's answer to a leave while delivering what the room sends.
    async fn await_leave(
        &mut self,
        mut reply: BoxFuture<'static, Result<bool, NotTaken>>,
    ) -> Result<Result<bool, NotTaken>, Ending> {
        loop {
            let step = {
                let Some(joined) = &self.joined else {
                    return Ok(Ok(false));
                };
                tokio::select! {
                    biased;
                    left = &mut reply => Ok(left),
                    frame = joined.membership.frames.recv() => Err(frame),
                }
            };
            match step {
                Ok(left) => return Ok(left),
                Err(Received::Frame(frame)) => self.write(Outgoing::Text(frame), false).await?,
                // The leave itself ends the queue, just before the room answers it.
                Err(Received::Ended(close)) => {
                    return match (&mut reply).await {
                        Ok(true) => Ok(Ok(true)),
                        _ => Err(self.released_by_room(close)),
                    };
                }
            }
        }
    }

    /// The room ended the membership: close as it asked.
    fn released_by_room(&mut self, close: Option<CloseFrame>) -> Ending {
        self.joined = None;
        Ending::Released(release_frame(close, &self.hub, &self.span))
    }

    fn room_gone(&mut self) -> Ending {
        if self.hub.cancel_token().is_cancelled() {
            Ending::Close(CloseFrame::going_away())
        } else {
            tracing::error!(parent: &self.span, "room task ended under a live member");
            Ending::Close(CloseFrame::new(close_code::INTERNAL, "internal error"))
        }
    }

    async fn reply_error(&mut self, err: &dyn HasErrorCode, reference: Option<Ref>) -> Flow {
        let code = err.code().as_str();
        self.hub.metrics().refused(code);
        tracing::debug!(parent: &self.span, code, "frame refused");
        self.write(Outgoing::Text(error_frame(err, reference)), false)
            .await
    }

    /// The latest moment a write of a `bytes`-long frame starting at `now` may
    /// complete, and what ends the connection if it does not. A write may take no
    /// longer than `ping_timeout`, nor outlast the keepalive (a peer that reads nothing
    /// is as dead as one that says nothing) or, out of a room, the join timeout; plus
    /// the time the frame takes at [`MIN_WRITE_RATE`].
    fn write_deadline(&self, now: Instant, bytes: usize) -> (Instant, Ending) {
        let timeout = self.limits.ping_timeout;
        let transfer = Duration::from_millis(
            u64::try_from(bytes)
                .unwrap_or(u64::MAX)
                .saturating_mul(1000)
                / MIN_WRITE_RATE,
        );
        let mut deadline = now + timeout;
        if let Some(every) = self.limits.ping_interval {
            let keepalive = match self.ping_sent {
                Some(sent) => sent + timeout,
                None => self.last_heard + every + timeout,
            };
            deadline = deadline.min(keepalive);
        }
        let deadline = deadline + transfer;
        match self.join_limit() {
            Some(join) if join < deadline => (join, join_timeout()),
            _ => (deadline, Ending::PeerGone),
        }
    }

    /// Writes `first` (and with `drain`, what else is queued), then flushes, racing the
    /// connection's deadlines ([`Self::write_deadline`]). If meanwhile the room lets go
    /// of the member (kick, takeover, slow consumer) or the hub shuts down, the write
    /// may still finish within [`CLOSE_WRITE_TIMEOUT`], and then the connection closes
    /// with the close frame that says why; a write still blocked then drops the peer.
    async fn write(&mut self, first: Outgoing, drain: bool) -> Flow {
        let bytes = match &first {
            Outgoing::Text(frame) => frame.len(),
            Outgoing::Ping | Outgoing::Close(_) => 0,
        };
        let (deadline, late) = self.write_deadline(Instant::now(), bytes);
        if let (true, Some(joined)) = (drain, &self.joined) {
            // One write in SAMPLE_EVERY samples the depth: a lock and a histogram
            // record per frame would cost the burst scenario.
            self.unsampled += 1;
            if self.unsampled >= SAMPLE_EVERY {
                self.unsampled = 0;
                let depth = 1 + joined.membership.frames.len();
                self.hub.metrics().queue_depth.record(depth as f64);
            }
        }
        let cancel = self.hub.cancel_token();
        let (hub, span, leaving) = (&self.hub, &self.span, self.leaving);
        let sink = &mut self.io;
        let frames = self.joined.as_ref().map(|j| &j.membership.frames);
        let write = async move {
            sink.feed(first).await?;
            if let (true, Some(rx)) = (drain, frames) {
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Some(frame) => sink.feed(Outgoing::Text(frame)).await?,
                        None => break,
                    }
                }
            }
            sink.flush().await
        };
        let released = async move {
            match frames {
                Some(rx) => rx.ended().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(write, released);
        // Most writes complete at once (the socket takes the frames): no timer then.
        let first_try = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        if let Poll::Ready(written) = first_try {
            return written.map_err(|_| Ending::SinkBroken);
        }
        let timer = sleep_until(deadline);
        tokio::pin!(timer);
        // Set once the connection must close while the write is under way.
        let mut closing: Option<CloseFrame> = None;
        let mut release_seen = false;
        loop {
            tokio::select! {
                biased;
                written = &mut write => {
                    return match (written, closing) {
                        (Err(_), _) => Err(Ending::SinkBroken),
                        (Ok(()), Some(frame)) => Err(Ending::Released(frame)),
                        (Ok(()), None) => Ok(()),
                    };
                }
                close = &mut released, if closing.is_none() && !release_seen => {
                    release_seen = true;
                    // While leaving, an end without a close frame is the leave itself:
                    // the write goes on, and the leave's answer follows.
                    if close.is_some() || !leaving {
                        closing = Some(release_frame(close, hub, span));
                        timer.as_mut().reset(deadline.min(Instant::now() + CLOSE_WRITE_TIMEOUT));
                    }
                }
                () = cancel.cancelled(), if closing.is_none() => {
                    closing = Some(CloseFrame::going_away());
                    timer.as_mut().reset(deadline.min(Instant::now() + CLOSE_WRITE_TIMEOUT));
                }
                () = &mut timer => {
                    if closing.is_some() {
                        return Err(Ending::Dropped);
                    }
                    tracing::debug!(parent: span, "a write did not complete in time");
                    return Err(late);
                }
            }
        }
    }

    async fn finish(mut self, ending: Ending) -> ConnectionEnd {
        if matches!(ending, Ending::Dropped | Ending::Released(_)) {
            // The room already let go of the member (or is shutting down).
            self.joined = None;
        }
        if let Some(j) = self.joined.take() {
            let m = j.membership;
            m.room.disconnect(m.member, m.link).await;
        }
        match ending {
            Ending::Close(frame) | Ending::Released(frame) => {
                tracing::info!(parent: &self.span, code = frame.code, reason = %frame.reason, "closed");
                self.open.close(CloseLabel::Code(frame.code));
                let close = async {
                    self.io.send(Outgoing::Close(frame.clone())).await?;
                    self.io.close().await
                };
                match timeout(CLOSE_WRITE_TIMEOUT, close).await {
                    Ok(Ok(())) => ConnectionEnd::Closed(frame),
                    _ => ConnectionEnd::Dropped,
                }
            }
            Ending::PeerClosed => {
                tracing::info!(parent: &self.span, "closed by the client");
                self.open.close(CloseLabel::Peer);
                // Let the transport finish its side of the closing handshake.
                let _ = timeout(CLOSE_WRITE_TIMEOUT, self.io.flush()).await;
                ConnectionEnd::ClosedByPeer
            }
            // Dropped outright: no close frame.
            Ending::PeerGone | Ending::Dropped | Ending::SinkBroken => {
                let why = match ending {
                    Ending::PeerGone => "the client stopped answering",
                    Ending::Dropped => "a write did not complete after the room let go",
                    _ => "the connection broke",
                };
                tracing::info!(parent: &self.span, reason = why, "dropped without a close frame");
                self.open.close(CloseLabel::Dropped);
                ConnectionEnd::Dropped
            }
        }
    }
}

/// A transport given as two halves, as one value for [`drive`].
pub(crate) struct Duplex<S, K> {
    pub(crate) incoming: S,
    pub(crate) outgoing: K,
}

impl<S: Stream<Item = Incoming> + Unpin, K: Unpin> Stream for Duplex<S, K> {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.get_mut().incoming.poll_next_unpin(cx)
    }
}

impl<S: Unpin, K: Sink<Outgoing> + Unpin> Sink<Outgoing> for Duplex<S, K> {
    type Error = K::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), K::Error>> {
        self.get_mut().outgoing.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Outgoing) -> Result<(), K::Error> {
        self.get_mut().outgoing.start_send_unpin(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), K::Error>> {
        self.get_mut().outgoing.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), K::Error>> {
        self.get_mut().outgoing.poll_close_unpin(cx)
    }
}

/// The close frame for a membership the room ended, with `close` as it gave it.
fn release_frame(close: Option<CloseFrame>, hub: &Hub, span: &tracing::Span) -> CloseFrame {
    match close {
        Some(frame) => frame,
        None if hub.is_shutting_down() => CloseFrame::going_away(),
        None => {
            tracing::error!(parent: span, "room ended a membership without a reason");
            CloseFrame::new(close_code::INTERNAL, "internal error")
        }
    }
}

fn join_timeout() -> Ending {
    Ending::Close(CloseFrame::new(close_code::POLICY, "join timeout"))
}

fn too_large() -> Ending {
    Ending::Close(CloseFrame::new(close_code::TOO_BIG, "frame too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let f = CloseFrame::new(4003, &long);
        assert!(f.reason.len() <= 123);
        assert_eq!(f.reason.len() % 2, 0);
        assert_eq!(CloseFrame::removed("").reason, "removed");
        assert_eq!(CloseFrame::removed("spam").reason, "removed: spam");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_at_its_rate() {
        let limits = Limits {
            rate_burst: 2,
            rate_per_sec: 10,
            ..Limits::default()
        };
        let start = Instant::now();
        let mut b = Bucket::new(&limits, start);
        assert!(b.take(start) && b.take(start));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_millis(100)));
        assert!(!b.take(start + Duration::from_millis(150)));
    }
}
