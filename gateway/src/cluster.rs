//! What the gateway knows of the cluster: one client per broker and the partition → broker
//! routing, learned from the brokers' topology and cached once complete.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use sluice_config::BackupStoreKind;
use sluice_ledger::routing::partition_for_account;
use sluice_protocol::client::BrokerClient;
use sluice_protocol::transport::ClusterTransport;
use tokio::sync::RwLock;

use crate::error::GatewayError;

#[derive(Debug, Clone)]
pub struct Routing {
    pub partitions_count: u32,
    /// Partition id → index into `Cluster::brokers`.
    pub owners: BTreeMap<u32, usize>,
    pub backup_store_configured: bool,
}

impl Routing {
    pub fn partition_of(&self, account: &str) -> u32 {
        partition_for_account(account, self.partitions_count)
    }

    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.owners.keys().copied()
    }
}

pub struct Cluster {
    brokers: Vec<BrokerClient>,
    routing: RwLock<Option<Routing>>,
}

impl Cluster {
    pub fn new(
        addresses: &[String],
        request_timeout: Duration,
        transport: ClusterTransport,
    ) -> Cluster {
        Cluster {
            brokers: addresses
                .iter()
                .map(|address| {
                    BrokerClient::new(transport.clone(), address.clone(), request_timeout)
                })
                .collect(),
            routing: RwLock::new(None),
        }
    }

    pub fn brokers(&self) -> &[BrokerClient] {
        &self.brokers
    }

    /// The routing table; asks every broker for its topology the first time.
    pub async fn routing(&self) -> Result<Routing, GatewayError> {
        if let Some(routing) = self.routing.read().await.as_ref() {
            return Ok(routing.clone());
        }
        let topologies = join_all(
            self.brokers
                .iter()
                .map(sluice_protocol::client::BrokerClient::topology),
        )
        .await;
        let mut owners = BTreeMap::new();
        let mut partitions_count = None;
        let mut backup_store_configured = true;
        for (index, topology) in topologies.into_iter().enumerate() {
            let topology = topology?;
            let address = self.brokers[index].address();
            if *partitions_count.get_or_insert(topology.partitions_count)
                != topology.partitions_count
            {
                return Err(GatewayError::Internal(format!(
                    "brokers disagree on partitionsCount: broker {address} says {}; configure every broker alike",
                    topology.partitions_count
                )));
            }
            if topology.node_id as usize != index {
                return Err(GatewayError::Internal(format!(
                    "gateway.cluster.brokers lists {address} at index {index}, but that broker is node {}; list brokers in node-id order",
                    topology.node_id
                )));
            }
            backup_store_configured &= topology.backup_store != BackupStoreKind::None.as_str();
            for partition in topology.partitions {
                owners.insert(partition, index);
            }
        }
        let partitions_count = partitions_count
            .ok_or_else(|| GatewayError::Internal("gateway.cluster.brokers is empty".into()))?;
        let missing: Vec<u32> = (1..=partitions_count)
            .filter(|p| !owners.contains_key(p))
            .collect();
        if !missing.is_empty() {
            return Err(GatewayError::Unavailable(format!(
                "no broker hosts partitions {missing:?}: is gateway.cluster.brokers complete?"
            )));
        }
        let routing = Routing {
            partitions_count,
            owners,
            backup_store_configured,
        };
        *self.routing.write().await = Some(routing.clone());
        Ok(routing)
    }

    /// The client of the broker that hosts `partition_id`.
    pub fn owner(&self, routing: &Routing, partition_id: u32) -> &BrokerClient {
        &self.brokers[routing.owners[&partition_id]]
    }
}
