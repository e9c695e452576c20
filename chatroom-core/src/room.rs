//! The rules of one room as a plain state machine: no tokio, no clock, no randomness.
//!
//! Time (`Now`), member ids and resume tokens are passed in, so the same inputs always
//! give the same outputs. Every rule of PROTOCOL.md about a room lives here once:
//! unique keys among present and away members, a join is an event, rename atomicity,
//! gapless ids, history as an unbroken suffix, resume by `since`, and the grace period.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::error::{JoinError, RenameError, SendError};
use crate::limits::Limits;
use crate::name::{DisplayName, NameKey, RoomName};
use crate::protocol::{Event, MemberEvent, MessageEvent, RenamedEvent, TextFrame};
use crate::token::ResumeToken;

/// Identifies a member within its room. Chosen by the caller; must be unique per room.
pub type MemberId = u64;

/// The present moment, passed in: wall time for event timestamps, a monotonic instant
/// for grace deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since the Unix epoch, stamped on events.
    pub ts: u64,
    /// A monotonic instant, for deadlines.
    pub instant: Instant,
}

/// Whether a member has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Connected.
    Present,
    /// Its connection ended without `leave`; it is freed at `until` unless resumed.
    Away {
        /// When the grace period runs out.
        until: Instant,
    },
}

/// One member of a room.
#[derive(Debug, Clone)]
pub struct Member {
    /// The caller's id for it.
    pub id: MemberId,
    /// Its current display name.
    pub name: DisplayName,
    /// Present or away.
    pub presence: Presence,
    /// When it joined (its fresh join; a resume keeps it), in milliseconds since the
    /// Unix epoch, as event timestamps.
    pub joined_at: u64,
    token: ResumeToken,
}

/// An event together with its encoded frame, which all receivers share.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The typed event.
    pub event: Event,
    /// Its JSON, encoded once.
    pub frame: TextFrame,
}

/// What a newcomer or a resuming member is told in its `welcome`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room's display name.
    pub room: Arc<str>,
    /// The member's display name.
    pub name: Arc<str>,
    /// Display names of all members in join order.
    pub members: Vec<Arc<str>>,
    /// Encoded history events, oldest first, ending at `last_id`.
    pub history: Vec<TextFrame>,
    /// The room's latest event id.
    pub last_id: u64,
    /// True when events after `since` were no longer retained.
    pub gap: bool,
}

/// A successful resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The member taken back.
    pub member: MemberId,
    /// Whether the member was still present (so its older connection must be closed).
    pub was_present: bool,
}

/// Why an operation on a member failed: no such member in this room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such member in this room")]
pub struct NotMember;

/// Gives back most of a vector's capacity once it holds less than a quarter of it: a
/// room that once had thousands of members does not keep their slots when a few stay.
pub(crate) fn shrink_after_peak<T>(v: &mut Vec<T>) {
    if v.capacity() > 16 && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// Checks a message text against the rules: not empty after trimming, at most `max`
/// characters (counted after NFC, before trimming).
pub fn check_message(text: &str, max: usize) -> Result<(), SendError> {
    if text.trim_matches(char::is_whitespace).is_empty() {
        return Err(SendError::Empty);
    }
    let len = match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => text.chars().count(),
        _ => text.chars().nfc().count(),
    };
    if len > max {
        return Err(SendError::TooLong { len, max });
    }
    Ok(())
}

/// The state of one room.
#[derive(Debug, Clone)]
pub struct Room {
    name: RoomName,
    display: Arc<str>,
    members: Vec<Member>,
    last_id: u64,
    history: VecDeque<(u64, TextFrame)>,
    history_cap: usize,
    /// How many members are away, so that finding the next deadline is free when none is.
    away: usize,
    max_members: usize,
    max_message_chars: usize,
    grace: Duration,
}

impl Room {
    /// A new, empty room named by its creator.
    pub fn new(name: RoomName, limits: &Limits) -> Room {
        Room {
            display: name.to_shared(),
            name,
            members: Vec::new(),
            last_id: 0,
            history: VecDeque::new(),
            history_cap: limits.history.max(1),
            away: 0,
            max_members: limits.max_members,
            max_message_chars: limits.max_message_chars,
            grace: limits.resume_grace,
        }
    }

    /// The room's name as its creator spelled it.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// Members, present or away, in join order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The member whose name collides with `key`.
    pub fn member_by_key(&self, key: &NameKey) -> Option<&Member> {
        self.members.iter().find(|m| m.name.key() == key)
    }

    /// The id of the latest event (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Encoded events retained for history, oldest first, with their ids.
    pub fn history(&self) -> impl Iterator<Item = (u64, &TextFrame)> {
        self.history.iter().map(|(id, f)| (*id, f))
    }

    /// True once no member, present or away, is left: the room should be freed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A fresh join. The `joined` event is the member's first: its welcome ends with it.
    pub fn join(
        &mut self,
        id: MemberId,
        name: DisplayName,
        token: ResumeToken,
        now: Now,
    ) -> Result<Recorded, JoinError> {
        if let Some(holder) = self.member_by_key(name.key()) {
            return Err(JoinError::NameTaken {
                taken: holder.name.to_string(),
            });
        }
        if self.members.len() >= self.max_members {
            return Err(JoinError::RoomFull {
                max: self.max_members,
            });
        }
        let shared = name.to_shared();
        self.members.push(Member {
            id,
            name,
            presence: Presence::Present,
            joined_at: now.ts,
            token,
        });
        Ok(self.record(now, |id, ts| {
            Event::Joined(MemberEvent {
                id,
                ts,
                name: shared,
            })
        }))
    }

    /// The member (present or away) whose resume token is `token`, if any. Changes
    /// nothing: the host's policy looks at who would come back before the resume.
    pub fn token_holder(&self, token: &ResumeToken) -> Option<&Member> {
        self.position_of(token).and_then(|i| self.members.get(i))
    }

    fn position_of(&self, token: &ResumeToken) -> Option<usize> {
        // Compare against every member so the time taken does not reveal which matched.
        let mut found = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.token.matches(token) {
                found = Some(i);
            }
        }
        found
    }

    /// Takes a membership back by its token; the member becomes present. No event.
    pub fn resume(&mut self, token: &ResumeToken) -> Result<Resumed, JoinError> {
        let member = self
            .position_of(token)
            .and_then(|i| self.members.get_mut(i))
            .ok_or(JoinError::ResumeFailed)?;
        let was_present = member.presence == Presence::Present;
        if !was_present {
            self.away -= 1;
        }
        member.presence = Presence::Present;
        Ok(Resumed {
            member: member.id,
            was_present,
        })
    }

    /// What member `id` is told in its `welcome`. With `since`, the history is the
    /// events after it if still retained (else `gap` and everything retained); without,
    /// it is everything retained.
    pub fn snapshot(&self, id: MemberId, since: Option<u64>) -> Result<Snapshot, NotMember> {
        let member = self.member(id).ok_or(NotMember)?;
        let (history, gap) = self.history_since(since);
        Ok(Snapshot {
            room: self.display.clone(),
            name: member.name.to_shared(),
            members: self.members.iter().map(|m| m.name.to_shared()).collect(),
            history,
            last_id: self.last_id,
            gap,
        })
    }

    /// The retained events after `since` (all with `None`), and whether some events
    /// after `since` are no longer retained: a welcome's `history` and `gap`. A `since`
    /// beyond the last event is a gap too (the client saw events the room does not
    /// have), with everything retained.
    pub fn history_since(&self, since: Option<u64>) -> (Vec<TextFrame>, bool) {
        let oldest = self.history.front().map_or(self.last_id + 1, |(id, _)| *id);
        let (skip_through, gap) = match since {
            None => (0, false),
            Some(s) if s == self.last_id => (self.last_id, false),
            // The client has events this room never had (or no longer has: a cluster's
            // store lost them): everything retained, and a gap.
            Some(s) if s > self.last_id => (0, true),
            Some(s) => (s, s + 1 < oldest),
        };
        let history = self
            .history
            .iter()
            .filter(|(id, _)| *id > skip_through)
            .map(|(_, f)| f.clone())
            .collect();
        (history, gap)
    }

    /// The resume token of member `id`.
    pub fn token(&self, id: MemberId) -> Option<ResumeToken> {
        self.member(id).map(|m| m.token)
    }

    /// A message from member `id`.
    pub fn send(&mut self, id: MemberId, text: Arc<str>, now: Now) -> Result<Recorded, SendError> {
        let from = self
            .member(id)
            .ok_or(SendError::NotJoined)?
            .name
            .to_shared();
        check_message(&text, self.max_message_chars)?;
        Ok(self.record(now, |id, ts| {
            Event::Message(MessageEvent {
                id,
                ts,
                from,
                text,
                system: false,
            })
        }))
    }

    /// A message from the host application, not from a member.
    pub fn post(&mut self, from: Arc<str>, text: Arc<str>, now: Now) -> Recorded {
        self.record(now, |id, ts| {
            Event::Message(MessageEvent {
                id,
                ts,
                from,
                text,
                system: true,
            })
        })
    }

    /// Renames member `id`. Atomic: on error nothing changed. A change of case of one's
    /// own name (same key) is allowed and announced.
    pub fn rename(
        &mut self,
        id: MemberId,
        new: DisplayName,
        now: Now,
    ) -> Result<Recorded, RenameError> {
        if let Some(holder) = self.member_by_key(new.key())
            && holder.id != id
        {
            return Err(RenameError::NameTaken {
                taken: holder.name.to_string(),
            });
        }
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(RenameError::NotJoined)?;
        let from = member.name.to_shared();
        let to = new.to_shared();
        member.name = new;
        Ok(self.record(now, |id, ts| {
            Event::Renamed(RenamedEvent { id, ts, from, to })
        }))
    }

    /// Member `id` leaves (or is removed): gone at once, others get `left`.
    pub fn leave(&mut self, id: MemberId, now: Now) -> Result<Recorded, NotMember> {
        let pos = self
            .members
            .iter()
            .position(|m| m.id == id)
            .ok_or(NotMember)?;
        let gone = self.members.remove(pos);
        shrink_after_peak(&mut self.members);
        if gone.presence != Presence::Present {
            self.away -= 1;
        }
        let name = gone.name.to_shared();
        Ok(self.record(now, |id, ts| Event::Left(MemberEvent { id, ts, name })))
    }

    /// Member `id` lost its connection: it becomes away until `now + grace`. Returns
    /// false if it was not a present member.
    pub fn disconnect(&mut self, id: MemberId, now: Now) -> bool {
        match self.members.iter_mut().find(|m| m.id == id) {
            Some(m) if m.presence == Presence::Present => {
                m.presence = Presence::Away {
                    until: now.instant + self.grace,
                };
                self.away += 1;
                true
            }
            _ => false,
        }
    }

    /// The earliest grace deadline of an away member.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.away == 0 {
            return None;
        }
        self.members
            .iter()
            .filter_map(|m| match m.presence {
                Presence::Away { until } => Some(until),
                Presence::Present => None,
            })
            .min()
    }

    /// Frees every away member whose grace ran out by `now`, in join order: each one's
    /// id and `left` event.
    pub fn expire_due(&mut self, now: Now) -> Vec<(MemberId, Recorded)> {
        if self.away == 0 {
            return Vec::new();
        }
        let due: Vec<MemberId> = self
            .members
            .iter()
            .filter(|m| matches!(m.presence, Presence::Away { until } if until <= now.instant))
            .map(|m| m.id)
            .collect();
        due.into_iter()
            .filter_map(|id| Some((id, self.leave(id, now).ok()?)))
            .collect()
    }

    fn record(&mut self, now: Now, make: impl FnOnce(u64, u64) -> Event) -> Recorded {
        self.last_id += 1;
        let event = make(self.last_id, now.ts);
        let frame = event.encode();
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back((self.last_id, frame.clone()));
        Recorded { event, frame }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DisplayName {
        DisplayName::parse(s).expect("valid name")
    }

    fn token(n: u8) -> ResumeToken {
        ResumeToken::from_bytes([n; 16])
    }

    fn room(limits: &Limits) -> (Room, Now) {
        let room = Room::new(RoomName::parse("General").expect("valid"), limits);
        (
            room,
            Now {
                ts: 1000,
                instant: Instant::now(),
            },
        )
    }

    #[test]
    fn a_join_is_an_event_and_the_welcome_ends_with_it() {
        let (mut r, now) = room(&Limits::default());
        r.join(1, name("Bob"), token(1), now).expect("joins");
        let joined = r.join(2, name("Alice"), token(2), now).expect("joins");
        assert_eq!(joined.event.id(), 2);
        let snap = r.snapshot(2, None).expect("member");
        assert_eq!(snap.last_id, 2);
        assert_eq!(snap.history.last(), Some(&joined.frame));
        assert_eq!(
            snap.members.iter().map(|m| &**m).collect::<Vec<_>>(),
            ["Bob", "Alice"]
        );
        assert_eq!(&*snap.room, "General");
    }

    #[test]
    fn the_member_list_gives_back_its_peak_capacity() {
        let (mut r, now) = room(&Limits::default());
        for i in 0..1000u64 {
            r.join(i, name(&format!("m{i}")), token((i % 250) as u8), now)
                .expect("joins");
        }
        let peak = r.members.capacity();
        assert!(peak >= 1000);
        for i in 2..1000u64 {
            r.leave(i, now).expect("a member");
        }
        assert!(
            r.members.capacity() <= 16,
            "{} of {peak} kept",
            r.members.capacity()
        );
        assert_eq!(r.members().len(), 2);
    }

    #[test]
    fn names_collide_by_key_among_present_and_away() {
        let (mut r, now) = room(&Limits::default());
        r.join(1, name("Alice"), token(1), now).expect("joins");
        assert!(r.disconnect(1, now));
        assert_eq!(
            r.join(2, name("ＡＬＩＣＥ"), token(2), now).map(|_| ()),
            Err(JoinError::NameTaken {
                taken: "Alice".into()
            })
        );
        assert_eq!(r.last_id(), 1, "a refused join records nothing");
    }

    #[test]
    fn rename_is_atomic_and_allows_a_change_of_case() {
        let (mut r, now) = room(&Limits::default());
        r.join(1, name("Carol"), token(1), now).expect("joins");
        r.join(2, name("Bob"), token(2), now).expect("joins");
        assert!(matches!(
            r.rename(1, name("BOB"), now),
            Err(RenameError::NameTaken { .. })
        ));
        assert_eq!(r.member(1).map(|m| m.name.as_str()), Some("Carol"));
        let ev = r.rename(1, name("CAROL"), now).expect("own key");
        assert!(
            matches!(ev.event, Event::Renamed(ref e) if &*e.from == "Carol" && &*e.to == "CAROL")
        );
        assert_eq!(
            r.members()[0].name.as_str(),
            "CAROL",
            "a rename keeps the place"
        );
    }

    #[test]
    fn resume_by_since_returns_exactly_the_missed_events_or_a_gap() {
        let limits = Limits {
            history: 5,
            ..Limits::default()
        };
        let (mut r, now) = room(&limits);
        r.join(1, name("A"), token(1), now).expect("joins");
        for i in 0..3 {
            r.send(1, format!("m{i}").into(), now).expect("sent");
        }
        assert!(r.disconnect(1, now));
        let back = r.resume(&token(1)).expect("resumes");
        assert_eq!(
            back,
            Resumed {
                member: 1,
                was_present: false
            }
        );
        let snap = r.snapshot(1, Some(2)).expect("member");
        assert_eq!(snap.history.len(), 2);
        assert!(!snap.gap);
        for i in 0..5 {
            r.send(1, format!("n{i}").into(), now).expect("sent");
        }
        let snap = r.snapshot(1, Some(2)).expect("member");
        assert!(snap.gap, "ids 3 and 4 are gone");
        assert_eq!(snap.history.len(), 5);
        let snap = r.snapshot(1, Some(r.last_id())).expect("member");
        assert!(snap.history.is_empty() && !snap.gap);
        assert_eq!(
            r.resume(&token(9)).map(|_| ()),
            Err(JoinError::ResumeFailed)
        );
    }

    #[test]
    fn away_members_expire_after_grace_and_the_room_empties() {
        let (mut r, now) = room(&Limits::default());
        r.join(1, name("A"), token(1), now).expect("joins");
        assert!(r.disconnect(1, now));
        assert!(r.expire_due(now).is_empty());
        let later = Now {
            ts: now.ts + 15_000,
            instant: now.instant + Duration::from_secs(15),
        };
        assert_eq!(r.next_deadline(), Some(later.instant));
        let left = r.expire_due(later);
        assert!(
            matches!(left.as_slice(), [(1, Recorded { event: Event::Left(e), .. })] if &*e.name == "A")
        );
        assert!(r.is_empty());
    }

    #[test]
    fn room_full_and_message_rules() {
        let limits = Limits {
            max_members: 1,
            max_message_chars: 3,
            ..Limits::default()
        };
        let (mut r, now) = room(&limits);
        r.join(1, name("A"), token(1), now).expect("joins");
        assert_eq!(
            r.join(2, name("B"), token(2), now).map(|_| ()),
            Err(JoinError::RoomFull { max: 1 })
        );
        assert_eq!(
            r.send(1, " \n".into(), now).map(|_| ()),
            Err(SendError::Empty)
        );
        assert_eq!(
            r.send(1, "abcd".into(), now).map(|_| ()),
            Err(SendError::TooLong { len: 4, max: 3 })
        );
        assert!(
            r.send(1, " ab".into(), now).is_ok(),
            "length counts before trimming"
        );
        assert!(
            r.send(1, "e\u{301}e\u{301}e\u{301}".into(), now).is_ok(),
            "after NFC"
        );
        assert_eq!(
            r.send(9, "x".into(), now).map(|_| ()),
            Err(SendError::NotJoined)
        );
    }
}
