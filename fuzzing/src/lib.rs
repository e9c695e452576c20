//! What the fuzz targets in `fuzz/` check, as plain functions: each takes the fuzzer's
//! bytes and panics when the code under test panics or breaks one of its invariants.
//! `cargo fuzz` drives them (see docs/reliability.md); `tests/corpora.rs` replays every
//! committed corpus input through them in `cargo test`.
#![forbid(unsafe_code)]
// A broken invariant is reported the way a fuzzer sees it: by a panic.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod driver;

pub use driver::driver;

use chatroom_core::error::HasErrorCode;
use chatroom_core::protocol::ClientFrame;
use chatroom_core::{DisplayName, ErrorCode, RoomName};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::is_nfc;

/// The client frame decoder: never panics; a frame it refuses is `bad_frame`; the
/// `ref` it finds without decoding (what a rate-limited frame is answered with) is the
/// one a full decode finds.
pub fn client_frame(data: &[u8]) {
    let peeked = ClientFrame::peek_ref(data);
    match ClientFrame::decode(data) {
        Ok(frame) => assert_eq!(frame.reference(), peeked.as_ref(), "peek_ref disagrees"),
        Err(e) => {
            assert_eq!(e.error.code(), ErrorCode::BadFrame);
            assert_eq!(e.reference, peeked, "the ref echoed with bad_frame");
        }
    }
}

/// The name parser and its collision key: a parsed name is in its display form (NFC,
/// trimmed, inner space runs collapsed, within the limit, no forbidden character),
/// parsing the display form again gives the same name and key, and room names follow
/// the same rules.
pub fn names(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    if let Ok(name) = DisplayName::parse(&input) {
        check_display_form(name.as_str(), 32);
        let again = DisplayName::parse(name.as_str()).expect("a display form parses");
        assert_eq!(again.as_str(), name.as_str());
        assert_eq!(again.key(), name.key());
        assert!(again.collides_with(&name));
    }
    if let Ok(room) = RoomName::parse(&input) {
        check_display_form(room.as_str(), 64);
        let again = RoomName::parse(room.as_str()).expect("a display form parses");
        assert_eq!((again.as_str(), again.key()), (room.as_str(), room.key()));
    }
}

fn check_display_form(display: &str, max: usize) {
    assert!(!display.is_empty());
    assert!(display.chars().count() <= max, "{display:?} is too long");
    assert!(is_nfc(display), "{display:?} is not NFC");
    assert_eq!(display, display.trim(), "{display:?} is not trimmed");
    assert!(!display.contains("  "), "{display:?} has a run of spaces");
    for c in display.chars() {
        let category = get_general_category(c);
        assert!(
            !matches!(
                category,
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::PrivateUse
                    | GeneralCategory::Unassigned
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            ),
            "{display:?} holds {c:?} ({category:?})"
        );
        if category == GeneralCategory::SpaceSeparator {
            assert_eq!(c, ' ', "{display:?}: inner spaces become U+0020");
        }
    }
}
