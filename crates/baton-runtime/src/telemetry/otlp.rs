//! Export over OTLP/HTTP (protobuf bodies) through `tracing-opentelemetry`.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;

/// The path of the traces endpoint under a collector's OTLP/HTTP base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Where spans go, and under what service name.
///
/// ```
/// use std::time::Duration;
/// use baton_runtime::telemetry::OtlpConfig;
///
/// let config = OtlpConfig::new("http://127.0.0.1:4318")
///     .service_name("research-bot")
///     .timeout(Duration::from_secs(5));
/// assert_eq!(config.traces_url().as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    endpoint: Option<String>,
    service_name: String,
    timeout: Duration,
}

impl Default for OtlpConfig {
    /// The endpoint from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`; the
    /// service `baton`; a 10 s export timeout.
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "baton".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl OtlpConfig {
    /// Sends spans to the collector whose OTLP/HTTP base URL is `endpoint`
    /// (e.g. `http://localhost:4318`, Jaeger's and the OpenTelemetry
    /// Collector's OTLP/HTTP port); `/v1/traces` is appended unless the URL
    /// already ends with it.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            ..Self::default()
        }
    }

    /// The `service.name` resource attribute the viewer groups traces by.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// How long one export request may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL spans are posted to, if set here (otherwise the exporter
    /// reads the standard `OTEL_EXPORTER_OTLP_*` variables).
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        let base = endpoint.trim_end_matches('/');
        Some(if base.ends_with(TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{TRACES_PATH}")
        })
    }
}

/// Why the OTLP exporter could not be set up, flushed or shut down.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter could not be built (e.g. an invalid endpoint URL).
    #[error("cannot build the OTLP span exporter for {endpoint}: {source}")]
    Exporter {
        /// The URL it was built for (`default` when taken from the
        /// environment).
        endpoint: String,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The endpoint is `https://`: the `otel` feature sends plain HTTP
    /// only (to a collector or agent nearby, which may forward over TLS).
    #[error("cannot send spans to {endpoint}: the otel feature speaks plain HTTP only; send them to a local OpenTelemetry Collector or Jaeger over http://")]
    TlsUnsupported {
        /// The URL asked for.
        endpoint: String,
    },
    /// Another global subscriber is already installed.
    #[error("cannot install the OTLP layer as the global tracing subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// Spans could not be sent.
    #[error("cannot flush spans to the OTLP endpoint: {0}")]
    Flush(#[source] OTelSdkError),
    /// The exporter did not shut down cleanly (spans may be lost).
    #[error("cannot shut down the OTLP exporter: {0}")]
    Shutdown(#[source] OTelSdkError),
}

/// The `tracing` layer [`otlp_layer`] returns.
pub type OtlpLayer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>;

/// Owns the exporter behind an [`OtlpLayer`]: spans are sent in batches
/// from a background thread; [`OtlpGuard::flush`] sends what is pending,
/// and dropping the guard (or [`OtlpGuard::shutdown`]) sends the rest and
/// stops the thread. Keep it alive as long as the program traces.
#[derive(Debug)]
pub struct OtlpGuard {
    provider: SdkTracerProvider,
    shut_down: bool,
}

impl OtlpGuard {
    /// Sends every finished span now, waiting for the collector's answer.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider.force_flush().map_err(TelemetryError::Flush)
    }

    /// Sends every finished span and stops the exporter. Spans that end
    /// afterwards are dropped.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shut_down = true;
        self.provider.shutdown().map_err(TelemetryError::Shutdown)
    }

    /// The OpenTelemetry tracer provider, to create more tracers from it.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if !self.shut_down {
            if let Err(error) = self.provider.shutdown() {
                eprintln!("baton: the OTLP exporter did not shut down cleanly: {error}");
            }
        }
    }
}

/// Builds a `tracing` layer that exports spans over OTLP/HTTP with
/// protobuf bodies, in batches from a background thread. Span nesting
/// becomes OpenTelemetry parent/child, and `follows_from` becomes a span
/// link; span fields (`agent`, `task_id`, `parent`, `depth`, …) become
/// attributes. Add it to a subscriber with
/// `tracing_subscriber::registry().with(layer)`.
///
/// ```no_run
/// use baton_runtime::telemetry::{otlp_layer, OtlpConfig};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let (layer, guard) = otlp_layer(&OtlpConfig::new("http://localhost:4318"))?;
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
/// // … run conversations …
/// guard.shutdown()?; // send what is left
/// # Ok::<(), baton_runtime::telemetry::TelemetryError>(())
/// ```
pub fn otlp_layer<S>(config: &OtlpConfig) -> Result<(OtlpLayer<S>, OtlpGuard), TelemetryError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(config.timeout);
    let url = config.traces_url();
    if let Some(url) = url.as_ref().filter(|u| has_scheme(u, "https")) {
        return Err(TelemetryError::TlsUnsupported {
            endpoint: url.clone(),
        });
    }
    if let Some(url) = &url {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = builder.build().map_err(|source| TelemetryError::Exporter {
        endpoint: url.unwrap_or_else(|| "default".to_owned()),
        source,
    })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("baton");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        layer,
        OtlpGuard {
            provider,
            shut_down: false,
        },
    ))
}

/// Installs a global subscriber that exports every span over OTLP (see
/// [`otlp_layer`]). To also log to the terminal, build the subscriber
/// yourself from [`otlp_layer`] and a formatting layer.
pub fn init_otlp(config: &OtlpConfig) -> Result<OtlpGuard, TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let (layer, guard) = otlp_layer(config)?;
    tracing_subscriber::registry().with(layer).try_init()?;
    Ok(guard)
}

/// The W3C trace context of `span`, through the SDK's
/// `TraceContextPropagator`; `None` if the span has no valid OpenTelemetry
/// context (no OpenTelemetry layer, or the span is disabled).
pub(super) fn inject(span: &tracing::Span) -> Option<super::TraceContext> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(super::TraceContext {
        traceparent: carrier.remove(super::TraceContext::TRACEPARENT)?,
        tracestate: carrier
            .remove(super::TraceContext::TRACESTATE)
            .filter(|s| !s.is_empty()),
    })
}

/// The OpenTelemetry context a [`super::TraceContext`] describes, through
/// the SDK's `TraceContextPropagator`; `None` if it is not a valid
/// `traceparent`.
fn extract(context: &super::TraceContext) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(
        super::TraceContext::TRACEPARENT.to_owned(),
        context.traceparent.clone(),
    );
    if let Some(state) = &context.tracestate {
        carrier.insert(super::TraceContext::TRACESTATE.to_owned(), state.clone());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` (not started yet) a child of the remote agent span in
/// `trace`, linked to the remote turn that created the task. An invalid
/// context is ignored (the span stays a root), with a debug event.
pub(super) fn continue_remote(span: &tracing::Span, trace: &super::RemoteTrace) {
    match extract(&trace.parent) {
        Some(parent) => {
            if let Err(error) = span.set_parent(parent) {
                tracing::debug!(%error, "cannot continue the delegating process's trace");
            }
        }
        None => tracing::debug!(
            traceparent = %trace.parent.traceparent,
            "ignored an invalid remote trace context"
        ),
    }
    if let Some(turn) = trace.started_by.as_ref().and_then(extract) {
        span.add_link(turn.span().span_context().clone());
    }
}

/// Whether `url` starts with `scheme://`, in any case.
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::telemetry::{remote_task_span, RemoteTrace, TraceContext};
    use baton_core::{AgentName, TaskId};
    use opentelemetry::trace::SpanId;
    use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Registry;

    /// Keeps every ended span.
    #[derive(Debug, Clone, Default)]
    struct Keep(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Keep {
        fn on_start(
            &self,
            _span: &mut opentelemetry_sdk::trace::Span,
            _cx: &opentelemetry::Context,
        ) {
        }
        fn on_end(&self, span: SpanData) {
            self.0.lock().expect("not poisoned").push(span);
        }
        fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(
            &self,
            _timeout: Duration,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
    }

    /// Runs `f` with spans going through a `tracing-opentelemetry` layer
    /// (each call its own provider, standing for one process); returns the
    /// ended spans.
    fn in_process<T>(f: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
        let kept = Keep::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(kept.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let out = tracing::subscriber::with_default(Registry::default().with(layer), f);
        let spans = std::mem::take(&mut *kept.0.lock().expect("not poisoned"));
        (out, spans)
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span named {name:?} in {spans:?}"))
    }

    #[test]
    fn a_remote_task_span_continues_the_trace_it_was_sent() {
        // The delegating process: an agent span and the turn that delegates.
        let (trace, sent) = in_process(|| {
            let agent = tracing::info_span!("agent", otel.name = "lead");
            let turn = tracing::info_span!(parent: &agent, "turn", otel.name = "turn 1");
            RemoteTrace::of(&agent, &turn)
        });
        let trace = trace.expect("spans are exported, so there is a context to send");
        let lead = named(&sent, "lead");
        let turn = named(&sent, "turn 1");
        let lead_context = &lead.span_context;
        assert_eq!(
            trace.parent.traceparent,
            format!(
                "00-{}-{}-01",
                lead_context.trace_id(),
                lead_context.span_id()
            ),
            "W3C traceparent: version, trace id, span id, sampled"
        );
        assert_eq!(trace.parent.tracestate, None);
        let started_by = trace.started_by.as_ref().expect("the turn's context");
        assert!(started_by
            .traceparent
            .contains(&turn.span_context.span_id().to_string()));

        // What travels: JSON in a RemoteTask, or headers.
        let wire = serde_json::to_string(&trace).expect("serialize");
        let received: RemoteTrace = serde_json::from_str(&wire).expect("deserialize");
        assert_eq!(received, trace);

        // The running process: its task span, and a child, join the trace.
        let ((), ran) = in_process(|| {
            let span = remote_task_span(
                &AgentName::new("researcher"),
                TaskId::new(1),
                2,
                "worker-a",
                Some(&received),
            );
            let _child = tracing::info_span!(parent: &span, "agent", otel.name = "researcher");
        });
        let remote = named(&ran, "researcher task-1 on worker-a");
        assert_eq!(remote.span_context.trace_id(), lead_context.trace_id());
        assert_eq!(remote.parent_span_id, lead_context.span_id());
        assert!(remote.parent_span_is_remote);
        assert_eq!(remote.links.links.len(), 1);
        assert_eq!(
            remote.links.links[0].span_context.span_id(),
            turn.span_context.span_id()
        );
        let child = named(&ran, "researcher");
        assert_eq!(child.span_context.trace_id(), lead_context.trace_id());
        assert_eq!(child.parent_span_id, remote.span_context.span_id());
    }

    #[test]
    fn no_or_an_invalid_context_leaves_a_root_span() {
        let bad = RemoteTrace {
            parent: TraceContext {
                traceparent: "00-not-a-trace-01".to_owned(),
                tracestate: None,
            },
            started_by: None,
        };
        let ((), spans) = in_process(|| {
            for trace in [None, Some(&bad)] {
                drop(remote_task_span(
                    &AgentName::new("researcher"),
                    TaskId::new(1),
                    1,
                    "worker-a",
                    trace,
                ));
            }
        });
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert_eq!(span.parent_span_id, SpanId::INVALID);
            assert!(span.links.links.is_empty());
        }
        assert_ne!(
            spans[0].span_context.trace_id(),
            spans[1].span_context.trace_id(),
            "each root span starts a trace of its own"
        );
    }

    #[test]
    fn a_span_without_an_opentelemetry_layer_has_no_context_to_send() {
        let subscriber = Registry::default();
        let trace = tracing::subscriber::with_default(subscriber, || {
            let agent = tracing::info_span!("agent");
            RemoteTrace::of(&agent, &agent)
        });
        assert_eq!(trace, None);
        assert_eq!(TraceContext::of(&tracing::Span::none()), None);
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        for endpoint in [
            "http://127.0.0.1:4318",
            "http://127.0.0.1:4318/",
            "http://127.0.0.1:4318/v1/traces",
        ] {
            assert_eq!(
                OtlpConfig::new(endpoint).traces_url().as_deref(),
                Some("http://127.0.0.1:4318/v1/traces")
            );
        }
        assert_eq!(OtlpConfig::default().traces_url(), None);
    }

    #[test]
    fn an_https_endpoint_is_refused_with_the_reason() {
        let Err(error) = otlp_layer::<Registry>(&OtlpConfig::new("HTTPS://collector:4318")) else {
            panic!("an https endpoint was accepted");
        };
        assert!(matches!(error, TelemetryError::TlsUnsupported { .. }));
        assert!(error.to_string().contains("plain HTTP"), "{error}");
    }

    #[test]
    fn an_invalid_endpoint_is_an_error_naming_it() {
        let Err(error) = otlp_layer::<Registry>(&OtlpConfig::new("http://[::1")) else {
            panic!("an invalid endpoint was accepted");
        };
        assert!(
            matches!(error, TelemetryError::Exporter { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("http://[::1"), "{error}");
    }
}
