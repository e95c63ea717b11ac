//! Backup ids, parsed one way everywhere: the gateway's actuator, the restore tool and the CLI.
//! A backup id is a positive 64-bit signed integer (1 ..= 9223372036854775807), as in Zeebe,
//! written as plain decimal digits: no sign, no spaces, no leading `+`, nothing else.

use std::fmt;
use std::str::FromStr;

use crate::error::ProtocolError;
use sluice_ledger::record::CHECKPOINT_ID_MAX;

/// The largest backup id.
pub const BACKUP_ID_MAX: u64 = CHECKPOINT_ID_MAX;

/// A backup id that is known to follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(u64);

impl BackupId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for BackupId {
    type Err = ProtocolError;

    fn from_str(raw: &str) -> Result<BackupId, ProtocolError> {
        let invalid = |reason: &'static str| ProtocolError::InvalidBackupId {
            raw: raw.chars().take(64).collect(),
            reason,
        };
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("not a decimal number"));
        }
        let id: u64 = raw.parse().map_err(|_| invalid("too large"))?;
        match id {
            0 => Err(invalid("must be greater than 0")),
            id if id > BACKUP_ID_MAX => Err(invalid("too large")),
            id => Ok(BackupId(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_positive_decimals_up_to_i64_max_are_backup_ids() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1)),
            ("007", Some(7)),
            ("9223372036854775807", Some(BACKUP_ID_MAX)),
            ("9223372036854775808", None),
            ("18446744073709551616", None),
            ("0", None),
            ("", None),
            ("+3", None),
            ("-3", None),
            (" 3", None),
            ("3 ", None),
            ("3.0", None),
            ("0x10", None),
            ("١", None),
        ];
        for (raw, expected) in cases {
            let parsed = raw.parse::<BackupId>();
            assert_eq!(
                parsed.as_ref().ok().map(|id| id.get()),
                *expected,
                "{raw:?}"
            );
            if let Err(error) = parsed {
                let message = error.to_string();
                assert!(
                    message.contains(
                        "backupId must be a positive 64-bit integer (1 to 9223372036854775807)"
                    ),
                    "{message}"
                );
            }
        }
    }
}
