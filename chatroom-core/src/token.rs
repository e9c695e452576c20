//! Resume tokens: 128 random bits from the operating system's CSPRNG, compared in
//! constant time.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret that lets a client take its membership back after a lost connection.
#[derive(Clone, Copy)]
pub struct ResumeToken([u8; 16]);

impl ResumeToken {
    /// Draws a fresh token from the operating system's CSPRNG.
    pub fn generate() -> Result<ResumeToken, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(ResumeToken(bytes))
    }

    /// A token with the given bits; for tests and for deterministic simulations.
    pub fn from_bytes(bytes: [u8; 16]) -> ResumeToken {
        ResumeToken(bytes)
    }

    /// Parses the 32-character lowercase hex form; anything else is `None`.
    pub fn parse(s: &str) -> Option<ResumeToken> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = hex_value(pair.first().copied()?)?;
            let lo = hex_value(pair.get(1).copied()?)?;
            *byte = (hi << 4) | lo;
        }
        Some(ResumeToken(out))
    }

    /// Compares in time independent of where the tokens differ.
    pub fn matches(&self, other: &ResumeToken) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a live secret into logs.
        f.write_str("ResumeToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex_and_rejects_junk() {
        let t = ResumeToken::generate().expect("os rng");
        let s = t.to_string();
        assert_eq!(s.len(), 32);
        let back = ResumeToken::parse(&s).expect("own output parses");
        assert!(back.matches(&t));
        assert!(ResumeToken::parse(&s[..31]).is_none());
        assert!(ResumeToken::parse(&s.to_uppercase().replace(char::is_numeric, "G")).is_none());
        assert!(ResumeToken::parse("ééééééééééééééé.").is_none());
        assert!(!ResumeToken::generate().expect("os rng").matches(&t));
        assert_eq!(format!("{t:?}"), "ResumeToken(..)");
    }
}
