//! Clusters: the settings of N brokers and a gateway ([`ClusterSpec`]) and the running processes
//! ([`Cluster`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;

use crate::certs::https_client;
use crate::http::http_client;
use crate::paths::free_port;
use crate::process::{run_restore_in, Proc, READY_TIMEOUT};
use crate::Env;

/// One broker of a [`ClusterSpec`].
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub node_id: u32,
    pub port: u16,
    /// `broker.network.managementPort`: where the broker serves `GET /metrics`.
    pub management_port: u16,
    pub data_dir: PathBuf,
}

impl BrokerSpec {
    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/internal/v1/health", self.port)
    }
}

/// The addresses of a gateway.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `http://127.0.0.1:<client port>`
    pub api: String,
    /// `http://127.0.0.1:<management port>`
    pub mgmt: String,
}

/// The settings of N brokers and a gateway, with their ports and directories.
pub struct ClusterSpec {
    root: TempDir,
    pub partitions_count: u32,
    pub brokers: Vec<BrokerSpec>,
    pub gateway_port: u16,
    pub management_port: u16,
    /// Settings given to every broker (and to the restore tool).
    pub broker_common: Env,
    /// Settings given to the gateway on top of its addresses.
    pub gateway_common: Env,
    /// The CA of the brokers' internal certificates, when they serve HTTPS.
    pub internal_ca: Option<PathBuf>,
}

impl ClusterSpec {
    /// `cluster_size` brokers (node ids 0..N) with `partitions_count` partitions, a 1 s snapshot
    /// period and 64KB log segments, no backup store (add one with [`ClusterSpec::with`]).
    pub fn new(cluster_size: u32, partitions_count: u32) -> ClusterSpec {
        let root = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("create a temporary directory");
        let brokers = (0..cluster_size)
            .map(|node_id| BrokerSpec {
                node_id,
                port: free_port(),
                management_port: free_port(),
                data_dir: root.path().join(format!("node-{node_id}")).join("data"),
            })
            .collect();
        let mut broker_common = Env::new();
        broker_common.insert("SLUICE_BROKER_DATA_SNAPSHOTPERIOD".into(), "1s".into());
        broker_common.insert("SLUICE_BROKER_DATA_LOGSEGMENTSIZE".into(), "64KB".into());
        ClusterSpec {
            root,
            partitions_count,
            brokers,
            gateway_port: free_port(),
            management_port: free_port(),
            broker_common,
            gateway_common: Env::new(),
            internal_ca: None,
        }
    }

    /// Every broker serves its internal API over HTTPS with the certificate in `certs` (made by
    /// [`make_certificates`]), and brokers and the gateway trust its CA.
    pub fn with_internal_tls(mut self, certs: &Path) -> ClusterSpec {
        let path = |name: &str| certs.join(name).to_str().expect("UTF-8 path").to_string();
        self.internal_ca = Some(certs.join("ca.pem"));
        self.with("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", &path("server.pem"))
            .with("SLUICE_BROKER_NETWORK_TLS_KEY", &path("server.key"))
            .with("SLUICE_BROKER_CLUSTER_CA", &path("ca.pem"))
            .with_gateway("SLUICE_GATEWAY_CLUSTER_CA", &path("ca.pem"))
    }

    /// The base URL of broker `node_id`'s internal API (`http` or `https`).
    pub fn broker_url(&self, node_id: u32) -> String {
        let scheme = if self.internal_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://127.0.0.1:{}",
            self.brokers[node_id as usize].port
        )
    }

    /// Broker `node_id`'s own Prometheus endpoint, on its management port (`https` when the
    /// brokers serve TLS, like their internal API).
    pub fn broker_metrics_url(&self, node_id: u32) -> String {
        let internal = self.broker_url(node_id);
        let scheme = internal.split(':').next().expect("a scheme");
        format!(
            "{scheme}://127.0.0.1:{}/metrics",
            self.brokers[node_id as usize].management_port
        )
    }

    /// A client for the brokers' internal API (trusting their CA when they serve HTTPS).
    pub fn broker_client(&self) -> reqwest::Client {
        match &self.internal_ca {
            Some(ca) => https_client(ca),
            None => http_client(),
        }
    }

    /// Adds (or replaces) a setting of every broker.
    pub fn with(mut self, key: &str, value: &str) -> ClusterSpec {
        self.broker_common
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds (or replaces) a setting of the gateway.
    pub fn with_gateway(mut self, key: &str, value: &str) -> ClusterSpec {
        self.gateway_common
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds settings of every broker.
    pub fn with_env(mut self, env: &Env) -> ClusterSpec {
        self.broker_common.extend(env.clone());
        self
    }

    /// A filesystem backup store under this cluster's directory.
    pub fn with_filesystem_store(self) -> ClusterSpec {
        let path = self.backup_path();
        self.with("SLUICE_BROKER_DATA_BACKUP_STORE", "FILESYSTEM")
            .with(
                "SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH",
                path.to_str().expect("UTF-8 path"),
            )
    }

    /// Where [`ClusterSpec::with_filesystem_store`] writes backups.
    pub fn backup_path(&self) -> PathBuf {
        self.root.path().join("backups")
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn broker_addresses(&self) -> String {
        self.brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The whole configuration of broker `node_id`.
    pub fn broker_env(&self, node_id: u32) -> Env {
        let broker = &self.brokers[node_id as usize];
        let mut env = self.broker_common.clone();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("SLUICE_BROKER_CLUSTER_NODEID", node_id.to_string());
        set(
            "SLUICE_BROKER_CLUSTER_CLUSTERSIZE",
            self.brokers.len().to_string(),
        );
        set(
            "SLUICE_BROKER_CLUSTER_PARTITIONSCOUNT",
            self.partitions_count.to_string(),
        );
        set("SLUICE_BROKER_CLUSTER_BROKERS", self.broker_addresses());
        set("SLUICE_BROKER_NETWORK_HOST", "127.0.0.1".into());
        set("SLUICE_BROKER_NETWORK_PORT", broker.port.to_string());
        set(
            "SLUICE_BROKER_NETWORK_MANAGEMENTPORT",
            broker.management_port.to_string(),
        );
        set(
            "SLUICE_BROKER_DATA_DIRECTORY",
            broker.data_dir.to_str().expect("UTF-8 path").to_string(),
        );
        env
    }

    /// The whole configuration of the gateway.
    pub fn gateway_env(&self) -> Env {
        let mut env = Env::new();
        env.insert(
            "SLUICE_GATEWAY_CLUSTER_BROKERS".into(),
            self.broker_addresses(),
        );
        env.insert("SLUICE_GATEWAY_NETWORK_HOST".into(), "127.0.0.1".into());
        env.insert(
            "SLUICE_GATEWAY_NETWORK_PORT".into(),
            self.gateway_port.to_string(),
        );
        env.insert("SLUICE_GATEWAY_MANAGEMENT_HOST".into(), "127.0.0.1".into());
        env.insert(
            "SLUICE_GATEWAY_MANAGEMENT_PORT".into(),
            self.management_port.to_string(),
        );
        env.extend(self.gateway_common.clone());
        env
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            api: format!("http://127.0.0.1:{}", self.gateway_port),
            mgmt: format!("http://127.0.0.1:{}", self.management_port),
        }
    }

    fn node_dir(&self, node_id: u32) -> PathBuf {
        self.root.path().join(format!("node-{node_id}"))
    }

    /// Starts broker `node_id` and waits until it is healthy.
    pub async fn start_broker(&self, node_id: u32) -> Proc {
        let mut proc = self.spawn_broker(node_id);
        self.wait_broker(&mut proc, node_id, READY_TIMEOUT).await;
        proc
    }

    /// Starts broker `node_id` without waiting for it.
    fn spawn_broker(&self, node_id: u32) -> Proc {
        let dir = self.node_dir(node_id);
        fs::create_dir_all(&dir).expect("create the node directory");
        Proc::spawn(
            &format!("broker {node_id}"),
            "sluice-broker",
            self.broker_env(node_id),
            &dir,
            &dir.join("broker.log"),
        )
    }

    /// Waits up to `timeout` until broker `node_id` answers its health check.
    async fn wait_broker(&self, proc: &mut Proc, node_id: u32, timeout: Duration) {
        let health = format!("{}/internal/v1/health", self.broker_url(node_id));
        proc.wait_ready_within(&self.broker_client(), &health, timeout)
            .await;
    }

    /// Starts the gateway and waits until its health is UP.
    pub async fn start_gateway(&self) -> Proc {
        let dir = self.root.path().join("gateway");
        fs::create_dir_all(&dir).expect("create the gateway directory");
        let mut proc = Proc::spawn(
            "gateway",
            "sluice-gateway",
            self.gateway_env(),
            &dir,
            &dir.join("gateway.log"),
        );
        proc.wait_ready(&format!("{}/actuator/health", self.endpoints().mgmt))
            .await;
        proc
    }

    /// Starts every broker, then the gateway.
    pub async fn start(&self) -> Cluster {
        self.start_within(READY_TIMEOUT).await
    }

    /// [`ClusterSpec::start`], giving each broker up to `timeout` to be healthy: the brokers start
    /// all at once, since each may first replay a long log.
    pub async fn start_within(&self, timeout: Duration) -> Cluster {
        let mut brokers: Vec<Proc> = self
            .brokers
            .iter()
            .map(|broker| self.spawn_broker(broker.node_id))
            .collect();
        for (proc, broker) in brokers.iter_mut().zip(&self.brokers) {
            self.wait_broker(proc, broker.node_id, timeout).await;
        }
        let gateway = self.start_gateway().await;
        Cluster { brokers, gateway }
    }

    /// Runs `sluice-restore` with broker `node_id`'s configuration plus `overrides`.
    pub fn restore(&self, node_id: u32, overrides: &Env, args: &[&str]) -> Output {
        let mut env = self.broker_env(node_id);
        env.extend(overrides.clone());
        let dir = self.node_dir(node_id);
        fs::create_dir_all(&dir).expect("create the node directory");
        run_restore_in(&env, &dir, args)
    }
}

/// Running brokers and gateway of a [`ClusterSpec`].
pub struct Cluster {
    pub brokers: Vec<Proc>,
    pub gateway: Proc,
}

impl Cluster {
    /// SIGTERM to the gateway, then to every broker; each must exit successfully in time.
    pub fn stop(&mut self) {
        self.gateway.stop_ok();
        for broker in &mut self.brokers {
            broker.stop_ok();
        }
    }

    /// The log tails of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for proc in self.brokers.iter().chain(std::iter::once(&self.gateway)) {
            text.push_str(&format!(
                "---- {} ({}) ----\n{}\n",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail()
            ));
        }
        text
    }
}
