//! Errors: [`ApiError`] is what a request gets back (JSON with a stable
//! [`ErrorCode`]); [`ServeError`] is why the server could not start.

use std::net::SocketAddr;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::token::TokenError;

/// The stable, machine-readable reason of an error response. New codes
/// may be added; existing ones keep their meaning and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no `Authorization: Bearer` header, or the wrong token.
    Unauthorized,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 404: no conversation has this id.
    ConversationNotFound,
    /// 404: the conversation has no task with this id.
    TaskNotFound,
    /// 400: the task id is not of the form `task-N`.
    InvalidTaskId,
    /// 400: `Last-Event-ID` or `after` is not an event sequence number.
    InvalidEventId,
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 422: the body is JSON but not of the expected shape.
    InvalidBody,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 422: the message is longer than the server accepts, or empty.
    InvalidMessage,
    /// 422: the server has no agent of this name.
    UnknownAgent,
    /// 429: the server holds as many conversations as it may.
    TooManyConversations,
    /// 409: the conversation has been shut down.
    ConversationStopped,
    /// 409: the task does not wait for approval.
    NotAwaitingApproval,
    /// 500: something went wrong inside the server.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound | ErrorCode::ConversationNotFound | ErrorCode::TaskNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidTaskId | ErrorCode::InvalidEventId | ErrorCode::MalformedJson => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::InvalidBody | ErrorCode::InvalidMessage | ErrorCode::UnknownAgent => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyConversations => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ConversationStopped | ErrorCode::NotAwaitingApproval => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, stable across versions.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// An error a request ends with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// The human-readable message (never holds the token).
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.json(ErrorBody {
            code: self.code,
            message: self.message.clone(),
        })
    }
}

impl From<baton_runtime::RuntimeError> for ApiError {
    fn from(e: baton_runtime::RuntimeError) -> Self {
        use baton_runtime::RuntimeError as R;
        let code = match &e {
            R::Stopped => ErrorCode::ConversationStopped,
            R::UnknownTask(_) => ErrorCode::TaskNotFound,
            R::NotAwaitingApproval(..) => ErrorCode::NotAwaitingApproval,
            R::NotOwned(_) | R::Journal(_) => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No token was given and none could be generated.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The factory offers no agent to start conversations with.
    #[error("the server has no agent to start conversations with")]
    NoAgents,
    /// `serve` was called outside a running actix system.
    #[error(
        "baton_server::serve must run inside an actix system (#[actix::main] or actix_rt::System)"
    )]
    NoActixSystem,
}
