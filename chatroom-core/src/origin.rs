//! Which web pages may open a WebSocket: the check against cross-site WebSocket
//! hijacking that both adapters apply before the upgrade.

/// Which `Origin`s may open a connection. Requests without an `Origin` header (non-browser
/// clients, which cannot be hijacked by a page) are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// The origin's host and port must equal the request's `Host` (the default).
    #[default]
    SameHost,
    /// The origin must be one of these, compared without case and without a trailing
    /// slash, e.g. `https://chat.example.com`.
    List(Vec<String>),
    /// Any origin.
    Any,
}

impl OriginPolicy {
    /// Whether a request with these `Origin` and `Host` header values may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/');
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(allowed) => allowed
                .iter()
                .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin)),
            OriginPolicy::SameHost => {
                let Some(host) = host else { return false };
                let Some((scheme, authority)) = origin.split_once("://") else {
                    return false; // "null" and other opaque origins
                };
                let default_port = match scheme.to_ascii_lowercase().as_str() {
                    "http" => "80",
                    "https" => "443",
                    _ => return false,
                };
                same_authority(authority, host.trim(), default_port)
            }
        }
    }
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

    #[test]
    fn same_host_compares_host_and_port() {
        let p = OriginPolicy::SameHost;
        assert!(p.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(p.allows(Some("https://Chat.Example.com"), Some("chat.example.com")));
        assert!(p.allows(
            Some("https://chat.example.com"),
            Some("chat.example.com:443")
        ));
        assert!(p.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!p.allows(Some("http://evil.example"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("null"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("http://127.0.0.1:8080"), None));
        assert!(
            p.allows(None, Some("127.0.0.1:8080")),
            "non-browser clients"
        );
    }

    #[test]
    fn list_and_any() {
        let p = OriginPolicy::List(vec!["https://app.example.com/".into()]);
        assert!(p.allows(Some("https://APP.example.com"), Some("api.example.com")));
        assert!(!p.allows(Some("https://other.example.com"), Some("api.example.com")));
        assert!(OriginPolicy::Any.allows(Some("http://anything"), None));
    }
}
