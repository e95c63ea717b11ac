//! Client of the broker's internal API, used by the gateway and by brokers (outbox deliveries).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::transport::ClusterTransport;
use crate::wire::{
    AccountBalance, BrokerBackup, BrokerMetrics, CheckpointCreated, CheckpointQuery,
    DeliverRequest, DeliverResponse, ErrorBody, ExecuteRequest, ExecuteResponse, PartitionSummary,
    Topology, TransferStatus, API_PREFIX,
};
use sluice_ledger::record::{CheckpointRequest, Command, Delivery, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("broker unreachable: address={address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("broker timed out: address={address} timeout_ms={timeout_ms}")]
    Timeout { address: String, timeout_ms: u64 },
    #[error("broker refused: address={address} status={status}: {}", body.message)]
    Remote {
        address: String,
        status: u16,
        body: ErrorBody,
    },
    #[error("broker answered something unreadable: address={address}: {reason}")]
    Decode { address: String, reason: String },
}

#[derive(Clone, Debug)]
pub struct BrokerClient {
    transport: ClusterTransport,
    address: String,
    timeout: Duration,
}

impl BrokerClient {
    /// `address` is `host:port`; `transport` brings the scheme, the trusted CA and the cluster
    /// token.
    pub fn new(transport: ClusterTransport, address: String, timeout: Duration) -> BrokerClient {
        BrokerClient {
            transport,
            address,
            timeout,
        }
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.transport.request(reqwest::Method::GET, url)
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.transport.request(reqwest::Method::POST, url)
    }

    fn delete(&self, url: String) -> reqwest::RequestBuilder {
        self.transport.request(reqwest::Method::DELETE, url)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{API_PREFIX}{path}",
            self.transport.base_url(&self.address)
        )
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(&error))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode {
                address: self.address.clone(),
                reason: error.to_string(),
            })
        } else {
            let body =
                serde_json::from_slice::<ErrorBody>(&bytes).map_err(|_| ClientError::Decode {
                    address: self.address.clone(),
                    reason: format!(
                        "status {status} with body {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                })?;
            Err(ClientError::Remote {
                address: self.address.clone(),
                status: status.as_u16(),
                body,
            })
        }
    }

    pub async fn topology(&self) -> Result<Topology, ClientError> {
        self.send(self.get(self.url("/topology"))).await
    }

    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.send(self.get(self.url("/health"))).await
    }

    /// Backup and restore metrics of the broker.
    pub async fn metrics(&self) -> Result<BrokerMetrics, ClientError> {
        self.send(self.get(self.url("/metrics"))).await
    }

    pub async fn execute(
        &self,
        partition_id: u32,
        commands: Vec<Command>,
    ) -> Result<Vec<Outcome>, ClientError> {
        let request = ExecuteRequest { commands };
        let response: ExecuteResponse = self
            .send(
                self.post(self.url(&format!("/partitions/{partition_id}/commands")))
                    .json(&request),
            )
            .await?;
        Ok(response.outcomes)
    }

    pub async fn balance(
        &self,
        partition_id: u32,
        account: &str,
    ) -> Result<AccountBalance, ClientError> {
        self.send(self.get(self.url(&format!("/partitions/{partition_id}/accounts/{account}"))))
            .await
    }

    pub async fn summary(&self, partition_id: u32) -> Result<PartitionSummary, ClientError> {
        self.send(self.get(self.url(&format!("/partitions/{partition_id}/summary"))))
            .await
    }

    pub async fn checkpoint(
        &self,
        partition_id: u32,
        checkpoint_id: u64,
        request: Option<CheckpointRequest>,
    ) -> Result<CheckpointCreated, ClientError> {
        self.send(
            self.post(self.url(&format!(
                "/partitions/{partition_id}/checkpoints/{checkpoint_id}"
            )))
            .query(&request.map(CheckpointQuery::from).unwrap_or_default()),
        )
        .await
    }

    pub async fn deliver(
        &self,
        partition_id: u32,
        deliveries: Vec<Delivery>,
    ) -> Result<DeliverResponse, ClientError> {
        self.send(
            self.post(self.url(&format!("/partitions/{partition_id}/deliveries")))
                .json(&DeliverRequest { deliveries }),
        )
        .await
    }

    pub async fn transfer(
        &self,
        partition_id: u32,
        transfer_id: &str,
    ) -> Result<TransferStatus, ClientError> {
        self.send(self.get(self.url(&format!(
            "/partitions/{partition_id}/transfers/{transfer_id}"
        ))))
        .await
    }

    pub async fn backup_status(&self, backup_id: u64) -> Result<BrokerBackup, ClientError> {
        self.send(self.get(self.url(&format!("/backups/{backup_id}"))))
            .await
    }

    /// Backups whose id starts with `id_prefix` (all when `None`).
    pub async fn list_backups(
        &self,
        id_prefix: Option<&str>,
    ) -> Result<Vec<BrokerBackup>, ClientError> {
        let mut request = self.get(self.url("/backups"));
        if let Some(prefix) = id_prefix {
            request = request.query(&[("prefix", prefix)]);
        }
        self.send(request).await
    }

    pub async fn delete_backup(&self, backup_id: u64) -> Result<serde_json::Value, ClientError> {
        self.send(self.delete(self.url(&format!("/backups/{backup_id}"))))
            .await
    }
}

impl BrokerClient {
    /// A request that did not get an answer: timed out, or the broker could not be reached.
    fn transport_error(&self, error: &reqwest::Error) -> ClientError {
        if error.is_timeout() {
            ClientError::Timeout {
                address: self.address.clone(),
                timeout_ms: self.timeout.as_millis() as u64,
            }
        } else {
            ClientError::Unreachable {
                address: self.address.clone(),
                reason: error_chain(error),
            }
        }
    }
}

/// The error with its causes, which reqwest hides behind "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
