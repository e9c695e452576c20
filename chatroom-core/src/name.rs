//! Display names and room names: validation, the display form and the collision key.
//!
//! The rules are those of PROTOCOL.md, "Names and rooms". A name is NFC-normalised,
//! trimmed of White_Space at both ends, and every inner run of space separators
//! (category Zs) becomes one U+0020. That is its display form. It is invalid if it is
//! then empty, longer than the limit (in Unicode scalar values), or still holds a
//! character of category Cc, Cf, Co, Cn, Zl or Zp.
//!
//! Two names collide when their [`NameKey`]s are equal. The key is the compatibility
//! caseless form (full case folding with NFKC) reduced further by the UTS #39
//! confusable skeleton, so `Alice`, `ALICE`, `Ａｌｉｃｅ` and a Cyrillic `Аlice` are one
//! key. Rooms use the same key, so `General` and `general` are one room.

use std::fmt;
use std::sync::Arc;

use caseless::Caseless;
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// Default longest display name, in Unicode scalar values.
pub const DEFAULT_MAX_NAME_CHARS: usize = 32;
/// Default longest room name, in Unicode scalar values.
pub const DEFAULT_MAX_ROOM_CHARS: usize = 64;

/// Why a string is not a valid name or room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing is left once white space is trimmed.
    #[error("it is empty")]
    Empty,
    /// The display form has more characters than allowed.
    #[error("it has {len} characters, more than the {max} allowed")]
    TooLong {
        /// Characters in the display form.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The display form holds a control, format, private-use, unassigned, line- or
    /// paragraph-separator character.
    #[error("it contains the character U+{:04X}, which is not allowed in names", u32::from(*.0))]
    ForbiddenChar(char),
}

/// The canonical collision key of a name: equal keys collide.
///
/// Keys are compared, hashed and ordered as strings; they are not meant for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(Arc<str>);

impl NameKey {
    /// Computes the key of any string (normally an already validated display form).
    pub fn of(display: &str) -> Self {
        // Compatibility caseless form: NFKD(casefold(NFKD(casefold(NFD(x))))), then the
        // UTS #39 skeleton (itself NFD), which is what equality is judged on.
        let caseless: String = display
            .chars()
            .nfd()
            .default_case_fold()
            .nfkd()
            .default_case_fold()
            .nfkd()
            .collect();
        NameKey(
            unicode_security::skeleton(&caseless)
                .collect::<String>()
                .into(),
        )
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated name: its display form and its collision key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Parsed {
    display: Arc<str>,
    key: NameKey,
}

impl Parsed {
    fn parse(input: &str, max_chars: usize) -> Result<Self, NameError> {
        let display = display_form(input);
        let mut len = 0usize;
        for c in display.chars() {
            len += 1;
            if is_forbidden(c) {
                return Err(NameError::ForbiddenChar(c));
            }
        }
        if len == 0 {
            return Err(NameError::Empty);
        }
        if len > max_chars {
            return Err(NameError::TooLong {
                len,
                max: max_chars,
            });
        }
        let key = NameKey::of(&display);
        Ok(Parsed {
            display: display.into(),
            key,
        })
    }
}

/// NFC, trim White_Space at both ends, collapse each inner run of Zs into one space.
fn display_form(input: &str) -> String {
    let nfc: String = input.nfc().collect();
    let trimmed = nfc.trim_matches(char::is_whitespace);
    let mut out = String::with_capacity(trimmed.len());
    let mut in_space_run = false;
    for c in trimmed.chars() {
        if get_general_category(c) == GeneralCategory::SpaceSeparator {
            if !in_space_run {
                out.push(' ');
            }
            in_space_run = true;
        } else {
            out.push(c);
            in_space_run = false;
        }
    }
    out
}

fn is_forbidden(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $default_max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $ty(Parsed);

        impl $ty {
            /// Parses with the default length limit.
            pub fn parse(input: &str) -> Result<Self, NameError> {
                Self::parse_max(input, $default_max)
            }

            /// Parses with a length limit of `max_chars` Unicode scalar values.
            pub fn parse_max(input: &str, max_chars: usize) -> Result<Self, NameError> {
                Parsed::parse(input, max_chars).map($ty)
            }

            /// The display form: what members see.
            pub fn as_str(&self) -> &str {
                &self.0.display
            }

            /// The display form as a shared string (cheap to clone).
            pub fn to_shared(&self) -> Arc<str> {
                self.0.display.clone()
            }

            /// The collision key.
            pub fn key(&self) -> &NameKey {
                &self.0.key
            }

            /// Whether the two names collide (their keys are equal).
            pub fn collides_with(&self, other: &Self) -> bool {
                self.0.key == other.0.key
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

name_type!(
    /// A member's display name, valid per PROTOCOL.md (1 to 32 characters by default).
    DisplayName,
    DEFAULT_MAX_NAME_CHARS
);

name_type!(
    /// A room's name, valid per PROTOCOL.md (1 to 64 characters by default).
    RoomName,
    DEFAULT_MAX_ROOM_CHARS
);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> NameKey {
        match DisplayName::parse(s) {
            Ok(n) => n.key().clone(),
            Err(e) => panic!("{s:?} should be valid: {e}"),
        }
    }

    #[test]
    fn case_width_and_confusables_collide() {
        let alice = key("Alice");
        for other in ["alice", "ALICE", "Ａｌｉｃｅ", "\u{410}lice", "  Alice\t"] {
            assert_eq!(key(other), alice, "{other:?} should collide with Alice");
        }
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_ne!(key("Alice"), key("Alicia"));
        assert_eq!(
            RoomName::parse("General").map(|r| r.key().clone()),
            RoomName::parse("general").map(|r| r.key().clone())
        );
    }

    #[test]
    fn display_form_is_nfc_trimmed_and_collapsed() {
        let n = DisplayName::parse("\n  Ann\u{3000}\u{a0} Lee \t").expect("valid");
        assert_eq!(n.as_str(), "Ann Lee");
        let composed = DisplayName::parse("Jose\u{301}").expect("valid");
        assert_eq!(composed.as_str(), "Jos\u{e9}");
    }

    #[test]
    fn invalid_names_are_typed_errors() {
        assert_eq!(DisplayName::parse(""), Err(NameError::Empty));
        assert_eq!(DisplayName::parse(" \t\n\u{3000}"), Err(NameError::Empty));
        assert_eq!(
            DisplayName::parse("a\tb"),
            Err(NameError::ForbiddenChar('\t'))
        );
        assert_eq!(
            DisplayName::parse("a\u{200b}b"),
            Err(NameError::ForbiddenChar('\u{200b}'))
        );
        assert_eq!(
            DisplayName::parse("a\u{2028}b"),
            Err(NameError::ForbiddenChar('\u{2028}'))
        );
        assert_eq!(
            DisplayName::parse("x\u{e000}"),
            Err(NameError::ForbiddenChar('\u{e000}'))
        );
        assert_eq!(
            DisplayName::parse("x\u{378}"),
            Err(NameError::ForbiddenChar('\u{378}'))
        );
        assert_eq!(
            DisplayName::parse(&"é".repeat(33)),
            Err(NameError::TooLong { len: 33, max: 32 })
        );
        assert!(DisplayName::parse(&"é".repeat(32)).is_ok());
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
        assert!(RoomName::parse(&"r".repeat(65)).is_err());
    }

    #[test]
    fn length_counts_after_nfc() {
        // 32 × (e + combining acute) is 64 scalar values raw but 32 after NFC.
        assert!(DisplayName::parse(&"e\u{301}".repeat(32)).is_ok());
    }
}
