//! What every Sluice process's Prometheus endpoint shares: a registry of its own with the process
//! metrics (CPU seconds, resident memory, open file descriptors, …: the `prometheus` crate's
//! process collector, read from `/proc` on Linux), the text encoding, and a request latency
//! histogram as an axum middleware.
//!
//! Each process (a broker, the gateway) owns one [`Registry`] and serves it on its own port:
//! Prometheus scrapes every process itself. The standalone binary runs a broker and a gateway in
//! one process; each keeps its own registry and endpoint, so no endpoint shows a metric twice.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec, TextEncoder};

pub use prometheus::Registry;

/// The content type of the text exposition format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds (seconds) of the request latency buckets: from a cached read (sub-millisecond)
/// to a batch under one fsync on a slow disk, and the gateway's 15 s request timeout.
pub const REQUEST_DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// The route label of a request that matched no route (kept to one value, so that scanners
/// cannot grow the number of series).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A registry with the process metrics (`process_*`) already in it.
pub fn process_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is the first collector of a new registry");
    registry
}

/// `registry` in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    // Encoding fails only on a metric family that cannot be encoded, which the registry refuses
    // when it is registered; should it happen, the scrape says so in a comment line.
    TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|error| format!("# cannot encode the metrics: {error}\n"))
}

/// The HTTP answer of a scrape of `registry`.
pub fn scrape_response(registry: &Registry) -> Response {
    ([(CONTENT_TYPE, TEXT_CONTENT_TYPE)], encode(registry)).into_response()
}

/// Duration of the HTTP requests one server answered, by method, route template (never the raw
/// path: ids in paths would make a series per id) and status code.
#[derive(Clone)]
pub struct RequestMetrics {
    duration: HistogramVec,
}

impl RequestMetrics {
    /// A histogram `name` (e.g. `sluice_gateway_request_duration_seconds`) registered in
    /// `registry`. Registering the same name twice in one registry is a programming error.
    pub fn register(registry: &Registry, name: &str, help: &str) -> RequestMetrics {
        let duration = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(REQUEST_DURATION_BUCKETS_SECONDS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("a valid histogram definition");
        registry
            .register(Box::new(duration.clone()))
            .expect("each request histogram is registered once per registry");
        RequestMetrics { duration }
    }

    /// `router` with every request it answers timed, authentication and error rewriting
    /// included. The route template is the one axum matched: known directly when `router` has the
    /// routes, or through [`remember_matched_path`] inside a router that wraps another (as
    /// `rejection::json_error_bodies` does); a request no route matched counts as
    /// [`UNMATCHED_ROUTE`].
    pub fn layer(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self.clone()),
            time_request,
        ))
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.duration
            .with_label_values(&[method, route, &status.to_string()])
            .observe(seconds);
    }
}

/// Where an inner router leaves the route it matched for [`time_request`] outside it.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Middleware for the routes of a router that another wraps (as a fallback service, where the
/// outer router matched nothing): hands the matched route template to the timing outside.
pub async fn remember_matched_path(request: Request, next: Next) -> Response {
    let extensions = request.extensions();
    if let (Some(slot), Some(path)) = (
        extensions.get::<RouteSlot>(),
        extensions.get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_string());
    }
    next.run(request).await
}

async fn time_request(
    State(metrics): State<Arc<RequestMetrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let route = matched
        .or_else(|| slot.0.get().cloned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Why [`promtool_check`] or [`parse_text`] refused an exposition (or could not check it).
#[derive(Debug, thiserror::Error)]
pub enum ExpositionError {
    #[error("cannot run promtool ({source}): install it (apt-get install prometheus) or run scripts/test.sh")]
    PromtoolMissing { source: std::io::Error },
    #[error("write to promtool: {source}")]
    PromtoolWrite { source: std::io::Error },
    #[error("wait for promtool: {source}")]
    PromtoolWait { source: std::io::Error },
    #[error("promtool check metrics: {status}: {output}")]
    PromtoolRefused {
        status: std::process::ExitStatus,
        /// What promtool printed, stdout then stderr.
        output: String,
    },
    #[error("line {line_number}: {line:?}")]
    Malformed { line_number: usize, line: String },
    #[error("line {line_number}: {line:?}: unknown type {kind}")]
    UnknownType {
        line_number: usize,
        line: String,
        kind: String,
    },
    #[error("line {line_number}: {line:?}: {name} is typed twice")]
    TypedTwice {
        line_number: usize,
        line: String,
        name: String,
    },
    #[error("line {line_number}: {line:?}: {source}")]
    Value {
        line_number: usize,
        line: String,
        source: std::num::ParseFloatError,
    },
    #[error("line {line_number}: {line:?}: not a sample")]
    NotASample { line_number: usize, line: String },
    #[error("line {line_number}: {line:?}: {family} has no # TYPE before it")]
    Untyped {
        line_number: usize,
        line: String,
        family: String,
    },
}

/// Runs `promtool check metrics` (Prometheus' own parser and linter, from the Debian package
/// `prometheus`; `scripts/test.sh` installs it) on `text`: `Err` with what promtool said, also
/// when promtool is missing, so that a test using it fails rather than skips.
pub fn promtool_check(text: &str) -> Result<(), ExpositionError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExpositionError::PromtoolMissing { source })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(text.as_bytes())
        .map_err(|source| ExpositionError::PromtoolWrite { source })?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|source| ExpositionError::PromtoolWait { source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ExpositionError::PromtoolRefused {
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// Checks an exposition with the parser of the Prometheus text format 0.0.4, as far as the
/// tests of every crate need it without promtool: every line is a comment or a sample
/// `name{labels} value`, every sample's metric was given a `# TYPE` before it, once. Returns the
/// samples as `(series, value)`.
pub fn parse_text(text: &str) -> Result<Vec<(String, f64)>, ExpositionError> {
    let mut typed: std::collections::BTreeMap<String, String> = Default::default();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        let malformed = || ExpositionError::Malformed {
            line_number,
            line: line.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(malformed)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(ExpositionError::UnknownType {
                    line_number,
                    line: line.to_string(),
                    kind: kind.to_string(),
                });
            }
            if typed.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(ExpositionError::TypedTwice {
                    line_number,
                    line: line.to_string(),
                    name: name.to_string(),
                });
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(malformed)?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().map_err(|source| ExpositionError::Value {
                line_number,
                line: line.to_string(),
                source,
            })?,
        };
        let name = series.split('{').next().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name || (series.contains('{') && !series.ends_with('}')) {
            return Err(ExpositionError::NotASample {
                line_number,
                line: line.to_string(),
            });
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        if !typed.contains_key(family) {
            return Err(ExpositionError::Untyped {
                line_number,
                line: line.to_string(),
                family: family.to_string(),
            });
        }
        samples.push((series.to_string(), value));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn a_process_registry_shows_cpu_memory_and_open_files() {
        let text = encode(&process_registry());
        let samples = parse_text(&text).expect("parses");
        let names: Vec<&str> = samples.iter().map(|(s, _)| s.as_str()).collect();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.contains(&name), "{name} in\n{text}");
        }
        let open_fds = samples
            .iter()
            .find(|(s, _)| s == "process_open_fds")
            .unwrap();
        assert!(open_fds.1 >= 1.0, "{text}");
        promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[tokio::test]
    async fn requests_are_timed_by_route_template_not_by_path() {
        let registry = process_registry();
        let metrics = RequestMetrics::register(&registry, "test_request_duration_seconds", "t");
        let router = Router::new().route("/items/{id}", axum::routing::get(|| async { "ok" }));
        // Wrapped as every Sluice router is, so the timing outside sees no matched path itself.
        let router = metrics.layer(crate::rejection::json_error_bodies(
            router,
            None,
            crate::rejection::broker_error_body,
        ));
        for uri in ["/items/1", "/items/2", "/nothing/here"] {
            let request = Request::builder().uri(uri).body(axum::body::Body::empty());
            router.clone().oneshot(request.unwrap()).await.unwrap();
        }
        let text = encode(&registry);
        let samples = parse_text(&text).expect("parses");
        let count = |series: &str| {
            samples
                .iter()
                .find(|(s, _)| s == series)
                .map_or_else(|| panic!("{series} in\n{text}"), |(_, v)| *v)
        };
        assert_eq!(
            count(
                r#"test_request_duration_seconds_count{method="GET",route="/items/{id}",status="200"}"#
            ),
            2.0
        );
        assert_eq!(
            count(
                r#"test_request_duration_seconds_count{method="GET",route="unmatched",status="404"}"#
            ),
            1.0
        );
    }

    /// promtool refuses what is broken or breaks a convention, so its check can fail.
    #[test]
    fn promtool_refuses_a_broken_exposition_and_a_counter_without_total() {
        promtool_check("# HELP a_total h\n# TYPE a_total counter\na_total 1\n").expect("valid");
        for broken in [
            "# TYPE a counter\na 1 x\n",
            "# HELP a h\n# TYPE a counter\na 1\n",
        ] {
            assert!(promtool_check(broken).is_err(), "{broken:?}");
        }
    }

    /// Cases for the parse check itself: it must refuse what Prometheus refuses.
    #[test]
    fn the_parse_check_refuses_broken_expositions() {
        let cases: [(&str, bool); 6] = [
            ("# TYPE a counter\na 1\n", true),
            ("a 1\n", false),
            ("# TYPE a counter\n# TYPE a counter\na 1\n", false),
            ("# TYPE a counter\na{x=\"1\" 1\n", false),
            ("# TYPE a counter\na one\n", false),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n",
                true,
            ),
        ];
        for (text, ok) in cases {
            assert_eq!(parse_text(text).is_ok(), ok, "{text:?}");
        }
    }

    /// A refusal names the line, quotes it and says what is wrong with it.
    #[test]
    fn the_parse_check_says_which_line_is_wrong() {
        let cases = [
            ("a 1\n", "line 1: \"a 1\": a has no # TYPE before it"),
            (
                "# TYPE a counter\n# TYPE a counter\n",
                "line 2: \"# TYPE a counter\": a is typed twice",
            ),
            (
                "# TYPE a gauge2\n",
                "line 1: \"# TYPE a gauge2\": unknown type gauge2",
            ),
            ("# TYPE a counter\na\n", "line 2: \"a\""),
            ("# TYPE a counter\n1a 1\n", "line 2: \"1a 1\": not a sample"),
        ];
        for (text, expected) in cases {
            let error = parse_text(text).unwrap_err();
            assert_eq!(error.to_string(), expected, "{text:?}");
        }
    }
}
