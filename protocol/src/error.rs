//! The one error type of the protocol crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("backupId must be a positive 64-bit integer (1 to 9223372036854775807), got {raw:?}: {reason}")]
    InvalidBackupId { raw: String, reason: &'static str },
    #[error("TLS setting {key}: path={}: {reason}; point {key} at a readable PEM file", path.display())]
    Tls {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}
