//! Placement rules shared by the broker, the gateway and the restore tool.
//!
//! Both rules are part of the on-disk contract: a backup taken under one rule can only be restored
//! under the same rule. Never change them silently; a change needs a new format version.

/// FNV-1a 64-bit over the UTF-8 bytes of the account id (offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3). Chosen because it is tiny, has no dependency, and is specified bit for bit.
pub fn stable_hash(key: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.as_bytes().iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The partition (1-based) that owns `account`: `stable_hash(account) % partitions_count + 1`.
pub fn partition_for_account(account: &str, partitions_count: u32) -> u32 {
    assert!(partitions_count > 0, "partitions_count must be positive");
    (stable_hash(account) % u64::from(partitions_count)) as u32 + 1
}

/// The node that hosts `partition_id`: partitions are placed round-robin, partition 1 on node 0.
pub fn node_for_partition(partition_id: u32, cluster_size: u32) -> u32 {
    assert!(partition_id > 0 && cluster_size > 0);
    (partition_id - 1) % cluster_size
}

/// Every partition hosted by `node_id`, ascending.
pub fn partitions_for_node(node_id: u32, cluster_size: u32, partitions_count: u32) -> Vec<u32> {
    (1..=partitions_count)
        .filter(|partition| node_for_partition(*partition, cluster_size) == node_id)
        .collect()
}

/// Account ids: 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_account(account: &str) -> Result<(), InvalidAccount> {
    if account.is_empty() || account.len() > 128 {
        return Err(InvalidAccount::Length {
            chars: account.chars().count(),
        });
    }
    if let Some(bad) = account
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(InvalidAccount::Character {
            account: account.to_string(),
            character: bad,
        });
    }
    Ok(())
}

/// Why [`validate_account`] refused an account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAccount {
    #[error("account id must be 1 to 128 characters long, got {chars} characters")]
    Length { chars: usize },
    #[error("account id {account:?} contains {character:?}; allowed are A-Z, a-z, 0-9, '_', '.' and '-'")]
    Character { account: String, character: char },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_documented_fnv1a_64() {
        // Reference values of FNV-1a 64: these pin the on-disk contract.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn placement_is_round_robin() {
        assert_eq!(partitions_for_node(0, 2, 3), vec![1, 3]);
        assert_eq!(partitions_for_node(1, 2, 3), vec![2]);
        assert_eq!(partitions_for_node(0, 1, 3), vec![1, 2, 3]);
        for account in ["a", "b", "alice", "bob-1"] {
            let partition = partition_for_account(account, 3);
            assert!((1..=3).contains(&partition));
        }
    }

    #[test]
    fn account_ids_are_validated() {
        assert!(validate_account("alice_1.x-y").is_ok());
        assert!(validate_account(&"a".repeat(128)).is_ok());
        assert!(validate_account("").is_err());
        assert!(validate_account(&"a".repeat(129)).is_err());
        assert!(validate_account("a b").is_err());
        assert!(validate_account("a/b").is_err());
    }

    #[test]
    fn account_refusals_say_what_is_wrong() {
        let cases = [
            (
                "",
                "account id must be 1 to 128 characters long, got 0 characters",
            ),
            (
                "a b",
                "account id \"a b\" contains ' '; allowed are A-Z, a-z, 0-9, '_', '.' and '-'",
            ),
        ];
        for (account, expected) in cases {
            let error = validate_account(account).unwrap_err();
            assert_eq!(error.to_string(), expected, "{account:?}");
        }
    }
}
