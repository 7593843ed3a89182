//! [`OtlpReceiver`]: a real OTLP/HTTP traces endpoint on loopback, for
//! tests of span export (the runtime's `otel` feature). It decodes the
//! protobuf export requests with `opentelemetry-proto` and keeps the spans.
//!
//! ```
//! use baton_testkit::otlp::OtlpReceiver;
//!
//! let receiver = OtlpReceiver::start().expect("bound");
//! assert!(receiver.url().starts_with("http://127.0.0.1:"));
//! assert!(receiver.spans().is_empty());
//! ```

use std::collections::HashMap;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// One span as received, with its attributes and its resource's
/// attributes as text (see [`attributes`]).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span as exported.
    pub span: Span,
    /// Its attributes.
    pub attributes: HashMap<String, String>,
    /// The attributes of the resource that sent it (`service.name`, …).
    pub resource: HashMap<String, String>,
}

impl ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub fn service(&self) -> Option<&str> {
        self.resource.get("service.name").map(String::as_str)
    }

    /// One of its attributes.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP traces endpoint (`POST /v1/traces`, protobuf) on a free
/// port of 127.0.0.1, served from a thread of its own so that it answers
/// whatever the test's runtime does (a paused clock, a blocked thread).
/// Stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    url: String,
    requests: mpsc::Receiver<ExportTraceServiceRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn export(
    State(sink): State<mpsc::Sender<ExportTraceServiceRequest>>,
    body: Bytes,
) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let _ = sink.send(request);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

impl OtlpReceiver {
    /// Binds a free port of 127.0.0.1 and starts serving.
    pub fn start() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (sink, requests) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("otlp receiver: {e}"),
                    };
                    let app = Router::new()
                        .route("/v1/traces", post(export))
                        .with_state(sink);
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    if let Err(e) = serve.await {
                        eprintln!("otlp receiver stopped: {e}");
                    }
                });
            })?;
        Ok(Self {
            url,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The OTLP/HTTP base URL (`http://127.0.0.1:<port>`), for
    /// `OtlpConfig::new` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The spans received since the last call, in the order they came.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut spans = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            for resource in request.resource_spans {
                let resource_attrs = resource
                    .resource
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(ReceivedSpan {
                            attributes: attributes(&span.attributes),
                            resource: resource_attrs.clone(),
                            span,
                        });
                    }
                }
            }
        }
        spans
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Attribute values as text: strings as they are, numbers in decimal.
pub fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}
