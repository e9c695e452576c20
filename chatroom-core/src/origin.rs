//! Which web pages may open a WebSocket: the check against cross-site WebSocket
//! hijacking that both adapters apply before the upgrade.

/// The scheme under which the site's pages are served, which a same-host `Origin` must
/// have: a page served over `http` may not open a connection to a site served over
/// `https` on the same host and port (a network attacker can inject script into the
/// plain one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (`ws://`).
    Http,
    /// HTTP over TLS (`wss://`).
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> &'static str {
        match self {
            Scheme::Http => "80",
            Scheme::Https => "443",
        }
    }

    /// Parses `http` or `https`, in any case.
    pub fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

/// Which `Origin`s may open a connection. Requests without an `Origin` header (non-browser
/// clients, which cannot be hijacked by a page) are always allowed; an `Origin` that is
/// not visible ASCII, or that cannot be parsed, is always refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// The origin's scheme, host and port must be the request's: its `Host`, and the
    /// scheme the site is served under (see [`HubBuilder::scheme`](crate::HubBuilder::scheme)).
    /// The default.
    #[default]
    SameHost,
    /// The origin must be one of these, compared without case and without a trailing
    /// slash, e.g. `https://chat.example.com`.
    List(Vec<String>),
    /// Any origin.
    Any,
}

impl OriginPolicy {
    /// Whether a request with these raw `Origin` and `Host` header values, to a site
    /// served under `scheme`, may upgrade.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>, scheme: Scheme) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        // A header that is not visible ASCII is refused, never taken as absent.
        let Some(origin) = visible_ascii(origin) else {
            return false;
        };
        let origin = origin.trim_end_matches('/');
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(allowed) => allowed
                .iter()
                .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin)),
            OriginPolicy::SameHost => {
                let Some(host) = host.and_then(visible_ascii) else {
                    return false;
                };
                let Some((origin_scheme, authority)) = origin.split_once("://") else {
                    return false; // "null" and other opaque origins
                };
                if Scheme::parse(origin_scheme) != Some(scheme) {
                    return false;
                }
                if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
                    return false; // an origin is scheme://host[:port], nothing more
                }
                same_authority(authority, host, scheme.default_port())
            }
        }
    }
}

/// The value as text if it is visible ASCII, once spaces and tabs at its ends are
/// trimmed; `None` for anything else (empty, spaces inside, control or non-ASCII
/// bytes), which no valid origin or host holds.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let text = text.trim_matches([' ', '\t']);
    let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(text)
}

/// Compares `host[:port]` forms, treating a missing port as the scheme's default.
fn same_authority(a: &str, b: &str, default_port: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        let s = s.to_ascii_lowercase();
        // An IPv6 literal is bracketed: the port follows the closing bracket.
        let port_start = match s.rfind(']') {
            Some(end) => s.get(end..).and_then(|t| t.find(':')).map(|i| i + end),
            None => s.rfind(':'),
        };
        match port_start {
            Some(i) => (
                s.get(..i).unwrap_or_default().to_owned(),
                s.get(i + 1..).unwrap_or_default().to_owned(),
            ),
            None => (s, default_port.to_owned()),
        }
    };
    split(a) == split(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(p: &OriginPolicy, origin: Option<&str>, host: Option<&str>, scheme: Scheme) -> bool {
        p.allows(origin.map(str::as_bytes), host.map(str::as_bytes), scheme)
    }

    #[test]
    fn same_host_compares_scheme_host_and_port() {
        let p = OriginPolicy::SameHost;
        let http = Scheme::Http;
        let https = Scheme::Https;
        assert!(allows(
            &p,
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            http
        ));
        assert!(allows(
            &p,
            Some("https://Chat.Example.com"),
            Some("chat.example.com"),
            https
        ));
        assert!(allows(
            &p,
            Some("https://chat.example.com"),
            Some("chat.example.com:443"),
            https
        ));
        assert!(allows(
            &p,
            Some("http://[::1]:8080"),
            Some("[::1]:8080"),
            http
        ));
        assert!(!allows(
            &p,
            Some("http://evil.example"),
            Some("127.0.0.1:8080"),
            http
        ));
        assert!(!allows(
            &p,
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080"),
            http
        ));
        assert!(!allows(&p, Some("null"), Some("127.0.0.1:8080"), http));
        assert!(!allows(&p, Some("http://127.0.0.1:8080"), None, http));
        assert!(
            allows(&p, None, Some("127.0.0.1:8080"), http),
            "non-browser clients"
        );
    }

    #[test]
    fn the_scheme_must_be_the_sites() {
        let p = OriginPolicy::SameHost;
        // Both default to one port: only the scheme tells them apart.
        assert!(!allows(
            &p,
            Some("http://chat.example.com"),
            Some("chat.example.com"),
            Scheme::Https
        ));
        assert!(!allows(
            &p,
            Some("https://chat.example.com:8080"),
            Some("chat.example.com:8080"),
            Scheme::Http
        ));
        assert!(!allows(
            &p,
            Some("ftp://chat.example.com"),
            Some("chat.example.com"),
            Scheme::Http
        ));
    }

    #[test]
    fn an_origin_that_cannot_be_parsed_is_refused_not_ignored() {
        let host = Some(b"chat.example.com".as_slice());
        for origin in [
            b"http://chat.example.com\x7f".as_slice(),
            "http://chät.example.com".as_bytes(),
            b"http://chat.example.com\xff",
            b"",
            b"http://chat.example.com/path",
            b"http://user@chat.example.com",
            b"http://",
        ] {
            for policy in [
                OriginPolicy::SameHost,
                OriginPolicy::List(vec!["http://chat.example.com".into()]),
            ] {
                assert!(
                    !policy.allows(Some(origin), host, Scheme::Http),
                    "{origin:?} under {policy:?}"
                );
            }
        }
        assert!(!OriginPolicy::Any.allows(Some(b"\x01"), host, Scheme::Http));
        // A host that is not visible ASCII matches nothing.
        assert!(!OriginPolicy::SameHost.allows(
            Some(b"http://chat.example.com"),
            Some(b"chat.example.com\x80"),
            Scheme::Http
        ));
    }

    #[test]
    fn list_and_any() {
        let p = OriginPolicy::List(vec!["https://app.example.com/".into()]);
        assert!(allows(
            &p,
            Some("https://APP.example.com"),
            Some("api.example.com"),
            Scheme::Http
        ));
        assert!(!allows(
            &p,
            Some("https://other.example.com"),
            Some("api.example.com"),
            Scheme::Http
        ));
        assert!(!allows(
            &p,
            Some("http://app.example.com"),
            Some("api.example.com"),
            Scheme::Https
        ));
        assert!(allows(
            &OriginPolicy::Any,
            Some("http://anything"),
            None,
            Scheme::Http
        ));
    }
}
