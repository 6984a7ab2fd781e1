//! Logs (tracing-subscriber) and, when configured, OTLP trace export.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};

/// How long dropping the guard waits for buffered spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-request timeout of one OTLP export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: invalid filter directive: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error(
        "telemetry.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): cannot build the OTLP exporter: {0}"
    )]
    Exporter(String),
    /// A global subscriber was already installed in this process.
    #[error("logging is already initialised in this process")]
    AlreadyInitialised,
}

/// Keeps trace export alive; dropping it flushes buffered spans (bounded by a few seconds).
#[must_use = "dropping the guard at once stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The batch processor runs on the Tokio runtime and its shutdown blocks until that task
        // answers, so it is driven from a helper thread and waited for with a bound.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(provider.shutdown());
        });
        let wait = move || rx.recv_timeout(FLUSH_TIMEOUT);
        let outcome = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            // A current-thread runtime would have to run the batch task while we block: don't.
            Ok(_) => return,
            Err(_) => wait(),
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("trace export: final flush failed: {e}"),
            Err(_) => eprintln!("trace export: final flush timed out after {FLUSH_TIMEOUT:?}"),
        }
    }
}

/// Whether logs should be JSON: as configured, or, for `auto`, when the log stream (stderr) is
/// not a terminal (journald, Kubernetes, a file).
pub fn use_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), JSON or pretty lines on
/// stderr (stdout is kept for `--output json` documents), and OTLP/HTTP trace export when an
/// endpoint is configured. Call inside a Tokio runtime when OTLP may be on.
pub fn init_tracing(
    settings: &TelemetrySettings,
    service: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let provider = match &settings.otlp_endpoint {
        Some(base) => Some(tracer_provider(base, service)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));

    let json = use_json(settings.log_format).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let pretty = (!use_json(settings.log_format)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(pretty)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP/HTTP");
    }
    Ok(TelemetryGuard { provider })
}

/// The OTLP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, otherwise the base endpoint
/// with `/v1/traces` appended (the OTLP/HTTP convention for `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn traces_url(base: &str) -> String {
    match std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Ok(signal) if !signal.trim().is_empty() => signal,
        _ => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

fn tracer_provider(base: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(crate::http::client(EXPORT_TIMEOUT))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(base))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}
