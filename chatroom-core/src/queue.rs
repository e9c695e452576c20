//! A member's outgoing queue: bounded, one producer (the room task) and one consumer
//! (the member's connection driver).
//!
//! It replaces a `tokio::sync::mpsc` channel plus a `oneshot` for the close reason.
//! Fan-out pushes one frame into every member's queue, so this is the hottest path of
//! a busy room and the largest per-member allocation of an idle one: here a push takes
//! one short lock (shared only with the member's driver) and touches the queue's own
//! state and one slot; an empty queue is about 100 bytes (the mpsc channel allocates
//! its first block of 32 slots up front, over 1 KiB together with the oneshot), and a
//! queue that a burst grew gives that memory back once it is drained.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use crate::protocol::TextFrame;
use crate::transport::CloseFrame;

/// A member's queue whose capacity is `capacity` frames (at least 1): the backplane
/// keeps the sender, the [`Membership`](crate::backplane::Membership) carries the
/// receiver to the connection driver.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Mutex::new(State {
        frames: VecDeque::new(),
        capacity: capacity.max(1),
        end: End::Open,
        waker: None,
        end_waker: None,
        close: None,
    }));
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

#[derive(Debug)]
struct State {
    frames: VecDeque<TextFrame>,
    capacity: usize,
    end: End,
    /// The consumer's task, while it waits for a frame (woken by a push or the end).
    waker: Option<Waker>,
    /// The consumer's task, while it waits for the end only (a push does not wake it:
    /// it waits there while its connection's write is blocked).
    end_waker: Option<Waker>,
    /// The close frame the room ended the queue with. Kept out of `end` so that what a
    /// push reads stays small.
    close: Option<CloseFrame>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// The producer ended the queue (with the close frame in `close`, if any).
    Ended,
    /// The consumer is gone: pushes fail.
    ReceiverGone,
}

/// A drained queue keeps at most this many slots of capacity: a member that once fell
/// behind (a burst) does not keep the memory for it while idle.
const KEEP_WHEN_EMPTY: usize = 32;

impl State {
    fn pop(&mut self) -> Option<TextFrame> {
        let frame = self.frames.pop_front()?;
        if self.frames.is_empty() && self.frames.capacity() > KEEP_WHEN_EMPTY {
            self.frames = VecDeque::new();
        }
        Some(frame)
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code path panics while holding the lock; if one ever did, the queue's state is
    // still consistent (every update is a single push, pop or assignment).
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `capacity` frames: the consumer is too slow.
    Full,
    /// The consumer is gone.
    Closed,
}

/// The room's end. Dropping it ends the queue without a close frame (the connection
/// then closes with 1011).
#[derive(Debug)]
pub struct QueueSender {
    shared: Arc<Mutex<State>>,
}

impl QueueSender {
    /// Queues `frame` unless the queue is full or the consumer is gone.
    pub fn push(&self, frame: TextFrame) -> Result<(), PushError> {
        let waker = {
            let mut state = lock(&self.shared);
            match state.end {
                End::Open => {}
                End::Ended | End::ReceiverGone => return Err(PushError::Closed),
            }
            if state.frames.len() >= state.capacity {
                return Err(PushError::Full);
            }
            state.frames.push_back(frame);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the queue: the consumer gets what is queued, then the end, with `close`.
    pub fn end(self, close: Option<CloseFrame>) {
        self.finish(close);
    }

    fn finish(&self, close: Option<CloseFrame>) {
        let wakers = {
            let mut state = lock(&self.shared);
            if let End::Open = state.end {
                state.end = End::Ended;
                state.close = close;
            }
            [state.waker.take(), state.end_waker.take()]
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The connection driver's end.
#[derive(Debug)]
pub struct QueueReceiver {
    shared: Arc<Mutex<State>>,
}

/// What [`QueueReceiver::recv`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// The next frame.
    Frame(TextFrame),
    /// The queue is empty and the room ended it, with this close frame if it gave one.
    Ended(Option<CloseFrame>),
}

impl QueueReceiver {
    /// The next frame, waiting for one; or the end once the queue is drained.
    pub(crate) async fn recv(&self) -> Received {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if let Some(frame) = state.pop() {
                return Poll::Ready(Received::Frame(frame));
            }
            if let End::Ended = state.end {
                return Poll::Ready(Received::Ended(state.close.take()));
            }
            register(&mut state.waker, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// How many frames are queued.
    pub(crate) fn len(&self) -> usize {
        lock(&self.shared).frames.len()
    }

    /// The next frame if one is queued.
    pub(crate) fn try_recv(&self) -> Option<TextFrame> {
        lock(&self.shared).pop()
    }

    /// Resolves once the room ended the queue (whatever is still queued), with the
    /// close frame it ended it with, which is taken: [`recv`](Self::recv) then ends
    /// without it.
    pub(crate) async fn ended(&self) -> Option<CloseFrame> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if let End::Ended = state.end {
                return Poll::Ready(state.close.take());
            }
            register(&mut state.end_waker, cx.waker());
            Poll::Pending
        })
        .await
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.end = End::ReceiverGone;
        // Queued frames are released now, not when the room drops its end.
        state.frames = VecDeque::new();
        state.waker = None;
        state.end_waker = None;
    }
}

#[cfg(test)]
mod tests {
    use std::task::Context;

    use futures_util::task::noop_waker_ref;

    use super::*;

    fn frame(s: &'static str) -> TextFrame {
        TextFrame::json(s)
    }

    #[tokio::test]
    async fn frames_come_out_in_order_then_the_end_with_its_close_frame() {
        let (tx, rx) = queue(4);
        tx.push(frame("a")).unwrap();
        tx.push(frame("b")).unwrap();
        tx.end(Some(CloseFrame::new(4001, "resumed elsewhere")));
        assert_eq!(rx.recv().await, Received::Frame(frame("a")));
        assert_eq!(rx.try_recv(), Some(frame("b")));
        assert_eq!(
            rx.recv().await,
            Received::Ended(Some(CloseFrame::new(4001, "resumed elsewhere")))
        );
    }

    #[tokio::test]
    async fn a_dropped_sender_ends_the_queue_without_a_close_frame() {
        let (tx, rx) = queue(4);
        tx.push(frame("a")).unwrap();
        drop(tx);
        assert_eq!(rx.ended().await, None);
        assert_eq!(rx.recv().await, Received::Frame(frame("a")));
        assert_eq!(rx.recv().await, Received::Ended(None));
    }

    #[test]
    fn a_full_queue_refuses_and_a_gone_receiver_is_reported() {
        let (tx, rx) = queue(2);
        tx.push(frame("a")).unwrap();
        tx.push(frame("b")).unwrap();
        assert_eq!(tx.push(frame("c")), Err(PushError::Full));
        drop(rx);
        assert_eq!(tx.push(frame("d")), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_consumer() {
        let (tx, rx) = queue(2);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.push(frame("a")).unwrap();
        assert_eq!(waiter.await.unwrap(), Received::Frame(frame("a")));
    }

    #[tokio::test]
    async fn the_end_wakes_a_consumer_waiting_for_it_and_a_push_does_not_end_the_wait() {
        let (tx, rx) = queue(2);
        let waiter = tokio::spawn(async move {
            let close = rx.ended().await;
            (close, rx.try_recv())
        });
        tokio::task::yield_now().await;
        tx.push(frame("a")).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.end(Some(CloseFrame::new(4003, "removed")));
        assert_eq!(
            waiter.await.unwrap(),
            (Some(CloseFrame::new(4003, "removed")), Some(frame("a")))
        );
    }

    #[test]
    fn a_drained_queue_gives_back_what_a_burst_grew() {
        let (tx, rx) = queue(4096);
        for _ in 0..1000 {
            tx.push(frame("a")).unwrap();
        }
        assert!(lock(&rx.shared).frames.capacity() >= 1000);
        while rx.try_recv().is_some() {}
        assert_eq!(lock(&rx.shared).frames.capacity(), 0);
        // A short queue keeps its small buffer between frames.
        tx.push(frame("b")).unwrap();
        assert_eq!(rx.try_recv(), Some(frame("b")));
        assert!(lock(&rx.shared).frames.capacity() > 0);
    }

    #[test]
    fn pending_while_open_and_empty() {
        let (_tx, rx) = queue(2);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut recv = std::pin::pin!(rx.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
    }
}
