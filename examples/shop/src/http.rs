//! HTTP plumbing the services share: JSON errors and body/path extraction
//! that answers bad input with a 4xx JSON error instead of a plain-text one.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

/// Database or internal failures: logged, answered 500 without details.
impl From<eventbus::sqlx::Error> for ApiError {
    fn from(e: eventbus::sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<eventbus::outbox::OutboxError> for ApiError {
    fn from(e: eventbus::outbox::OutboxError) -> Self {
        tracing::error!(error = %e, "outbox error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

/// Result of an HTTP handler.
pub type ApiResult<T> = Result<T, ApiError>;
