//! `GET /actuator/prometheus`: the gateway's own metrics, in the Prometheus text format (0.0.4):
//! the process metrics, `sluice_gateway_brokers_up` (brokers that answered this scrape) and the
//! latency of the client API's and the actuator's requests.
//!
//! The brokers' metrics are not here: every broker serves its own on its management port
//! (`broker.network.managementPort`, `GET /metrics`), and Prometheus scrapes each process itself.
//! The gateway used to merge them into this page; that copy went because a broker scraped both
//! directly and through the gateway is counted twice by every `sum()`, and because a proxy
//! hides a broker's failed scrape (`up == 0`) behind the gateway's successful one.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use futures::future::join_all;
use prometheus::IntGauge;
use sluice_protocol::metrics::{process_registry, scrape_response, Registry, RequestMetrics};

use crate::cluster::Cluster;
use crate::schedule::ScheduleHandle;

/// How long a scrape waits for one broker (below Prometheus' default scrape timeout of 10 s).
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry of the gateway's `/actuator/prometheus` and what fills it.
pub struct GatewayMetrics {
    registry: Registry,
    brokers_up: IntGauge,
    /// Registered at the first scrape with continuous backups on.
    restore_point_age: std::sync::OnceLock<prometheus::Gauge>,
    requests: RequestMetrics,
}

impl GatewayMetrics {
    pub fn new() -> Arc<GatewayMetrics> {
        let registry = process_registry();
        let brokers_up = IntGauge::new(
            "sluice_gateway_brokers_up",
            "Brokers whose internal API answered the gateway during this scrape.",
        )
        .expect("a valid gauge definition");
        registry
            .register(Box::new(brokers_up.clone()))
            .expect("registered once");
        let requests = RequestMetrics::register(
            &registry,
            "sluice_gateway_request_duration_seconds",
            "Duration of the gateway's client API and actuator requests, by method, route and status.",
        );
        Arc::new(GatewayMetrics {
            registry,
            brokers_up,
            restore_point_age: std::sync::OnceLock::new(),
            requests,
        })
    }

    /// The request latency histogram both of the gateway's ports count into.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Asks every broker whether it answers (concurrently, [`BROKER_TIMEOUT`] each), then
    /// answers the exposition.
    pub async fn scrape(&self, cluster: &Cluster, schedule: &ScheduleHandle) -> Response {
        self.brokers_up.set(brokers_answering(cluster).await as i64);
        if let Some((age, _)) = schedule.restore_point_age(std::time::SystemTime::now()) {
            self.restore_point_age
                .get_or_init(|| {
                    let gauge = prometheus::Gauge::new(
                        "sluice_gateway_restore_point_age_seconds",
                        "Age of the newest restore point of continuous backups (a marker COMPLETED on every partition), or the time since markers started while none is; the lag of continuous backups.",
                    )
                    .expect("a valid gauge definition");
                    self.registry
                        .register(Box::new(gauge.clone()))
                        .expect("registered once");
                    gauge
                })
                .set(age.as_secs_f64());
        }
        scrape_response(&self.registry)
    }
}

/// How many brokers answer their topology within [`BROKER_TIMEOUT`]; one that does not is
/// logged and left out, it never fails the scrape.
async fn brokers_answering(cluster: &Cluster) -> usize {
    let answers = join_all(cluster.brokers().iter().map(|broker| async move {
        match tokio::time::timeout(BROKER_TIMEOUT, broker.topology()).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::debug!(broker = broker.address(), %error, "broker did not answer the scrape");
                false
            }
            Err(_) => {
                tracing::debug!(
                    broker = broker.address(),
                    "broker did not answer the scrape within {BROKER_TIMEOUT:?}"
                );
                false
            }
        }
    }))
    .await;
    answers.into_iter().filter(|up| *up).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::metrics::{parse_text, promtool_check};
    use sluice_protocol::transport::ClusterTransport;

    async fn text_of(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// A broker that does not answer is counted out, not an error; the page is the gateway's
    /// own: process metrics, no broker series.
    #[tokio::test]
    async fn an_unreachable_broker_is_not_up_and_the_page_is_the_gateways_own() {
        // A port nobody listens on: bind one, note it, close it.
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let transport = ClusterTransport::new(None, None, "gateway.cluster.ca").unwrap();
        let cluster = Cluster::new(&[address], Duration::from_secs(1), transport);
        let metrics = GatewayMetrics::new();
        let response = metrics
            .scrape(&cluster, &crate::schedule::ScheduleHandle::default())
            .await;
        assert_eq!(
            response.headers()["content-type"],
            sluice_protocol::metrics::TEXT_CONTENT_TYPE
        );
        let text = text_of(response).await;
        let samples = parse_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |name: &str| {
            samples
                .iter()
                .find(|(s, _)| s == name)
                .map_or_else(|| panic!("no {name} in\n{text}"), |(_, v)| *v)
        };
        assert_eq!(value("sluice_gateway_brokers_up"), 0.0);
        assert!(value("process_resident_memory_bytes") > 0.0, "{text}");
        value("process_open_fds");
        value("process_cpu_seconds_total");
        assert!(
            !text.contains("sluice_backup"),
            "broker metrics are the brokers' own:\n{text}"
        );
    }
}
