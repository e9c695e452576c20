//! `Hub::serve_transport`: one value that is both the client's stream and the sink.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::pin::Pin;
use std::task::{Context, Poll};

use chatroom_core::{ConnectionContext, ConnectionEnd, Hub, Incoming, Outgoing};
use futures_util::{Sink, Stream};
use serde_json::Value;
use tokio::sync::mpsc;

/// A whole transport over two in-memory channels, as an adapter would wrap a socket.
struct Socket {
    from_client: mpsc::UnboundedReceiver<Incoming>,
    to_client: mpsc::UnboundedSender<Outgoing>,
}

impl Stream for Socket {
    type Item = Incoming;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.get_mut().from_client.poll_recv(cx)
    }
}

impl Sink<Outgoing> for Socket {
    type Error = &'static str;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Outgoing) -> Result<(), Self::Error> {
        self.to_client.send(item).map_err(|_| "client gone")
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

async fn next_json(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Value {
    match rx.recv().await {
        Some(Outgoing::Text(t)) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_whole_transport_joins_sends_and_is_closed_by_its_peer_leaving_the_member_away() {
    let hub = Hub::new();
    let (client_tx, from_client) = mpsc::unbounded_channel();
    let (to_client, mut client_rx) = mpsc::unbounded_channel();
    let served = tokio::spawn(hub.serve_transport(
        ConnectionContext::new(),
        Socket {
            from_client,
            to_client,
        },
    ));
    let text = |s: &str| Incoming::Text(s.as_bytes().to_vec().into());
    client_tx
        .send(text(r#"{"type":"join","room":"Lobby","name":"Ada"}"#))
        .unwrap();
    let welcome = next_json(&mut client_rx).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["name"], "Ada");
    client_tx
        .send(text(r#"{"type":"send","text":"hello","ref":1}"#))
        .unwrap();
    let message = next_json(&mut client_rx).await;
    assert_eq!(
        (&message["type"], &message["text"]),
        (&"message".into(), &"hello".into())
    );
    let ack = next_json(&mut client_rx).await;
    assert_eq!((&ack["type"], &ack["ref"]), (&"ack".into(), &1.into()));
    drop(client_tx);
    assert_eq!(served.await.unwrap(), ConnectionEnd::ClosedByPeer);
    // Closed without `leave`: the member stays, away, for the resume window.
    let members = hub.room("Lobby").await.unwrap().map(|r| r.members);
    assert_eq!(members, Some(vec!["Ada".to_string()]));
}
