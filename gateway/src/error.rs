//! The gateway's errors and their HTTP mapping, in one exhaustive match.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sluice_ledger::record::Rejection;
use sluice_protocol::client::ClientError;
use sluice_protocol::wire::ErrorKind;

/// The body of every error answer of both ports.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorMessage {
    /// What was wrong and what to do.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("no backup store is configured: set broker.data.backup.store (SLUICE_BROKER_DATA_BACKUP_STORE) to FILESYSTEM, S3, GCS or AZURE on every broker")]
    BackupStoreNotConfigured,
    #[error("broker unreachable: address={address}: {reason}")]
    BrokerUnreachable { address: String, reason: String },
    #[error("broker did not answer in time: address={address} timeout_ms={timeout_ms}")]
    Timeout { address: String, timeout_ms: u64 },
    #[error("backup store error reported by broker {address}: {message}")]
    BackupStore { address: String, message: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot listen: address={address}: {source}; is another process using the port?")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("missing or wrong bearer token: send `Authorization: Bearer <token>` with the token configured in {key}")]
    Unauthorized { key: &'static str },
    #[error("invalid configuration: {0}")]
    Config(#[from] sluice_config::ConfigError),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::InvalidRequest(_) | GatewayError::BackupStoreNotConfigured => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::BrokerUnreachable { .. } | GatewayError::BackupStore { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Internal(_) | GatewayError::Bind { .. } | GatewayError::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = (
            status,
            Json(ErrorMessage {
                message: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ClientError> for GatewayError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unreachable { address, reason } => {
                GatewayError::BrokerUnreachable { address, reason }
            }
            ClientError::Timeout {
                address,
                timeout_ms,
            } => GatewayError::Timeout {
                address,
                timeout_ms,
            },
            ClientError::Decode { address, reason } => GatewayError::BrokerUnreachable {
                address,
                reason: format!("unreadable answer: {reason}"),
            },
            ClientError::Remote { address, body, .. } => match body.kind {
                ErrorKind::InvalidRequest => GatewayError::InvalidRequest(body.message),
                ErrorKind::AccountNotFound | ErrorKind::TransferNotFound => {
                    GatewayError::NotFound(body.message)
                }
                ErrorKind::BackupStoreNotConfigured => GatewayError::BackupStoreNotConfigured,
                ErrorKind::BackupInProgress
                | ErrorKind::CheckpointNotNewer
                | ErrorKind::BackupExists => GatewayError::Conflict(body.message),
                ErrorKind::BackupStore => GatewayError::BackupStore {
                    address,
                    message: body.message,
                },
                ErrorKind::UnknownPartition => GatewayError::Internal(format!(
                    "broker {address} does not host the partition it announced: {}",
                    body.message
                )),
                ErrorKind::Unavailable => GatewayError::Unavailable(body.message),
                ErrorKind::Internal => GatewayError::Internal(body.message),
                ErrorKind::Unauthorized => GatewayError::BrokerUnreachable {
                    address,
                    reason: format!(
                        "the broker refused the gateway's cluster token: set gateway.cluster.token \
                         (or broker.cluster.token) to the brokers' broker.cluster.token ({})",
                        body.message
                    ),
                },
            },
        }
    }
}

/// The HTTP form of a refused command.
pub fn rejection_error(rejection: &Rejection) -> GatewayError {
    let message = rejection.message();
    match rejection {
        Rejection::InsufficientFunds { .. }
        | Rejection::TransferIdReused { .. }
        | Rejection::CheckpointNotNewer { .. } => GatewayError::Conflict(message),
        Rejection::BalanceOverflow { .. } => GatewayError::Unprocessable(message),
        Rejection::InvalidCommand { .. } => GatewayError::InvalidRequest(message),
        Rejection::WrongPartition { .. } => GatewayError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::BackupStoreKind;

    /// The hint names every store the configuration accepts (the list comes from the config's
    /// own refusal of an unknown kind).
    #[test]
    fn the_store_hint_names_every_backup_store() {
        let message = GatewayError::BackupStoreNotConfigured.to_string();
        let refusal = "?".parse::<BackupStoreKind>().unwrap_err().to_string();
        let (_, list) = refusal.split_once('(').expect("a list of stores");
        let kinds: Vec<BackupStoreKind> = list
            .trim_end_matches(')')
            .split([',', ' '])
            .filter(|word| !word.is_empty() && *word != "or")
            .map(|word| word.parse().expect("each listed store parses"))
            .filter(|kind| *kind != BackupStoreKind::None)
            .collect();
        assert!(kinds.len() >= 4, "{kinds:?}");
        for kind in kinds {
            assert!(message.contains(kind.as_str()), "{message} lacks {kind}");
        }
    }
}
