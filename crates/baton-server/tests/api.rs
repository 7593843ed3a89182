//! The HTTP API over real HTTP on 127.0.0.1: every route, its errors, and
//! the event stream (resume, dropped events, stalled clients).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("errors are JSON");
    (
        status,
        body["code"].as_str().expect("a code").to_owned(),
        body["message"].as_str().expect("a message").to_owned(),
    )
}

#[actix_rt::test]
async fn conversations_are_created_listed_read_and_deleted() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);

    let res = api.post("/v1/conversations").send().await.unwrap();
    assert_eq!(res.status(), 201, "an empty body starts the default agent");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["agent"], "lead");
    assert_eq!(
        location,
        format!("/v1/conversations/{}", first["id"].as_str().unwrap())
    );
    let echo = api.create("echo").await;

    let list = api.json("/v1/conversations").await;
    assert_eq!(list["agents"], json!(["lead", "careful", "echo"]));
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first["id"].as_str().unwrap(), echo.as_str()]);
    let one = api.json(&location).await;
    assert_eq!((&one["id"], &one["agent"]), (&first["id"], &first["agent"]));

    let res = api
        .delete(&format!("/v1/conversations/{echo}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (status, code, _) = error_of(
        api.get(&format!("/v1/conversations/{echo}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "conversation_not_found"));
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_message_runs_the_tree_and_every_read_route_shows_it() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;
    let mut events = api.events(&convo, None).await;

    let res = api
        .post(&format!("/v1/conversations/{convo}/messages"))
        .json(&json!({"text": "bees"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "posting returns at once");
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["conversation"], convo.as_str());

    let frames = events.until(root_settled()).await;
    let seqs: Vec<u64> = frames.iter().map(|f| f.id.unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no gap, in order"
    );
    assert_eq!(
        frames[0].data["type"], "idle",
        "the conversation starts idle"
    );
    assert_eq!(frames[1].data["type"], "user_message");
    assert_eq!(frames[1].data["text"], "bees");
    let created = frames
        .iter()
        .filter(|f| f.data["type"] == "task_created")
        .count();
    assert_eq!(created, 6, "two researchers, four fetchers");

    let tree = api.json(&format!("/v1/conversations/{convo}/tree")).await;
    assert_eq!(tree["root"], "lead");
    let researchers = tree["children"].as_array().unwrap();
    assert_eq!(researchers.len(), 2);
    for r in researchers {
        assert_eq!(r["task"]["source"], "researcher");
        assert_eq!(r["task"]["status"], "succeeded");
        assert_eq!(r["task"]["attempts"], 1);
        assert!(r["task"]["duration_ms"].is_u64());
        assert_eq!(r["children"].as_array().unwrap().len(), 2);
        for f in r["children"].as_array().unwrap() {
            assert_eq!(f["task"]["source"], "fetcher");
            assert_eq!(f["task"]["status"], "succeeded");
            assert_eq!(f["task"]["tokens"], 15);
        }
    }
    assert!(tree["tokens_used"].as_u64().unwrap() > 0);
    assert!(tree["text"].as_str().unwrap().starts_with("lead\n"));

    let tasks = api.json(&format!("/v1/conversations/{convo}/tasks")).await;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6);
    assert!(tasks.iter().all(|t| t["status"] == "succeeded"));
    let fetcher = tasks.iter().find(|t| t["source"] == "fetcher").unwrap();
    let id = fetcher["id"].as_str().unwrap();
    let one = api
        .json(&format!("/v1/conversations/{convo}/tasks/{id}"))
        .await;
    assert_eq!(&one, fetcher);
    assert_eq!(one["kind"], "delegation");
    assert!(one["detail"]
        .as_str()
        .unwrap()
        .starts_with("fetcher on bees/"));

    let history = api
        .json(&format!("/v1/conversations/{convo}/history"))
        .await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages[0], json!({"role": "user", "content": "bees"}));
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2);
    assert!(messages
        .iter()
        .any(|m| m["role"] == "task_result" && m["task_status"] == "succeeded"));
    assert_eq!(
        messages.last().unwrap()["content"],
        "lead: all 2 results are in"
    );

    let info = api.json(&format!("/v1/conversations/{convo}")).await;
    assert_eq!(info["last_event_seq"], *seqs.last().unwrap());
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_running_task_is_cancelled_with_its_subtree() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;
    let mut events = api.events(&convo, None).await;
    api.say(&convo, "wait for bees").await;
    // Four fetchers hang: wait until all four have started.
    let mut started = 0;
    events
        .until(|f| {
            if f.data["type"] == "turn_started" && f.data["agent"] == "fetcher" {
                started += 1;
            }
            started == 4
        })
        .await;
    let tree = api.json(&format!("/v1/conversations/{convo}/tree")).await;
    let researcher = &tree["children"][0];
    let id = researcher["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(researcher["task"]["status"], "running");

    let res = api
        .post(&format!("/v1/conversations/{convo}/tasks/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"task_id": id, "status": "cancelled"}));

    let tree = api.json(&format!("/v1/conversations/{convo}/tree")).await;
    assert_eq!(tree["children"][0]["task"]["status"], "cancelled");
    for f in tree["children"][0]["children"].as_array().unwrap() {
        assert_eq!(f["task"]["status"], "cancelled", "the subtree goes too");
    }
    assert_eq!(
        tree["children"][1]["task"]["status"], "running",
        "and nothing else"
    );

    // Cancelling again keeps the status; approving a running task is a conflict.
    let res = api
        .post(&format!("/v1/conversations/{convo}/tasks/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "cancelled");
    let other = tree["children"][1]["task"]["id"].as_str().unwrap();
    let (status, code, _) = error_of(
        api.post(&format!("/v1/conversations/{convo}/tasks/{other}/approve"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "not_awaiting_approval"));
    let (status, code, _) = error_of(
        api.post(&format!("/v1/conversations/{convo}/tasks/{other}/reject"))
            .json(&json!({"reason": "no"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "not_awaiting_approval"));
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn delegations_wait_for_approval_and_are_approved_or_rejected() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("careful").await;
    let mut events = api.events(&convo, None).await;
    api.say(&convo, "bees").await;
    let mut asked = Vec::new();
    events
        .until(|f| {
            if f.data["type"] == "approval_requested" {
                asked.push(f.data["task_id"].as_str().unwrap().to_owned());
            }
            asked.len() == 2
        })
        .await;
    for id in &asked {
        let task = api
            .json(&format!("/v1/conversations/{convo}/tasks/{id}"))
            .await;
        assert_eq!(task["status"], "awaiting_approval");
    }
    let res = api
        .post(&format!(
            "/v1/conversations/{convo}/tasks/{}/approve",
            asked[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["task_id"],
        asked[0].as_str()
    );
    let res = api
        .post(&format!(
            "/v1/conversations/{convo}/tasks/{}/reject",
            asked[1]
        ))
        .json(&json!({"reason": "not this one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The user message was read above: wait for the lead to be idle with
    // nothing running.
    events
        .until(|f| {
            f.data["type"] == "idle" && f.data["task"].is_null() && f.data["running_tasks"] == 0
        })
        .await;
    let approved = api
        .json(&format!("/v1/conversations/{convo}/tasks/{}", asked[0]))
        .await;
    assert_eq!(approved["status"], "succeeded");
    let rejected = api
        .json(&format!("/v1/conversations/{convo}/tasks/{}", asked[1]))
        .await;
    assert_eq!(rejected["status"], "failed");
    assert!(
        rejected["detail"]
            .as_str()
            .unwrap()
            .contains("not this one"),
        "{rejected}"
    );
    // Deciding twice is a conflict.
    let (status, code, _) = error_of(
        api.post(&format!(
            "/v1/conversations/{convo}/tasks/{}/approve",
            asked[1]
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "not_awaiting_approval"));
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn requests_without_the_token_are_refused_and_the_token_is_never_logged() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("echo").await;
    api.say(&convo, "hello").await;
    let routes = [
        ("GET", "/v1/conversations".to_owned()),
        ("POST", "/v1/conversations".to_owned()),
        ("GET", format!("/v1/conversations/{convo}")),
        ("DELETE", format!("/v1/conversations/{convo}")),
        ("POST", format!("/v1/conversations/{convo}/messages")),
        ("GET", format!("/v1/conversations/{convo}/events")),
        ("GET", format!("/v1/conversations/{convo}/history")),
        ("GET", format!("/v1/conversations/{convo}/tree")),
        ("GET", format!("/v1/conversations/{convo}/tasks")),
        ("GET", format!("/v1/conversations/{convo}/tasks/task-1")),
        (
            "POST",
            format!("/v1/conversations/{convo}/tasks/task-1/cancel"),
        ),
        (
            "POST",
            format!("/v1/conversations/{convo}/tasks/task-1/approve"),
        ),
        (
            "POST",
            format!("/v1/conversations/{convo}/tasks/task-1/reject"),
        ),
        ("GET", "/v1/nowhere".to_owned()),
    ];
    let wrong = "0123456789abcdef0123456789abcdef";
    for (method, path) in &routes {
        let url = format!("{}{path}", api.base);
        let method: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some(format!("Bearer {wrong}")),
            Some(api.token.clone()),
        ] {
            // The last one is the right token without `Bearer `.
            let mut req = api
                .http
                .request(method.clone(), &url)
                .json(&json!({"text": "x"}));
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            let res = req.send().await.unwrap();
            assert_eq!(
                res.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {path}"
            );
            let (status, code, message) = error_of(res).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthorized"),
                "{method} {path}"
            );
            assert!(!message.contains(&api.token));
        }
    }
    // The conversation is untouched.
    let info = api.json(&format!("/v1/conversations/{convo}")).await;
    assert_eq!(info["id"], convo.as_str());
    // The page and the API description need no token.
    for path in ["/", "/assets/app.js", "/assets/app.css", "/openapi.json"] {
        let res = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    server.stop().await.unwrap();

    let logs = logs();
    assert!(logs.contains("conversation started"), "logs are captured");
    assert!(logs.contains("refused: no valid bearer token"));
    assert!(!logs.contains(&api.token), "the token is never logged");
}

#[actix_rt::test]
async fn bodies_and_messages_are_bounded() {
    let server = start(|c| {
        c.max_body_bytes = 1024;
        c.max_message_chars = 100;
    })
    .await;
    let api = Api::new(&server);
    let convo = api.create("echo").await;
    let path = format!("/v1/conversations/{convo}/messages");

    let big = json!({"text": "x".repeat(2000)});
    let (status, code, _) = error_of(api.post(&path).json(&big).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    // Also without a Content-Length (chunked).
    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 100]))),
    );
    let res = api
        .post(&path)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let long = json!({"text": "é".repeat(101)});
    let (status, code, message) = error_of(api.post(&path).json(&long).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (422, "invalid_message"));
    assert!(message.contains("100 characters"), "{message}");
    let fits = json!({"text": "é".repeat(100)});
    assert_eq!(
        api.post(&path).json(&fits).send().await.unwrap().status(),
        202
    );
    let (status, code, _) = error_of(
        api.post(&path)
            .json(&json!({"text": "  "}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_message"));
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn unknown_ids_routes_and_methods_are_clear_4xx() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            api.get("/v1/conversations/conv-999"),
            404,
            "conversation_not_found",
        ),
        (
            api.get("/v1/conversations/nonsense/tree"),
            404,
            "conversation_not_found",
        ),
        (
            api.get("/v1/conversations/conv-999/events"),
            404,
            "conversation_not_found",
        ),
        (
            api.delete("/v1/conversations/conv-999"),
            404,
            "conversation_not_found",
        ),
        (
            api.post("/v1/conversations/conv-999/messages")
                .json(&json!({"text": "hi"})),
            404,
            "conversation_not_found",
        ),
        (
            api.get(&format!("/v1/conversations/{convo}/tasks/task-999")),
            404,
            "task_not_found",
        ),
        (
            api.get(&format!("/v1/conversations/{convo}/tasks/42")),
            404,
            "task_not_found",
        ),
        (
            api.post(&format!("/v1/conversations/{convo}/tasks/task-999/cancel")),
            404,
            "task_not_found",
        ),
        (
            api.post(&format!("/v1/conversations/{convo}/tasks/task-999/approve")),
            404,
            "task_not_found",
        ),
        (
            api.get(&format!("/v1/conversations/{convo}/tasks/banana")),
            400,
            "invalid_task_id",
        ),
        (
            api.post(&format!("/v1/conversations/{convo}/tasks/banana/cancel")),
            400,
            "invalid_task_id",
        ),
        (
            api.get(&format!("/v1/conversations/{convo}/events"))
                .header("Last-Event-ID", "soon"),
            400,
            "invalid_event_id",
        ),
        (
            api.get(&format!("/v1/conversations/{convo}/events?after=-1")),
            400,
            "invalid_event_id",
        ),
        (api.get("/v1/nowhere"), 404, "not_found"),
        (api.get("/nowhere"), 404, "not_found"),
        (api.put("/v1/conversations"), 405, "method_not_allowed"),
        (
            api.get(&format!("/v1/conversations/{convo}/messages")),
            405,
            "method_not_allowed",
        ),
        (
            api.post("/v1/conversations")
                .json(&json!({"agent": "nobody"})),
            422,
            "unknown_agent",
        ),
    ];
    for (req, want_status, want_code) in cases {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url());
        let (status, code, message) = error_of(api.http.execute(req).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (want_status, want_code),
            "{what}: {message}"
        );
        assert!(!message.is_empty());
    }
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn malformed_and_misshapen_json_are_refused() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("echo").await;
    let path = format!("/v1/conversations/{convo}/messages");
    let cases = [
        (path.as_str(), "{\"text\": ", 400, "malformed_json"),
        (path.as_str(), "not json", 400, "malformed_json"),
        (path.as_str(), "", 400, "malformed_json"),
        (path.as_str(), "{\"txt\": \"hi\"}", 422, "invalid_body"),
        (path.as_str(), "{\"text\": 3}", 422, "invalid_body"),
        (path.as_str(), "\"hi\"", 422, "invalid_body"),
        ("/v1/conversations", "{\"agent\": [1]}", 422, "invalid_body"),
        ("/v1/conversations", "{,}", 400, "malformed_json"),
    ];
    for (path, body, want_status, want_code) in cases {
        let res = api
            .post(path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let err: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{body:?}: {status} {text}"));
        assert_eq!(
            (status.as_u16(), err["code"].as_str()),
            (want_status, Some(want_code)),
            "{body:?}: {text}"
        );
    }
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn the_event_stream_resumes_after_a_disconnect_without_losing_an_event() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;

    // Read the first few events, then disconnect; a watcher stays.
    let mut first = api.events(&convo, None).await;
    let mut watcher = api.events(&convo, None).await;
    api.say(&convo, "bees").await;
    let seen = first.until(|f| f.data["type"] == "task_created").await;
    drop(first);
    let last = seen.last().unwrap().id.unwrap();

    // The tree runs to its end while the first client is away.
    let everything = watcher.until(root_settled()).await;
    let n = everything.last().unwrap().id.unwrap();
    assert!(n > last + 20);

    let mut resumed = api.events(&convo, Some(last)).await;
    let rest = resumed.until(|f| f.id == Some(n)).await;
    assert!(
        rest.iter().all(|f| f.event.is_none()),
        "nothing was dropped"
    );
    let all: Vec<u64> = seen.iter().chain(&rest).map(|f| f.id.unwrap()).collect();
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let data = |frames: &[Frame]| frames.iter().map(|f| f.data.clone()).collect::<Vec<_>>();
    assert_eq!(data(&rest), data(&everything[last as usize..]));

    // A fresh stream from the start replays the same events.
    let mut replay = api.events(&convo, None).await;
    let again = replay.until(|f| f.id == Some(n)).await;
    assert_eq!(data(&again), data(&everything));
    // `?after=` does what `Last-Event-ID` does.
    let res = api
        .get(&format!("/v1/conversations/{convo}/events?after={}", n - 1))
        .send()
        .await
        .unwrap();
    let mut tail = Sse::from_response(res);
    assert_eq!(tail.next().await.unwrap().id, Some(n));
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_client_behind_the_replay_buffer_is_told_what_it_lost() {
    let server = start(|c| c.replay_events = 8).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;
    api.say(&convo, "bees").await;
    // A live reader could itself fall behind 8 events: poll instead.
    api.wait_for_answer(&convo, "lead: all 2 results are in")
        .await;
    let info = api.json(&format!("/v1/conversations/{convo}")).await;
    let newest = info["last_event_seq"].as_u64().unwrap();
    assert!(newest > 20);

    let mut late = api.events(&convo, Some(3)).await;
    let notice = late.next().await.unwrap();
    assert_eq!(notice.event.as_deref(), Some("dropped"));
    assert_eq!(notice.data["from_seq"], 4);
    let to_seq = notice.data["to_seq"].as_u64().unwrap();
    assert_eq!(notice.data["count"], to_seq - 3);
    assert!(to_seq >= newest - 8, "at most 8 events are kept");
    let kept = late.until(|f| f.id == Some(newest)).await;
    let ids: Vec<u64> = kept.iter().map(|f| f.id.unwrap()).collect();
    assert_eq!(ids, (to_seq + 1..=newest).collect::<Vec<_>>());
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_stalled_client_never_holds_up_the_conversation() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let convo = api.create("lead").await;
    // A client that asks for the stream and never reads a byte, with a
    // small receive window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stalled = socket.connect(server.addr()).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /v1/conversations/{convo}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                api.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut live = api.events(&convo, None).await;
    // Four rounds: the lead may have 8 children.
    for round in 0..4 {
        api.say(&convo, &format!("round {round}")).await;
        live.until(root_settled()).await;
    }
    let tasks = api.json(&format!("/v1/conversations/{convo}/tasks")).await;
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 24);
    assert!(tasks.iter().all(|t| t["status"] == "succeeded"));
    drop(stalled);
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn the_openapi_document_describes_every_route() {
    let server = start(|_| {}).await;
    let api = Api::new(&server);
    let doc: Value = api
        .http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/conversations", "get"),
        ("/v1/conversations", "post"),
        ("/v1/conversations/{id}", "get"),
        ("/v1/conversations/{id}", "delete"),
        ("/v1/conversations/{id}/messages", "post"),
        ("/v1/conversations/{id}/events", "get"),
        ("/v1/conversations/{id}/history", "get"),
        ("/v1/conversations/{id}/tree", "get"),
        ("/v1/conversations/{id}/tasks", "get"),
        ("/v1/conversations/{id}/tasks/{task_id}", "get"),
        ("/v1/conversations/{id}/tasks/{task_id}/cancel", "post"),
        ("/v1/conversations/{id}/tasks/{task_id}/approve", "post"),
        ("/v1/conversations/{id}/tasks/{task_id}/reject", "post"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path}");
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "ErrorCode",
        "TreeView",
        "TaskNodeView",
        "TaskView",
        "HistoryView",
        "DroppedEvents",
        "StreamEvent",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    assert!(codes.contains(&json!("payload_too_large")));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    server.stop().await.unwrap();
}

#[actix_rt::test]
async fn the_page_is_served_with_its_assets_and_a_strict_policy() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    let res = http.get(server.base_url()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = res.text().await.unwrap();
    assert!(html.contains("/assets/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert!(server
        .page_url()
        .ends_with(&format!("/#token={}", server.token().expose())));
    tokio::time::sleep(Duration::ZERO).await;
    server.stop().await.unwrap();
}
