//! One error enum per operation, and the one place where each maps to a protocol code.

use serde::{Deserialize, Serialize};

use crate::name::NameError;

/// The `code` of an `error` frame, as PROTOCOL.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be understood.
    BadFrame,
    /// `send`, `rename` or `leave` before a successful `join`.
    NotJoined,
    /// `join` on a connection that is in a room.
    AlreadyJoined,
    /// The name is not valid.
    InvalidName,
    /// The room name is not valid.
    InvalidRoom,
    /// Another member of the room holds a colliding name.
    NameTaken,
    /// The room is at its member limit.
    RoomFull,
    /// A fresh join would open a room, and the server is at its room limit.
    TooManyRooms,
    /// The embedding application's policy refused.
    Forbidden,
    /// Unknown or expired resume token.
    ResumeFailed,
    /// Message text empty after trimming.
    EmptyMessage,
    /// Message text over the limit.
    MessageTooLong,
    /// The client sends faster than its budget.
    RateLimited,
    /// A server fault.
    Internal,
    /// The rooms' store (a cluster's Redis) could not be reached in time: the frame
    /// had no effect and will not take effect later; the connection stays open. A
    /// single-node server never sends it.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `join` (fresh or resume) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The name is not valid.
    #[error("that name is not valid: {0}")]
    InvalidName(NameError),
    /// The room name is not valid.
    #[error("that room name is not valid: {0}")]
    InvalidRoom(NameError),
    /// A member, present or away, holds a colliding name.
    #[error("someone in this room is already called {taken}")]
    NameTaken {
        /// The display name of the member who holds the key.
        taken: String,
    },
    /// The room has `max` members already.
    #[error("this room is full ({max} members)")]
    RoomFull {
        /// The member limit.
        max: usize,
    },
    /// The embedding application refused the join.
    #[error("{0}")]
    Forbidden(String),
    /// The resume token is unknown or expired (or belongs to another room).
    #[error("that session can no longer be resumed; join afresh")]
    ResumeFailed,
    /// The connection is already in a room.
    #[error("this connection is already in a room; leave it first")]
    AlreadyJoined,
    /// A server fault (the hub is shutting down, a hook failed, the room could not be
    /// reached); the server logs the details.
    #[error("the server could not take this join; try again later")]
    Unavailable,
    /// The room has more commands waiting than it takes (`Limits::room_queue`), or
    /// more fresh joins than `Limits::room_joins_per_sec` allows: the join had no
    /// effect; try again in a moment. Code `rate_limited`.
    #[error("the room is busy; try again in a moment")]
    RoomBusy,
    /// The join would open a new room and the server has `max` rooms already.
    #[error("the server has its limit of {max} rooms; join an existing room")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The rooms' store (a cluster's Redis) could not be reached in time: the join had
    /// no effect; try again later. Code `unavailable`.
    #[error("{}", Unavailable)]
    StoreUnavailable,
}

/// Why a `send` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The text is empty once white space is trimmed.
    #[error("a message cannot be empty")]
    Empty,
    /// The text has more characters than allowed.
    #[error("a message may have at most {max} characters; this one has {len}")]
    TooLong {
        /// Characters in the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The embedding application refused the message.
    #[error("{0}")]
    Forbidden(String),
    /// The connection is not in a room.
    #[error("join a room first")]
    NotJoined,
}

/// Why a `rename` was refused. A refused rename changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    /// The new name is not valid.
    #[error("that name is not valid: {0}")]
    InvalidName(NameError),
    /// Another member, present or away, holds a colliding name.
    #[error("someone in this room is already called {taken}")]
    NameTaken {
        /// The display name of the member who holds the key.
        taken: String,
    },
    /// The embedding application refused the rename.
    #[error("{0}")]
    Forbidden(String),
    /// The connection is not in a room.
    #[error("join a room first")]
    NotJoined,
}

/// Errors of the connection itself rather than of a room operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is not a valid client frame; the text says what is wrong.
    #[error("{0}")]
    BadFrame(String),
    /// `send`, `rename` or `leave` before a successful `join`.
    #[error("join a room first")]
    NotJoined,
    /// The client's token bucket is empty; the frame had no effect.
    #[error("slow down: too many frames")]
    RateLimited,
    /// The member's room has more commands waiting than it takes
    /// (`Limits::room_queue`): the frame had no effect. Code `rate_limited`; it does
    /// not count towards the flood limit (the client did nothing wrong).
    #[error("the room is busy; try again in a moment")]
    RoomBusy,
    /// A server fault; details are in the server's log.
    #[error("internal server error")]
    Internal,
    /// The rooms' store (a cluster's Redis) could not be reached in time: the frame had
    /// no effect and will not take effect later. Code `unavailable`.
    #[error("{}", Unavailable)]
    StoreUnavailable,
}

/// The rooms' store (a cluster's Redis) could not be reached in time, so nothing was
/// done. A hub on the in-process backplane (the default) never returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the chat server's store cannot be reached; try again later")]
pub struct Unavailable;

/// Anything that has a protocol error code.
pub trait HasErrorCode: std::fmt::Display + Send + Sync {
    /// The code of the `error` frame that reports this error.
    fn code(&self) -> ErrorCode;
}

impl HasErrorCode for JoinError {
    fn code(&self) -> ErrorCode {
        match self {
            JoinError::InvalidName(_) => ErrorCode::InvalidName,
            JoinError::InvalidRoom(_) => ErrorCode::InvalidRoom,
            JoinError::NameTaken { .. } => ErrorCode::NameTaken,
            JoinError::RoomFull { .. } => ErrorCode::RoomFull,
            JoinError::Forbidden(_) => ErrorCode::Forbidden,
            JoinError::ResumeFailed => ErrorCode::ResumeFailed,
            JoinError::AlreadyJoined => ErrorCode::AlreadyJoined,
            JoinError::Unavailable => ErrorCode::Internal,
            JoinError::RoomBusy => ErrorCode::RateLimited,
            JoinError::TooManyRooms { .. } => ErrorCode::TooManyRooms,
            JoinError::StoreUnavailable => ErrorCode::Unavailable,
        }
    }
}

impl HasErrorCode for SendError {
    fn code(&self) -> ErrorCode {
        match self {
            SendError::Empty => ErrorCode::EmptyMessage,
            SendError::TooLong { .. } => ErrorCode::MessageTooLong,
            SendError::Forbidden(_) => ErrorCode::Forbidden,
            SendError::NotJoined => ErrorCode::NotJoined,
        }
    }
}

impl HasErrorCode for RenameError {
    fn code(&self) -> ErrorCode {
        match self {
            RenameError::InvalidName(_) => ErrorCode::InvalidName,
            RenameError::NameTaken { .. } => ErrorCode::NameTaken,
            RenameError::Forbidden(_) => ErrorCode::Forbidden,
            RenameError::NotJoined => ErrorCode::NotJoined,
        }
    }
}

impl From<Unavailable> for JoinError {
    fn from(_: Unavailable) -> Self {
        JoinError::StoreUnavailable
    }
}

impl From<Unavailable> for FrameError {
    fn from(_: Unavailable) -> Self {
        FrameError::StoreUnavailable
    }
}

impl HasErrorCode for Unavailable {
    fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

impl HasErrorCode for FrameError {
    fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadFrame(_) => ErrorCode::BadFrame,
            FrameError::NotJoined => ErrorCode::NotJoined,
            FrameError::RateLimited | FrameError::RoomBusy => ErrorCode::RateLimited,
            FrameError::Internal => ErrorCode::Internal,
            FrameError::StoreUnavailable => ErrorCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_spelling() {
        let all = [
            ErrorCode::BadFrame,
            ErrorCode::NotJoined,
            ErrorCode::AlreadyJoined,
            ErrorCode::InvalidName,
            ErrorCode::InvalidRoom,
            ErrorCode::NameTaken,
            ErrorCode::RoomFull,
            ErrorCode::TooManyRooms,
            ErrorCode::Forbidden,
            ErrorCode::ResumeFailed,
            ErrorCode::EmptyMessage,
            ErrorCode::MessageTooLong,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ];
        for code in all {
            let json = serde_json::to_string(&code).expect("serializable");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn name_taken_message_names_the_holder() {
        let e = JoinError::NameTaken {
            taken: "Bob".into(),
        };
        assert_eq!(e.code(), ErrorCode::NameTaken);
        assert_eq!(e.to_string(), "someone in this room is already called Bob");
    }
}
