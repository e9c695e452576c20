//! A minimal HTTP/1.1 client for the chat server's JSON API: one kept-alive
//! connection, `GET` only, bodies framed by `Content-Length` (what both adapters
//! send for JSON). Enough for the load generator, which must not pull in a client
//! stack heavier than what it measures.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response: status, the `Link` header if any, and the body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub link: Option<String>,
    pub body: Vec<u8>,
}

/// A kept-alive connection to the server.
pub(crate) struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    pub(crate) fn new(addr: SocketAddr) -> HttpClient {
        HttpClient { addr, conn: None }
    }

    /// `GET path`, reconnecting once if the kept connection was closed; each attempt
    /// gives up after 10 s.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Response, String> {
        if self.conn.is_some() {
            if let Ok(r) = self.get_in_time(path).await {
                return Ok(r);
            }
            self.conn = None;
        }
        let r = self.get_in_time(path).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn get_in_time(&mut self, path: &str) -> Result<Response, String> {
        tokio::time::timeout(Duration::from_secs(10), self.get_once(path))
            .await
            .unwrap_or_else(|_| Err(format!("GET {path}: no answer within 10 s")))
    }

    async fn get_once(&mut self, path: &str) -> Result<Response, String> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        conn.get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        conn.read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP status line: {line:?}"))?;
        let (mut length, mut link, mut close) = (None, None, false);
        loop {
            line.clear();
            conn.read_line(&mut line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(format!("not a header: {header:?}"));
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "link" => link = Some(value.to_owned()),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => return Err(format!("unexpected {header}")),
                _ => {}
            }
        }
        let length = length.ok_or("a response without Content-Length")?;
        let mut body = vec![0; length];
        conn.read_exact(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if close {
            self.conn = None;
        }
        Ok(Response { status, link, body })
    }
}

/// Every room of `GET /rooms` (following its `Link` pages): (room, members).
pub(crate) async fn all_rooms(client: &mut HttpClient) -> Result<Vec<(String, u64)>, String> {
    let mut rooms = Vec::new();
    let mut query = "?limit=1000".to_owned();
    loop {
        let r = client.get(&format!("/rooms{query}")).await?;
        if r.status != 200 {
            return Err(format!("GET /rooms: HTTP {}", r.status));
        }
        let page: Vec<serde_json::Value> =
            serde_json::from_slice(&r.body).map_err(|e| format!("GET /rooms: {e}"))?;
        for room in page {
            let name = room["room"].as_str().unwrap_or_default().to_owned();
            rooms.push((name, room["members"].as_u64().unwrap_or(0)));
        }
        // `Link: <?limit=N&cursor=C>; rel="next"`
        match r.link.as_deref().and_then(|l| l.strip_prefix('<')) {
            Some(rest) => match rest.split_once('>') {
                Some((next, _)) => query = next.to_owned(),
                None => return Err(format!("a bad Link header: {:?}", r.link)),
            },
            None => return Ok(rooms),
        }
    }
}
