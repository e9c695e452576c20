//! What the hub counts and paces before any room is involved: the connections
//! admitted at the upgrade and the JSON API's request budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Paces the JSON API to [`Limits::api_requests_per_sec`](crate::Limits): a request
/// beyond the budget waits for its turn, up to
/// [`Limits::api_max_wait`](crate::Limits), and is refused when its turn is further
/// off than that. Requests that wait slow down clients that loop on the API (each
/// waits for its answer before it asks again), which a refusal would not: a refusal
/// costs the server about what an answer does, and the client asks again at once.
///
/// A generic cell rate algorithm (as nginx's `limit_req` with a `burst`): `due` is
/// when the budget would be full again had no request come since.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    due: Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    /// How long a request arriving `now` waits for its turn (and takes it), or `None`
    /// if its turn is more than `max_wait` away (it is refused and takes nothing).
    fn turn(
        &self,
        per_sec: u32,
        burst: u32,
        max_wait: std::time::Duration,
        now: tokio::time::Instant,
    ) -> Option<std::time::Duration> {
        let interval = std::time::Duration::from_secs(1) / per_sec.max(1);
        let tolerance = interval.saturating_mul(burst.saturating_sub(1));
        // One assignment per request: the value stays meaningful after a panic.
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let full = due.map_or(now, |d| d.max(now));
        let wait = full
            .checked_sub(tolerance)
            .map_or(std::time::Duration::ZERO, |start| {
                start.saturating_duration_since(now)
            });
        if wait > max_wait {
            return None;
        }
        *due = Some(full + interval);
        Some(wait)
    }

    /// Waits for this request's turn; `Err` if it is too far off (the API answers 503
    /// `busy`).
    pub(crate) async fn wait_turn(&self, limits: &crate::limits::Limits) -> Result<(), TooBusy> {
        let now = tokio::time::Instant::now();
        let turn = self.turn(
            limits.api_requests_per_sec,
            limits.api_burst,
            limits.api_max_wait,
            now,
        );
        match turn {
            None => Err(TooBusy),
            Some(wait) if wait.is_zero() => Ok(()),
            Some(wait) => {
                tokio::time::sleep_until(now + wait).await;
                Ok(())
            }
        }
    }
}

/// A request's turn is further off than the API may make it wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooBusy;

/// The connections admitted at the upgrade and still open, in total and per address.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    pub(crate) total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl Admitted {
    pub(crate) fn per_address(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every edit is one insert or remove: the map stays consistent.
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open chat connection counted against the hub's connection limits; the count is
/// given back when this is dropped. [`check_upgrade`](crate::api::check_upgrade) hands it out: an adapter keeps it
/// for as long as it serves the connection.
#[derive(Debug)]
#[must_use = "the connection counts as open only while its admission is held"]
pub struct Admission {
    pub(crate) admitted: Arc<Admitted>,
    pub(crate) address: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(address) = self.address {
            let mut per_address = self.admitted.per_address();
            if let Some(open) = per_address.get_mut(&address) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    per_address.remove(&address);
                }
            }
        }
    }
}
