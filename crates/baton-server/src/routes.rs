//! The HTTP routes: `/v1/...` (bearer token), `/openapi.json`, and the page.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use baton_core::TaskId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::OpenApi;

use crate::dto::*;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::event_log::{sse_stream, DroppedEvents};
use crate::state::{truncate, AppState, Hosted};

type State = web::Data<AppState>;

/// Registers every route on an actix-web app.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(crate::page::index)))
        .service(resource("/assets/app.js").route(web::get().to(crate::page::script)))
        .service(resource("/assets/app.css").route(web::get().to(crate::page::style)))
        .service(resource("/openapi.json").route(web::get().to(openapi)))
        .service(
            web::scope("/v1")
                .wrap(actix_web::middleware::from_fn(require_token))
                .service(
                    resource("/conversations")
                        .route(web::get().to(list_conversations))
                        .route(web::post().to(create_conversation)),
                )
                .service(
                    resource("/conversations/{id}")
                        .route(web::get().to(get_conversation))
                        .route(web::delete().to(delete_conversation)),
                )
                .service(
                    resource("/conversations/{id}/messages").route(web::post().to(post_message)),
                )
                .service(resource("/conversations/{id}/events").route(web::get().to(events)))
                .service(resource("/conversations/{id}/history").route(web::get().to(history)))
                .service(resource("/conversations/{id}/tree").route(web::get().to(tree)))
                .service(resource("/conversations/{id}/tasks").route(web::get().to(tasks)))
                .service(resource("/conversations/{id}/tasks/{task_id}").route(web::get().to(task)))
                .service(
                    resource("/conversations/{id}/tasks/{task_id}/cancel")
                        .route(web::post().to(cancel_task)),
                )
                .service(
                    resource("/conversations/{id}/tasks/{task_id}/approve")
                        .route(web::post().to(approve_task)),
                )
                .service(
                    resource("/conversations/{id}/tasks/{task_id}/reject")
                        .route(web::post().to(reject_task)),
                )
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(ApiError::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), truncate(req.path(), 128)),
    ))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    error_response(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            req.method(),
            truncate(req.path(), 128)
        ),
    ))
}

fn error_response(e: ApiError) -> HttpResponse {
    actix_web::ResponseError::error_response(&e)
}

/// Lets a request through only with `Authorization: Bearer <token>`.
/// Neither the header nor the token is ever logged.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ok = match (
        req.app_data::<State>(),
        req.headers().get(header::AUTHORIZATION),
    ) {
        (Some(state), Some(value)) => value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .is_some_and(|t| state.token.matches(t)),
        _ => false,
    };
    if !ok {
        tracing::debug!(method = %req.method(), path = %req.path(), "refused: no valid bearer token");
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "send `Authorization: Bearer <token>` with the token the server printed at start",
        )
        .into());
    }
    tracing::debug!(method = %req.method(), path = %req.path(), "request");
    next.call(req).await
}

/// Reads a JSON body of at most the configured size; an empty body is
/// `T::default()` when `empty` gives one.
async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    payload: web::Payload,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let bytes = payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| too_large())?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body could not be read: {e}"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if let Some(v) = empty {
            return Ok(v);
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_data() {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("the body is not as expected: {e}"),
            )
        } else {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            )
        }
    })
}

fn parse_task_id(s: &str) -> Result<TaskId, ApiError> {
    s.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidTaskId,
            format!("`{}` is not a task id (expected `task-N`)", truncate(s, 64)),
        )
    })
}

fn info(h: &Hosted) -> ConversationInfo {
    ConversationInfo {
        id: h.id.clone(),
        agent: h.agent.to_string(),
        tokens_used: h.convo.tokens_used(),
        last_event_seq: h.log.latest(),
    }
}

/// Lists the conversations and the agents new ones can start with.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations",
    responses((status = 200, body = ConversationList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_conversations(state: State) -> web::Json<ConversationList> {
    web::Json(ConversationList {
        conversations: state.all().iter().map(|h| info(h)).collect(),
        agents: state
            .factory
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect(),
    })
}

/// Starts a conversation (body optional: `{}` or `{"agent": "lead"}`).
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations",
    request_body(content = Option<CreateConversation>, content_type = "application/json"),
    responses(
        (status = 201, body = ConversationInfo, description = "Started; `Location` is its URL"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_conversation(state: State, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let req: CreateConversation =
        read_json(&state, body, Some(CreateConversation::default())).await?;
    let hosted = state.create(req.agent.as_deref()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/conversations/{}", hosted.id)))
        .json(info(&hosted)))
}

/// One conversation.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    responses((status = 200, body = ConversationInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_conversation(
    state: State,
    id: web::Path<String>,
) -> Result<web::Json<ConversationInfo>, ApiError> {
    Ok(web::Json(info(&*state.get(&id)?)))
}

/// Shuts a conversation down (cancelling its tasks) and forgets it; its
/// event streams end.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    responses((status = 204, description = "Gone"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_conversation(
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.remove(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Says something to the conversation. Returns at once (202); the answer
/// arrives on the event stream.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    request_body(content = PostMessage, content_type = "application/json"),
    responses(
        (status = 202, body = MessageAccepted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn post_message(
    state: State,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let hosted = state.get(&id)?;
    let msg: PostMessage = read_json(&state, body, None).await?;
    let max = state.config.max_message_chars;
    if msg.text.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "the message is empty",
        ));
    }
    if msg.text.chars().nth(max).is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            format!("the message is longer than {max} characters"),
        ));
    }
    let after_seq = hosted.log.latest();
    hosted.convo.send_user(msg.text).await?;
    Ok(HttpResponse::Accepted().json(MessageAccepted {
        conversation: hosted.id.clone(),
        after_seq,
    }))
}

/// Where an event stream starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Send the events after this sequence number (as `Last-Event-ID`,
    /// which wins when both are given). Default 0: every event kept.
    after: Option<u64>,
}

/// The conversation's events as Server-Sent Events: each frame's `id` is
/// the event's `seq` and its `data` a [`StreamEvent`]. Resumable: send
/// `Last-Event-ID` (or `?after=`) to get every event after it that the
/// server still keeps; events it no longer keeps are announced in an
/// `event: dropped` frame whose data is a `DroppedEvents`.
#[utoipa::path(get, path = "/v1/conversations/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The conversation, `conv-N`"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event"),
        EventsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "An endless stream; `event: dropped` frames carry DroppedEvents"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn events(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hosted = state.get(&id)?;
    let bad = |what: &str| {
        ApiError::new(
            ErrorCode::InvalidEventId,
            format!("{what} must be an event sequence number (a non-negative integer)"),
        )
    };
    let query =
        web::Query::<EventsQuery>::from_query(req.query_string()).map_err(|_| bad("`after`"))?;
    let after = match req.headers().get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("`Last-Event-ID`"))?,
        None => query.after.unwrap_or(0),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(sse_stream(
            hosted.log.clone(),
            after,
            state.config.sse_keep_alive,
            state.config.sse_batch_window,
        )))
}

/// The conversation's history, oldest first.
#[utoipa::path(get, path = "/v1/conversations/{id}/history", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    responses((status = 200, body = HistoryView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn history(state: State, id: web::Path<String>) -> Result<web::Json<HistoryView>, ApiError> {
    let hosted = state.get(&id)?;
    let history = hosted.convo.history().await?;
    Ok(web::Json(HistoryView {
        messages: history.messages().iter().map(Into::into).collect(),
    }))
}

/// A snapshot of the delegation tree.
#[utoipa::path(get, path = "/v1/conversations/{id}/tree", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    responses((status = 200, body = TreeView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn tree(state: State, id: web::Path<String>) -> Result<web::Json<TreeView>, ApiError> {
    let hosted = state.get(&id)?;
    Ok(web::Json(TreeView::new(
        &hosted.convo.tree(),
        hosted.convo.tokens_used(),
    )))
}

/// Every task of the tree, oldest first.
#[utoipa::path(get, path = "/v1/conversations/{id}/tasks", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`")),
    responses((status = 200, body = TaskList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn tasks(state: State, id: web::Path<String>) -> Result<web::Json<TaskList>, ApiError> {
    let hosted = state.get(&id)?;
    Ok(web::Json(TaskList {
        tasks: hosted.convo.tasks().iter().map(Into::into).collect(),
    }))
}

/// One task (read without waiting on the conversation).
#[utoipa::path(get, path = "/v1/conversations/{id}/tasks/{task_id}", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`"),
        ("task_id" = String, Path, description = "The task, `task-N`")),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn task(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<web::Json<TaskView>, ApiError> {
    let (id, task_id) = path.into_inner();
    let hosted = state.get(&id)?;
    let task_id = parse_task_id(&task_id)?;
    let record = hosted
        .convo
        .check_task(task_id)
        .ok_or_else(|| unknown_task(&hosted, task_id))?;
    Ok(web::Json((&record).into()))
}

fn unknown_task(hosted: &Hosted, task_id: TaskId) -> ApiError {
    ApiError::new(
        ErrorCode::TaskNotFound,
        format!("conversation `{}` has no task `{task_id}`", hosted.id),
    )
}

async fn steer(
    state: &AppState,
    path: (String, String),
    action: impl AsyncFnOnce(
        &Hosted,
        TaskId,
    ) -> Result<baton_core::TaskStatus, baton_runtime::RuntimeError>,
) -> Result<web::Json<TaskStatusView>, ApiError> {
    let (id, task_id) = path;
    let hosted = state.get(&id)?;
    let task_id = parse_task_id(&task_id)?;
    let status = action(&hosted, task_id).await.map_err(|e| match e {
        baton_runtime::RuntimeError::UnknownTask(t) => unknown_task(&hosted, t),
        e => e.into(),
    })?;
    Ok(web::Json(TaskStatusView {
        task_id: task_id.to_string(),
        status: status.into(),
    }))
}

/// Cancels a task and everything under it; the agent that created it is
/// told. A task that has already ended keeps its status.
#[utoipa::path(post, path = "/v1/conversations/{id}/tasks/{task_id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`"),
        ("task_id" = String, Path, description = "The task, `task-N`")),
    responses((status = 200, body = TaskStatusView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_task(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<web::Json<TaskStatusView>, ApiError> {
    steer(&state, path.into_inner(), async |h: &Hosted, t| {
        h.convo.cancel_task(t).await
    })
    .await
}

/// Approves a task that waits for approval: it starts.
#[utoipa::path(post, path = "/v1/conversations/{id}/tasks/{task_id}/approve", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`"),
        ("task_id" = String, Path, description = "The task, `task-N`")),
    responses((status = 200, body = TaskStatusView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn approve_task(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<web::Json<TaskStatusView>, ApiError> {
    steer(&state, path.into_inner(), async |h: &Hosted, t| {
        h.convo.approve(t).await
    })
    .await
}

/// Rejects a task that waits for approval: it fails with the reason.
#[utoipa::path(post, path = "/v1/conversations/{id}/tasks/{task_id}/reject", tag = "tasks",
    params(("id" = String, Path, description = "The conversation, `conv-N`"),
        ("task_id" = String, Path, description = "The task, `task-N`")),
    request_body(content = Option<RejectTask>, content_type = "application/json"),
    responses((status = 200, body = TaskStatusView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn reject_task(
    state: State,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<web::Json<TaskStatusView>, ApiError> {
    let req: RejectTask = read_json(&state, body, Some(RejectTask::default())).await?;
    let reason = req.reason.unwrap_or_else(|| "rejected by the user".into());
    steer(&state, path.into_inner(), async move |h: &Hosted, t| {
        h.convo.reject(t, reason).await
    })
    .await
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "baton", description = "baton as a service: conversations with agents, their events as Server-Sent Events, and their delegation trees. Every `/v1` route needs `Authorization: Bearer <token>`."),
    paths(list_conversations, create_conversation, get_conversation, delete_conversation,
        post_message, events, history, tree, tasks, task, cancel_task, approve_task, reject_task),
    components(schemas(ErrorBody, ErrorCode, DroppedEvents, StreamEvent)),
    modifiers(&BearerAuth),
    tags((name = "conversations"), (name = "events"), (name = "tasks"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
