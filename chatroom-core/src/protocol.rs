//! Wire frames of PROTOCOL.md: what clients send, what the server pushes, and their JSON.
//!
//! Client frames are decoded with [`ClientFrame::decode`]; any failure is a
//! [`FrameError::BadFrame`]. Server frames are encoded once into a [`TextFrame`], a
//! cheaply cloned, immutable UTF-8 buffer that every receiver of an event shares.
//! [`ServerFrame`] decodes what the server sends, for tests and Rust clients.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ErrorCode, FrameError, HasErrorCode};

/// The client's correlation value: a JSON number or string, echoed in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    /// A JSON number, echoed exactly.
    Number(serde_json::Number),
    /// A JSON string.
    String(String),
}

/// `ref` is optional, but when present it must be a number or a string (not `null`).
fn some_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ref>, D::Error> {
    Ref::deserialize(d).map(Some)
}

/// A `ref` of any JSON type: a number or a string is kept, anything else (skipped
/// without allocating) is `None`.
fn lenient_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ref>, D::Error> {
    struct Lenient;
    impl<'de> serde::de::Visitor<'de> for Lenient {
        type Value = Option<Ref>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Ref::Number(v.into())))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Ref::Number(v.into())))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(serde_json::Number::from_f64(v).map(Ref::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Ref::String(v.to_owned())))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Lenient)
}

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Join a room, or resume a membership with `resume` and `since`.
    Join {
        /// The room's name.
        room: String,
        /// The wanted display name.
        name: String,
        /// A resume token from an earlier `welcome`.
        #[serde(default)]
        resume: Option<String>,
        /// The last event id the client saw.
        #[serde(default)]
        since: Option<u64>,
        /// Correlation value.
        #[serde(default, rename = "ref", deserialize_with = "some_ref")]
        reference: Option<Ref>,
    },
    /// Post a message to the room.
    Send {
        /// The message text, delivered exactly as sent.
        text: String,
        /// Correlation value.
        #[serde(default, rename = "ref", deserialize_with = "some_ref")]
        reference: Option<Ref>,
    },
    /// Change one's display name.
    Rename {
        /// The new name.
        name: String,
        /// Correlation value.
        #[serde(default, rename = "ref", deserialize_with = "some_ref")]
        reference: Option<Ref>,
    },
    /// Leave the room; the socket stays open.
    Leave {
        /// Correlation value.
        #[serde(default, rename = "ref", deserialize_with = "some_ref")]
        reference: Option<Ref>,
    },
}

/// A client frame that could not be decoded, with the `ref` it carried when that was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// What was wrong.
    pub error: FrameError,
    /// The frame's `ref`, if it was an object with a well-typed `ref`.
    pub reference: Option<Ref>,
}

impl ClientFrame {
    /// Decodes one text frame. Every failure is `bad_frame`.
    pub fn decode(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError {
            error: FrameError::BadFrame(describe(&e)),
            // Only on the error path: look for a usable `ref` to echo.
            reference: ClientFrame::peek_ref(bytes),
        })
    }

    /// The `ref` of a frame without decoding the frame: the frame must be a JSON object
    /// with one `ref` member that is a number or a string; anything else gives `None`.
    ///
    /// This is the answer to a frame the server refuses without doing its work (a
    /// rate-limited frame): one pass over the bytes, which skips every other member
    /// without allocating, so it costs no more than reading the frame.
    pub fn peek_ref(bytes: &[u8]) -> Option<Ref> {
        #[derive(Deserialize)]
        struct RefOnly {
            #[serde(default, rename = "ref", deserialize_with = "lenient_ref")]
            reference: Option<Ref>,
        }
        // serde would also read a struct from an array: only an object has a `ref`.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice::<RefOnly>(bytes)
            .ok()
            .and_then(|r| r.reference)
    }

    /// The frame's `ref`, if any.
    pub fn reference(&self) -> Option<&Ref> {
        match self {
            ClientFrame::Join { reference, .. }
            | ClientFrame::Send { reference, .. }
            | ClientFrame::Rename { reference, .. }
            | ClientFrame::Leave { reference } => reference.as_ref(),
        }
    }
}

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "the frame is not valid JSON".into(),
        Category::Data => {
            let text = e.to_string();
            // Drop serde_json's " at line 1 column N" suffix: it only confuses clients.
            let head = text
                .split_once(" at line ")
                .map_or(text.as_str(), |(h, _)| h);
            format!("bad frame: {head}")
        }
    }
}

/// A `message` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    /// Event id, per room, from 1, gapless.
    pub id: u64,
    /// Server time in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The sender's display name, set by the server.
    pub from: Arc<str>,
    /// The text exactly as sent (or as the host's filter replaced it).
    pub text: Arc<str>,
    /// True for a message the host application posted (`Hub::post`), not a member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

/// A `joined` or `left` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    /// Event id.
    pub id: u64,
    /// Server time in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The member's display name.
    pub name: Arc<str>,
}

/// A `renamed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenamedEvent {
    /// Event id.
    pub id: u64,
    /// Server time in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The old display name.
    pub from: Arc<str>,
    /// The new display name.
    pub to: Arc<str>,
}

/// One event of a room's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message.
    Message(MessageEvent),
    /// A member joined.
    Joined(MemberEvent),
    /// A member left (or its grace period ran out, or it was removed).
    Left(MemberEvent),
    /// A member changed its name.
    Renamed(RenamedEvent),
}

impl Event {
    /// The event's id.
    pub fn id(&self) -> u64 {
        match self {
            Event::Message(e) => e.id,
            Event::Joined(e) | Event::Left(e) => e.id,
            Event::Renamed(e) => e.id,
        }
    }

    /// The event's timestamp.
    pub fn ts(&self) -> u64 {
        match self {
            Event::Message(e) => e.ts,
            Event::Joined(e) | Event::Left(e) => e.ts,
            Event::Renamed(e) => e.ts,
        }
    }

    /// Encodes the event once; the frame is then shared by every receiver.
    pub fn encode(&self) -> TextFrame {
        TextFrame::json(self)
    }
}

/// The answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The room's display name (its creator's spelling).
    pub room: String,
    /// The member's display name.
    pub name: String,
    /// Display names of all members, present or away, in join order.
    pub members: Vec<String>,
    /// An unbroken run of the room's most recent events, ending at `last_id`.
    pub history: Vec<Event>,
    /// The id of the room's latest event.
    pub last_id: u64,
    /// The token that resumes this membership.
    pub resume: String,
    /// True when events after the client's `since` were no longer retained.
    pub gap: bool,
    /// The `ref` of the `join`, if it had one.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Ref>,
}

/// Frames the server sends that are not events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to a successful `join`.
    Welcome(Welcome),
    /// The answer to a successful `send` or `rename` that carried a `ref`.
    Ack {
        /// The `ref` of the frame.
        #[serde(rename = "ref")]
        reference: Ref,
        /// The id of the event the frame caused.
        id: u64,
    },
    /// A refused frame.
    Error {
        /// The error code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
        /// The `ref` of the frame, if it had one.
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
}

/// Any frame the server sends, as a client decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    /// A room event.
    Event(Event),
    /// A welcome, ack or error.
    Reply(Reply),
}

impl ServerFrame {
    /// Decodes a frame the server sent.
    pub fn decode(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// An immutable UTF-8 text frame, cheap to clone: one allocation shared by all receivers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TextFrame(Bytes);

impl TextFrame {
    pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> TextFrame {
        match serde_json::to_vec(value) {
            Ok(v) => TextFrame(Bytes::from(v)),
            // Our frame types only hold strings, numbers and lists: serialising cannot fail.
            Err(e) => {
                tracing::error!(error = %e, "could not encode a server frame");
                TextFrame(Bytes::from_static(
                    br#"{"type":"error","code":"internal","message":"internal server error"}"#,
                ))
            }
        }
    }

    /// The frame's text.
    pub fn as_str(&self) -> &str {
        // Built only from `String`s and serde_json output, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The frame's bytes (UTF-8), sharing the allocation.
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never, for frames the server builds).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for TextFrame {
    fn from(s: String) -> Self {
        TextFrame(Bytes::from(s))
    }
}

impl std::fmt::Debug for TextFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextFrame({})", self.as_str())
    }
}

/// Encodes an `error` frame for any operation error.
pub fn error_frame(err: &dyn HasErrorCode, reference: Option<Ref>) -> TextFrame {
    TextFrame::json(&Reply::Error {
        code: err.code(),
        message: err.to_string(),
        reference,
    })
}

/// Encodes an `ack` frame.
pub fn ack_frame(reference: Ref, id: u64) -> TextFrame {
    TextFrame::json(&Reply::Ack { reference, id })
}

/// The parts of a `welcome`, with the members and the history already encoded: how
/// every backplane assembles one.
#[derive(Debug, Clone)]
pub struct WelcomeParts<'a> {
    /// The room's display name.
    pub room: &'a str,
    /// The member's display name.
    pub name: &'a str,
    /// The members' display names as a JSON array.
    pub members: &'a str,
    /// The history, each event as encoded for its receivers.
    pub history: Vec<TextFrame>,
    /// The id of the room's last event.
    pub last_id: u64,
    /// The member's resume token, as text.
    pub resume: &'a str,
    /// Whether events the client asked for are missing from `history`.
    pub gap: bool,
    /// The join frame's `ref`.
    pub reference: Option<Ref>,
}

impl WelcomeParts<'_> {
    /// Encodes the welcome, splicing in the members and the history frames without
    /// re-encoding them.
    pub fn encode(&self) -> TextFrame {
        #[derive(Serialize)]
        struct Head<'b> {
            r#type: &'static str,
            room: &'b str,
            name: &'b str,
        }
        #[derive(Serialize)]
        struct Tail<'b> {
            last_id: u64,
            resume: &'b str,
            gap: bool,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'b Ref>,
        }
        let head = TextFrame::json(&Head {
            r#type: "welcome",
            room: self.room,
            name: self.name,
        });
        let tail = TextFrame::json(&Tail {
            last_id: self.last_id,
            resume: self.resume,
            gap: self.gap,
            reference: self.reference.as_ref(),
        });
        let (head, tail) = (head.as_str(), tail.as_str());
        let history_len: usize = self.history.iter().map(|f| f.len() + 1).sum();
        let mut out =
            String::with_capacity(head.len() + self.members.len() + tail.len() + history_len + 32);
        // `{...head fields` + `,"members":` + names + `,"history":[` + frames + `],`
        // + `tail fields...}`
        out.push_str(head.strip_suffix('}').unwrap_or(head));
        out.push_str(",\"members\":");
        out.push_str(self.members);
        out.push_str(",\"history\":[");
        for (i, frame) in self.history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(frame.as_str());
        }
        out.push_str("],");
        out.push_str(tail.strip_prefix('{').unwrap_or(tail));
        TextFrame::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(s: &str) -> DecodeError {
        match ClientFrame::decode(s.as_bytes()) {
            Ok(f) => panic!("{s} decoded as {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decodes_every_client_frame() {
        let join = ClientFrame::decode(
            br#"{"type":"join","room":"general","name":"Alice","ref":1,"extra":true}"#,
        );
        assert!(matches!(
            join,
            Ok(ClientFrame::Join { ref room, ref name, resume: None, since: None, reference: Some(Ref::Number(_)) })
                if room == "general" && name == "Alice"
        ));
        let resume = ClientFrame::decode(
            br#"{"type":"join","room":"g","name":"A","resume":"t","since":41}"#,
        );
        assert!(matches!(
            resume,
            Ok(ClientFrame::Join {
                since: Some(41),
                ..
            })
        ));
        let send = ClientFrame::decode(br#"{"type":"send","text":"hi","ref":"x"}"#);
        assert_eq!(
            send,
            Ok(ClientFrame::Send {
                text: "hi".into(),
                reference: Some(Ref::String("x".into()))
            })
        );
        assert!(matches!(
            ClientFrame::decode(br#"{"type":"rename","name":"Bob"}"#),
            Ok(ClientFrame::Rename {
                reference: None,
                ..
            })
        ));
        assert!(matches!(
            ClientFrame::decode(br#"{"type":"leave","ref":9}"#),
            Ok(ClientFrame::Leave { reference: Some(_) })
        ));
    }

    #[test]
    fn bad_frames_are_bad_frame_with_the_ref_when_readable() {
        for s in [
            "not json",
            "[1,2]",
            "42",
            r#"{"type":"dance"}"#,
            r#"{"room":"g"}"#,
            r#"{"type":"send"}"#,
            r#"{"type":"send","text":5}"#,
            r#"{"type":"send","text":"x","ref":null}"#,
            r#"{"type":"send","text":"x","ref":[1]}"#,
            r#"{"type":"join","room":"g","name":"A","since":-1}"#,
        ] {
            assert_eq!(bad(s).error.code(), ErrorCode::BadFrame, "{s}");
        }
        assert_eq!(
            bad(r#"{"type":"dance","ref":"r1"}"#).reference,
            Some(Ref::String("r1".into()))
        );
        assert_eq!(bad(r#"{"type":"send","ref":[1]}"#).reference, None);
    }

    #[test]
    fn the_ref_of_a_frame_is_found_without_decoding_it() {
        let peek = |s: &str| ClientFrame::peek_ref(s.as_bytes());
        assert_eq!(
            peek(r#"{"type":"send","text":"hi","ref":7}"#),
            Some(Ref::Number(7.into()))
        );
        assert_eq!(
            peek(r#"{"ref":"a\"b","pad":[{"x":[1,2,{"y":null}]}],"type":"dance"}"#),
            Some(Ref::String("a\"b".into()))
        );
        assert_eq!(
            peek(r#"{"ref":-1.5}"#),
            Some(Ref::Number(
                serde_json::Number::from_f64(-1.5).expect("finite")
            ))
        );
        for none in [
            "not json",
            "[1]",
            r#"{"type":"send"}"#,
            r#"{"ref":null}"#,
            r#"{"ref":[1]}"#,
            r#"{"ref":{"a":1}}"#,
            r#"{"ref":true}"#,
            r#"{"ref":1,"ref":2}"#,
            r#"{"ref":1"#,
        ] {
            assert_eq!(peek(none), None, "{none}");
        }
        // The frame's answer echoes the ref exactly as a full decode would.
        let frame = r#"{"type":"send","text":"x","ref":12345678901234567890}"#;
        assert_eq!(
            peek(frame).as_ref(),
            ClientFrame::decode(frame.as_bytes())
                .expect("valid")
                .reference()
        );
    }

    #[test]
    fn events_encode_exactly_as_the_protocol_shows() {
        let e = Event::Message(MessageEvent {
            id: 42,
            ts: 1764070000123,
            from: "Bob".into(),
            text: "hi".into(),
            system: false,
        });
        assert_eq!(
            e.encode().as_str(),
            r#"{"type":"message","id":42,"ts":1764070000123,"from":"Bob","text":"hi"}"#
        );
        let r = Event::Renamed(RenamedEvent {
            id: 45,
            ts: 1,
            from: "Carol".into(),
            to: "Caroline".into(),
        });
        assert_eq!(
            r.encode().as_str(),
            r#"{"type":"renamed","id":45,"ts":1,"from":"Carol","to":"Caroline"}"#
        );
        assert_eq!(
            ack_frame(Ref::Number(7.into()), 42).as_str(),
            r#"{"type":"ack","ref":7,"id":42}"#
        );
        let err = crate::error::RenameError::NameTaken {
            taken: "Bob".into(),
        };
        assert_eq!(
            error_frame(&err, Some(Ref::Number(8.into()))).as_str(),
            r#"{"type":"error","code":"name_taken","message":"someone in this room is already called Bob","ref":8}"#
        );
    }

    #[test]
    fn spliced_welcome_equals_the_typed_welcome() {
        let joined = Event::Joined(MemberEvent {
            id: 3,
            ts: 9,
            name: "Al\"ice".into(),
        });
        let parts = WelcomeParts {
            room: "general",
            name: "Al\"ice",
            members: r#"["Bob","Al\"ice"]"#,
            history: vec![joined.encode(), joined.encode()],
            last_id: 3,
            resume: "tok",
            gap: false,
            reference: Some(Ref::Number(1.into())),
        };
        let decoded = ServerFrame::decode(parts.encode().as_str()).expect("valid json");
        let expected = ServerFrame::Reply(Reply::Welcome(Welcome {
            room: "general".into(),
            name: "Al\"ice".into(),
            members: vec!["Bob".into(), "Al\"ice".into()],
            history: vec![joined.clone(), joined],
            last_id: 3,
            resume: "tok".into(),
            gap: false,
            reference: Some(Ref::Number(1.into())),
        }));
        assert_eq!(decoded, expected);
        let empty = WelcomeParts {
            history: vec![],
            reference: None,
            ..parts
        };
        assert!(
            empty
                .encode()
                .as_str()
                .contains(r#""history":[],"last_id":3"#)
        );
    }
}
