//! A backplane from outside the crate, through the public seam: a store that cannot
//! be reached. Everything the hub and the connection driver ask of it must come back
//! to the client and the host as `unavailable`, with the connection left open.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};

use chatroom_core::backplane::{
    Backplane, BackplaneContext, ContextMatch, Entry, IntoBackplane, JoinFailure, JoinRequest,
    MemberChannel, MemberId, MemberInfo, Membership, NotTaken, QueueSender, Unavailable, queue,
};
use chatroom_core::protocol::{Ref, Reply, ServerFrame, WelcomeParts};
use chatroom_core::testing::TestClient;
use chatroom_core::{
    DisplayName, ErrorCode, Hub, JoinError, NameCheck, NameKey, PostError, RenameError,
    ResumeToken, RoomCursor, RoomDetails, RoomsPage, api,
};
use futures_util::future::BoxFuture;
use serde_json::json;

/// Admits joins to the room "up" (as a store that answered would) and fails
/// everything else, and every command of a joined member, as a store that stopped
/// answering.
struct Unreachable {
    /// The member queues, so that the memberships stay open.
    senders: Arc<Mutex<Vec<QueueSender>>>,
}

impl IntoBackplane for Unreachable {
    fn into_backplane(self, context: BackplaneContext) -> Box<dyn Backplane> {
        assert!(context.limits().outgoing_queue > 0);
        Box::new(self)
    }
}

struct Down;

impl MemberChannel for Down {
    fn send(&self, _: MemberId, _: u64, _: Arc<str>, _: Option<Ref>) -> Result<(), NotTaken> {
        Err(NotTaken::Unavailable)
    }

    fn rename(
        &self,
        _: MemberId,
        _: u64,
        _: Result<DisplayName, RenameError>,
        _: Option<Ref>,
    ) -> Result<(), NotTaken> {
        Err(Unavailable.into())
    }

    fn leave(
        &self,
        _: MemberId,
        _: u64,
    ) -> Result<BoxFuture<'static, Result<bool, NotTaken>>, NotTaken> {
        // Taken, then the store does not answer in time.
        Ok(Box::pin(async { Err(NotTaken::Unavailable) }))
    }

    fn disconnect(&self, _: MemberId, _: u64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl Backplane for Unreachable {
    fn join(&self, request: JoinRequest) -> BoxFuture<'_, Result<Membership, JoinFailure>> {
        Box::pin(async move {
            let Entry::Fresh { name, token } = request.entry else {
                return Err(JoinFailure::Refused(JoinError::StoreUnavailable));
            };
            if request.room.as_str() != "up" {
                return Err(JoinFailure::Refused(Unavailable.into()));
            }
            let (sender, frames) = queue(16);
            let members = serde_json::to_string(&[name.as_str()]).expect("names encode");
            let token = token.to_string();
            let welcome = WelcomeParts {
                room: request.room.as_str(),
                name: name.as_str(),
                members: &members,
                history: Vec::new(),
                last_id: 0,
                resume: &token,
                gap: false,
                reference: request.reference,
            };
            sender.push(welcome.encode()).expect("room for the welcome");
            self.senders.lock().expect("not poisoned").push(sender);
            Ok(Membership {
                member: 1,
                link: 1,
                room: Arc::new(Down),
                frames,
            })
        })
    }

    fn token_holder(
        &self,
        _: NameKey,
        _: ResumeToken,
    ) -> BoxFuture<'_, Result<Option<DisplayName>, NotTaken>> {
        Box::pin(async { Err(NotTaken::Unavailable) })
    }

    fn rooms(
        &self,
        _: Option<RoomCursor>,
        _: usize,
    ) -> BoxFuture<'_, Result<RoomsPage, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }

    fn room(&self, _: NameKey) -> BoxFuture<'_, Result<Option<RoomDetails>, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }

    fn holder(&self, _: NameKey, _: NameKey) -> BoxFuture<'_, Result<Option<String>, NotTaken>> {
        Box::pin(async { Err(NotTaken::Unavailable) })
    }

    fn post(
        &self,
        _: NameKey,
        _: Arc<str>,
        _: Arc<str>,
    ) -> BoxFuture<'_, Result<Option<u64>, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }

    fn kick(&self, _: NameKey, _: NameKey, _: String) -> BoxFuture<'_, Result<bool, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }

    fn kick_matching(
        &self,
        _: NameKey,
        _: ContextMatch,
        _: String,
    ) -> BoxFuture<'_, Result<usize, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }

    fn members(&self, _: NameKey) -> BoxFuture<'_, Result<Option<Vec<MemberInfo>>, Unavailable>> {
        Box::pin(async { Err(Unavailable) })
    }
}

fn hub() -> Hub {
    Hub::builder()
        .backplane(Unreachable {
            senders: Arc::default(),
        })
        .build()
}

async fn expect_unavailable(client: &mut TestClient, reference: &str) {
    match client.recv().await {
        Ok(ServerFrame::Reply(Reply::Error {
            code,
            reference: Some(r),
            ..
        })) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert_eq!(r, Ref::String(reference.into()));
        }
        other => panic!("expected unavailable for {reference}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_answers_unavailable_and_keeps_the_connection() {
    let hub = hub();
    let mut client = TestClient::connect(&hub);

    // A refused join: the connection stays open and may join elsewhere.
    client
        .send_json(&json!({"type": "join", "room": "down", "name": "Ann", "ref": "j1"}))
        .await;
    expect_unavailable(&mut client, "j1").await;
    client
        .send_json(&json!({"type": "join", "room": "up", "name": "Ann", "resume": ResumeToken::generate().unwrap().to_string(), "ref": "j2"}))
        .await;
    expect_unavailable(&mut client, "j2").await;

    let welcome = client.join("up", "Ann").await.expect("joined");
    assert_eq!(welcome.members, ["Ann"]);

    for (frame, reference) in [
        (json!({"type": "send", "text": "hi", "ref": "s"}), "s"),
        (json!({"type": "rename", "name": "Bea", "ref": "r"}), "r"),
        (json!({"type": "leave", "ref": "l"}), "l"),
    ] {
        client.send_json(&frame).await;
        expect_unavailable(&mut client, reference).await;
    }
    // Still in the room: a second join is refused as such, not as unavailable.
    client
        .send_json(&json!({"type": "join", "room": "up", "name": "Ann", "ref": "again"}))
        .await;
    match client.recv().await {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::AlreadyJoined)
        }
        other => panic!("expected already_joined, got {other:?}"),
    }
    assert!(
        !matches!(
            client.try_next_raw(),
            Some(chatroom_core::Outgoing::Close(_))
        ),
        "the connection stays open"
    );
}

#[tokio::test]
async fn the_host_and_the_http_api_hear_unavailable() {
    let hub = hub();
    assert_eq!(hub.rooms().await, Err(Unavailable));
    assert_eq!(hub.room("up").await, Err(Unavailable));
    assert!(matches!(hub.members("up").await, Err(Unavailable)));
    assert_eq!(hub.kick("up", "Ann", "x").await, Err(Unavailable));
    assert_eq!(
        hub.post("up", "bot", "hello").await,
        Err(PostError::Unavailable(Unavailable))
    );
    assert_eq!(hub.check_name("up", "Ann").await, NameCheck::Unavailable);

    for answer in [
        api::rooms_page(&hub, None).await,
        api::room(&hub, "up").await,
        api::name_check(&hub, "up", "Ann").await,
    ] {
        assert_eq!(answer.status, 503);
        let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
        assert_eq!(body["error"], "unavailable", "{body}");
    }
}
