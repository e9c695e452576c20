//! The HTTP API that both adapters serve, as framework-neutral responses, so that the
//! two return byte-identical answers.
//!
//! - `GET /rooms`: `[{"room": "General", "members": 2}]`
//! - `GET /rooms/{room}`: `{"room": "General", "members": ["Alice", "Bob"]}`, or 404
//! - `GET /rooms/{room}/names/{name}`: `{"available": false, "reason": "name_taken"}`

use serde::Serialize;

use crate::error::ErrorCode;
use crate::hub::{Hub, NameCheck};

/// A JSON response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl ApiResponse {
    fn json(status: u16, value: &impl Serialize) -> ApiResponse {
        match serde_json::to_string(value) {
            Ok(body) => ApiResponse { status, body },
            Err(e) => {
                tracing::error!(error = %e, "could not encode an API response");
                ApiResponse {
                    status: 500,
                    body: r#"{"error":"internal","message":"internal server error"}"#.into(),
                }
            }
        }
    }

    fn error(status: u16, error: &str, message: &str) -> ApiResponse {
        ApiResponse::json(
            status,
            &serde_json::json!({"error": error, "message": message}),
        )
    }

    /// The 403 answer to a WebSocket upgrade from an origin the policy does not allow.
    pub fn origin_rejected() -> ApiResponse {
        ApiResponse::error(
            403,
            "forbidden_origin",
            "this origin may not open a chat connection",
        )
    }

    /// The 404 answer for a path the API does not serve.
    pub fn not_found() -> ApiResponse {
        ApiResponse::error(404, "not_found", "no such resource")
    }
}

/// `GET /rooms`: every room with members, largest first.
pub async fn rooms(hub: &Hub) -> ApiResponse {
    ApiResponse::json(200, &hub.rooms().await)
}

/// `GET /rooms/{room}`: the room's display name and members, 404 if it has none.
pub async fn room(hub: &Hub, room: &str) -> ApiResponse {
    match hub.room(room).await {
        Some(details) => ApiResponse::json(200, &details),
        None => ApiResponse::error(404, "no_such_room", "no such room"),
    }
}

/// `GET /rooms/{room}/names/{name}`: whether the name could join now. An invalid room
/// name is a 400 with `invalid_room`.
pub async fn name_check(hub: &Hub, room: &str, name: &str) -> ApiResponse {
    #[derive(Serialize)]
    struct Availability {
        available: bool,
        reason: Option<ErrorCode>,
    }
    let answer = |reason: Option<ErrorCode>| Availability {
        available: reason.is_none(),
        reason,
    };
    match hub.check_name(room, name).await {
        NameCheck::Available => ApiResponse::json(200, &answer(None)),
        NameCheck::Taken { .. } => ApiResponse::json(200, &answer(Some(ErrorCode::NameTaken))),
        NameCheck::InvalidName(_) => ApiResponse::json(200, &answer(Some(ErrorCode::InvalidName))),
        NameCheck::InvalidRoom(e) => ApiResponse::error(
            400,
            ErrorCode::InvalidRoom.as_str(),
            &format!("that room name is not valid: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestClient;

    #[tokio::test]
    async fn responses_have_the_documented_shapes() {
        let hub = Hub::new();
        let mut a = TestClient::connect(&hub);
        a.join("General", "Alice").await.expect("joins");
        assert_eq!(
            rooms(&hub).await,
            ApiResponse {
                status: 200,
                body: r#"[{"room":"General","members":1}]"#.into()
            }
        );
        assert_eq!(
            room(&hub, "general").await.body,
            r#"{"room":"General","members":["Alice"]}"#
        );
        assert_eq!(room(&hub, "nope").await.status, 404);
        assert_eq!(
            name_check(&hub, "general", "ALICE").await.body,
            r#"{"available":false,"reason":"name_taken"}"#
        );
        assert_eq!(
            name_check(&hub, "general", "a\tb").await.body,
            r#"{"available":false,"reason":"invalid_name"}"#
        );
        assert_eq!(
            name_check(&hub, "general", "Bob").await.body,
            r#"{"available":true,"reason":null}"#
        );
        assert_eq!(name_check(&hub, "", "Bob").await.status, 400);
    }
}
