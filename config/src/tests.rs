use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load::{read_file, resolve_file};
use crate::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

fn defaults() -> SluiceConfig {
    load_from(None, env(&[])).expect("defaults load")
}

fn shipped_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("application.yaml")
}

fn err_key(result: Result<SluiceConfig, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.key().unwrap_or("<no key>").to_string(),
    }
}

#[test]
fn defaults_match_the_table() {
    let c = defaults();
    assert_eq!(c.broker.cluster.node_id, 0);
    assert_eq!(c.broker.cluster.cluster_size, 1);
    assert_eq!(c.broker.cluster.partitions_count, 3);
    assert_eq!(c.broker.cluster.replication_factor, 1);
    assert_eq!(
        c.broker.cluster.brokers,
        vec!["127.0.0.1:26501".to_string()]
    );
    assert_eq!(c.broker.network.host, "127.0.0.1");
    assert_eq!(c.broker.network.port, 26501);
    assert_eq!(c.broker.data.directory, PathBuf::from("data"));
    assert_eq!(c.broker.data.log_segment_size_bytes, 64 * 1024 * 1024);
    assert_eq!(c.broker.data.snapshot_period, Duration::from_secs(300));
    let b = &c.broker.data.backup;
    assert_eq!(b.store, BackupStoreKind::None);
    assert_eq!(b.filesystem.base_path, None);
    assert_eq!(b.s3.bucket_name, None);
    assert_eq!(b.s3.endpoint, None);
    assert_eq!(b.s3.region, "us-east-1");
    assert_eq!(b.s3.access_key, None);
    assert_eq!(b.s3.secret_key, None);
    assert_eq!(b.s3.base_path, None);
    assert!(!b.s3.force_path_style_access);
    assert_eq!(b.s3.requests.api_call_timeout, Duration::from_secs(30));
    assert_eq!(b.s3.requests.connections_concurrent_max, 32);
    assert_eq!(b.s3.requests.compression, BackupCompression::Zstd);
    assert_eq!(
        b.s3.sse,
        S3SseConfig {
            mode: S3SseMode::None,
            kms_key_id: None,
            bucket_key: None,
            customer_key: None,
        }
    );
    assert_eq!(
        b.gcs,
        GcsBackupConfig {
            bucket_name: None,
            base_path: None,
            host: None,
            credentials: None,
            requests: b.s3.requests,
        }
    );
    assert_eq!(
        b.azure,
        AzureBackupConfig {
            account: None,
            key: None,
            sas_token: None,
            container: None,
            endpoint: None,
            base_path: None,
            requests: b.s3.requests,
        }
    );
    assert_eq!(b.uploads_concurrent_max, 4);
    assert_eq!(b.upload_rate_limit_bytes_per_second, 0);
    assert!(!b.continuous);
    assert_eq!(b.continuous_lag_bytes_max, 4 << 30);
    assert_eq!(b.upload_memory_limit_bytes, 64 << 20);
    assert_eq!(
        c.gateway.cluster.brokers,
        vec!["127.0.0.1:26501".to_string()]
    );
    assert_eq!(c.gateway.cluster.request_timeout, Duration::from_secs(15));
    assert_eq!(c.gateway.network.host, "127.0.0.1");
    assert_eq!(c.gateway.network.port, 8080);
    assert_eq!(c.gateway.management.host, "127.0.0.1");
    assert_eq!(c.gateway.management.port, 9600);
    assert_eq!(c.broker.cluster.token, None);
    assert_eq!(c.broker.cluster.ca, None);
    assert!(!c.broker.insecure);
    assert_eq!(c.broker.tls, None);
    assert_eq!(c.gateway.cluster.token, None);
    assert_eq!(c.gateway.cluster.ca, None);
    c.validate_broker().expect("defaults are a valid broker");
    c.validate_gateway().expect("defaults are a valid gateway");
}

/// The keys the shipped file sets away from the built-in defaults (the try-it-out setup).
const SHIPPED_OVERRIDES: &[(&str, &str)] = &[
    ("broker.data.directory", "data/broker"),
    ("broker.data.backup.store", "FILESYSTEM"),
    ("broker.data.backup.filesystem.basePath", "data/backups"),
];

#[test]
fn shipped_application_yaml_equals_defaults_but_the_try_it_out_keys() {
    let from_file = load_from(Some(&shipped_yaml()), env(&[])).expect("shipped file loads");
    let mut expected = defaults();
    expected.broker.data.directory = "data/broker".into();
    expected.broker.data.backup.store = BackupStoreKind::Filesystem;
    expected.broker.data.backup.filesystem.base_path = Some("data/backups".into());
    assert_eq!(from_file, expected);
}

#[test]
fn shipped_application_yaml_lists_every_key_at_its_default() {
    let entries = read_file(&shipped_yaml()).expect("shipped file reads");
    for k in KEYS {
        let value = entries
            .iter()
            .find(|(key, _)| *key == k.key)
            .map(|(_, v)| v.as_str());
        let expected = SHIPPED_OVERRIDES
            .iter()
            .find(|(key, _)| *key == k.key)
            .map_or(k.default, |(_, v)| *v);
        assert_eq!(value, Some(expected), "key {} in application.yaml", k.key);
    }
    assert_eq!(entries.len(), KEYS.len());
}

#[test]
fn env_names_follow_the_rule() {
    let mut seen = std::collections::HashSet::new();
    for k in KEYS {
        assert_eq!(k.env, env_var_name(k.key), "env var of {}", k.key);
        assert!(
            k.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "key {} has a separator inside a segment",
            k.key
        );
        assert_ne!(k.env, CONFIG_FILE_ENV);
        assert!(seen.insert(k.env), "duplicate env var {}", k.env);
        assert_eq!(find_env(k.env), Some(k));
        assert_eq!(find_key(&k.key.to_uppercase()), Some(k));
        assert!(!k.description.is_empty());
    }
    assert_eq!(
        env_var_name("broker.data.backup.s3.bucketName"),
        "SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME"
    );
}

/// The key table of `text` (from its header line to the first line that is not a row) replaced
/// by `table`.
fn with_table(text: &str, table: &str) -> String {
    let start = text
        .find("| Key | Environment variable |")
        .expect("a key table");
    let end = text[start..]
        .find("\n\n")
        .map_or(text.len(), |n| start + n + 1);
    format!("{}{table}{}", &text[..start], &text[end..])
}

#[test]
fn keys_md_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("KEYS.md");
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    // `UPDATE_KEYS_MD=1 cargo test -p sluice-config keys_md` rewrites both tables.
    if std::env::var_os("UPDATE_KEYS_MD").is_some() {
        for file in [&path, &readme] {
            let text = std::fs::read_to_string(file).unwrap();
            std::fs::write(file, with_table(&text, &keys_markdown())).unwrap();
        }
    }
    let text = std::fs::read_to_string(&path).expect("KEYS.md exists");
    let readme_text = std::fs::read_to_string(&readme).expect("README.md exists");
    assert!(
        readme_text.contains(&keys_markdown()),
        "the key table of README.md is out of date: UPDATE_KEYS_MD=1 cargo test -p sluice-config keys_md"
    );
    assert!(
        text.contains(&keys_markdown()),
        "config/KEYS.md is out of date; regenerate its table from keys_markdown():\n{}",
        keys_markdown()
    );
}

#[test]
fn layers_file_overrides_defaults_and_env_overrides_file() {
    let file = yaml(
        "broker:\n  cluster:\n    nodeId: 1\n    clusterSize: 3\n  network:\n    port: 7000\n\
         gateway:\n  cluster:\n    requestTimeout: 3s\n",
    );
    // (env, expected node id, expected port, expected timeout)
    type Case<'a> = (&'a [(&'a str, &'a str)], u32, u16, Duration);
    let cases: &[Case] = &[
        (&[], 1, 7000, Duration::from_secs(3)),
        (
            &[("SLUICE_BROKER_CLUSTER_NODEID", "2")],
            2,
            7000,
            Duration::from_secs(3),
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_PORT", "7001"),
                ("SLUICE_GATEWAY_CLUSTER_REQUESTTIMEOUT", "250"),
            ],
            1,
            7001,
            Duration::from_millis(250),
        ),
        // Non-SLUICE variables are ignored, as is SLUICE_CONFIG.
        (
            &[("PATH", "/bin"), ("SLUICE_CONFIG", "/nonexistent.yaml")],
            1,
            7000,
            Duration::from_secs(3),
        ),
    ];
    for (vars, node_id, port, timeout) in cases {
        let c = load_from(Some(file.path()), env(vars)).expect("loads");
        assert_eq!(c.broker.cluster.node_id, *node_id, "{vars:?}");
        assert_eq!(c.broker.cluster.cluster_size, 3, "{vars:?}");
        assert_eq!(c.broker.network.port, *port, "{vars:?}");
        assert_eq!(c.gateway.cluster.request_timeout, *timeout, "{vars:?}");
        // untouched keys keep their defaults
        assert_eq!(c.broker.cluster.partitions_count, 3);
        assert_eq!(c.gateway.network.port, 8080);
    }
}

#[test]
fn every_key_can_be_set_from_env_and_from_file() {
    // (key, value) pairs that are valid and differ from the defaults.
    let values: &[(&str, &str)] = &[
        ("broker.cluster.nodeId", "1"),
        ("broker.cluster.clusterSize", "2"),
        ("broker.cluster.partitionsCount", "8"),
        ("broker.cluster.replicationFactor", "1"),
        ("broker.cluster.clusterName", "ledger-eu.1"),
        ("broker.cluster.brokers", "a:1,b:2"),
        ("broker.cluster.token", "cluster-token"),
        ("broker.cluster.ca", "Cargo.toml"),
        ("broker.network.host", "0.0.0.0"),
        ("broker.network.port", "1234"),
        ("broker.network.managementPort", "1235"),
        ("broker.network.insecure", "true"),
        ("broker.network.tls.certificate", "Cargo.toml"),
        ("broker.network.tls.key", "KEYS.md"),
        ("broker.data.directory", "/var/lib/sluice"),
        ("broker.data.logSegmentSize", "16MB"),
        ("broker.data.snapshotPeriod", "1h 30m"),
        ("broker.data.backup.store", "s3"),
        ("broker.data.backup.filesystem.basePath", "/backups"),
        ("broker.data.backup.s3.bucketName", "bucket"),
        ("broker.data.backup.s3.endpoint", "http://minio:9000"),
        ("broker.data.backup.s3.region", "eu-west-1"),
        ("broker.data.backup.s3.accessKey", "AKIA"),
        ("broker.data.backup.s3.secretKey", "s3cr3t"),
        ("broker.data.backup.s3.basePath", "/cluster-a/"),
        ("broker.data.backup.s3.forcePathStyleAccess", "TRUE"),
        ("broker.data.backup.s3.apiCallTimeout", "1m 30s"),
        ("broker.data.backup.s3.maxConcurrentConnections", "1024"),
        ("broker.data.backup.s3.compression", "zstd"),
        ("broker.data.backup.s3.sse", "kms"),
        (
            "broker.data.backup.s3.sseKmsKeyId",
            "arn:aws:kms:eu-west-1:1:key/k",
        ),
        ("broker.data.backup.s3.sseBucketKey", "false"),
        ("broker.data.backup.s3.sseCustomerKey", SSE_C_KEY),
        ("broker.data.backup.gcs.bucketName", "gcs-bucket"),
        ("broker.data.backup.gcs.basePath", "/gcs/base/"),
        ("broker.data.backup.gcs.host", "http://127.0.0.1:4443"),
        ("broker.data.backup.gcs.credentials", "/etc/sluice/gcs.json"),
        ("broker.data.backup.gcs.apiCallTimeout", "5s"),
        ("broker.data.backup.gcs.maxConcurrentConnections", "7"),
        ("broker.data.backup.gcs.compression", "ZSTD"),
        ("broker.data.backup.azure.account", "acct"),
        ("broker.data.backup.azure.key", "azure-key=="),
        ("broker.data.backup.azure.sasToken", "?sv=2024&sig=abc"),
        ("broker.data.backup.azure.container", "backups"),
        (
            "broker.data.backup.azure.endpoint",
            "http://127.0.0.1:10000/devstoreaccount1",
        ),
        ("broker.data.backup.azure.basePath", "azure/base"),
        ("broker.data.backup.azure.apiCallTimeout", "250ms"),
        ("broker.data.backup.azure.maxConcurrentConnections", "9"),
        ("broker.data.backup.azure.compression", "none"),
        ("broker.data.backup.maxConcurrentUploads", "8"),
        ("broker.data.backup.uploadRateLimit", "10MB/s"),
        ("broker.data.backup.uploadMemoryLimit", "128MB"),
        ("broker.data.backup.encryption.primaryKey", "k2"),
        (
            "broker.data.backup.encryption.keys",
            "k1=file:/etc/sluice/k1.key, k2=env:SLUICE_K2,k3=passphrase-file:/p,k4=passphrase-env:P",
        ),
        ("gateway.cluster.brokers", "a:1"),
        ("gateway.cluster.token", "gateway-cluster-token"),
        ("gateway.cluster.ca", "KEYS.md"),
        ("gateway.cluster.requestTimeout", "2s"),
        ("gateway.network.host", "0.0.0.0"),
        ("gateway.network.port", "8081"),
        ("gateway.management.host", "localhost"),
        ("gateway.management.port", "9601"),
        ("gateway.network.token", "client-token"),
        ("gateway.management.token", "mgmt-token"),
        ("gateway.tls.certificate", "Cargo.toml"),
        ("gateway.tls.key", "KEYS.md"),
        ("gateway.backup.schedule", "0 */6 * * *"),
        ("gateway.backup.retention.keepLast", "7"),
        ("gateway.backup.retention.keepWithin", "7d"),
        ("gateway.backup.checkpointInterval", "10s"),
        ("gateway.backup.retention.markersKeepWithin", "36h"),
        ("broker.data.backup.continuous", "true"),
        ("broker.data.backup.continuousLagLimit", "512MB"),
    ];
    assert_eq!(values.len(), KEYS.len());
    let from_env = load_from(
        None,
        values.iter().map(|(k, v)| (env_var_name(k), v.to_string())),
    )
    .expect("env loads");
    let text: String = values
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\"\n"))
        .collect();
    let file = yaml(&text);
    let from_file = load_from(Some(file.path()), env(&[])).expect("file loads");
    assert_eq!(from_env, from_file);

    let c = from_env;
    assert_eq!(c.broker.cluster.node_id, 1);
    assert_eq!(c.broker.cluster.brokers, vec!["a:1", "b:2"]);
    assert_eq!(c.broker.network.host, "0.0.0.0");
    assert_eq!(c.broker.management_port, 1235);
    assert_eq!(c.broker.data.directory, PathBuf::from("/var/lib/sluice"));
    assert_eq!(c.broker.data.log_segment_size_bytes, 16 << 20);
    assert_eq!(c.broker.data.snapshot_period, Duration::from_secs(5400));
    assert_eq!(c.broker.cluster.cluster_name, "ledger-eu.1");
    let b = &c.broker.data.backup;
    assert!(b.continuous);
    assert_eq!(b.continuous_lag_bytes_max, 512 << 20);
    assert_eq!(b.encryption.primary_key.as_deref(), Some("k2"));
    assert_eq!(
        b.encryption.keys,
        vec![
            EncryptionKeySpec {
                id: "k1".into(),
                source: KeySource::File("/etc/sluice/k1.key".into())
            },
            EncryptionKeySpec {
                id: "k2".into(),
                source: KeySource::Env("SLUICE_K2".into())
            },
            EncryptionKeySpec {
                id: "k3".into(),
                source: KeySource::PassphraseFile("/p".into())
            },
            EncryptionKeySpec {
                id: "k4".into(),
                source: KeySource::PassphraseEnv("P".into())
            },
        ]
    );
    assert_eq!(
        c.gateway.backup.checkpoint_interval,
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        c.gateway.backup.markers_keep_within,
        Duration::from_secs(36 * 3600)
    );
    assert_eq!(b.store, BackupStoreKind::S3);
    assert_eq!(b.filesystem.base_path, Some(PathBuf::from("/backups")));
    assert_eq!(b.s3.bucket_name.as_deref(), Some("bucket"));
    assert_eq!(b.s3.endpoint.as_deref(), Some("http://minio:9000"));
    assert_eq!(b.s3.region, "eu-west-1");
    assert_eq!(b.s3.access_key.as_deref(), Some("AKIA"));
    assert_eq!(b.s3.secret_key.as_ref().map(Secret::expose), Some("s3cr3t"));
    assert_eq!(b.s3.base_path.as_deref(), Some("cluster-a"));
    assert!(b.s3.force_path_style_access);
    assert_eq!(b.s3.requests.api_call_timeout, Duration::from_secs(90));
    assert_eq!(b.s3.requests.connections_concurrent_max, 1024);
    assert_eq!(b.s3.requests.compression, BackupCompression::Zstd);
    assert_eq!(b.s3.sse.mode, S3SseMode::Kms);
    assert_eq!(
        b.s3.sse.kms_key_id.as_deref(),
        Some("arn:aws:kms:eu-west-1:1:key/k")
    );
    assert_eq!(b.s3.sse.bucket_key, Some(false));
    assert_eq!(
        b.s3.sse.customer_key.as_ref().map(Secret::expose),
        Some(SSE_C_KEY)
    );
    assert_eq!(
        b.gcs,
        GcsBackupConfig {
            bucket_name: Some("gcs-bucket".into()),
            base_path: Some("gcs/base".into()),
            host: Some("http://127.0.0.1:4443".into()),
            credentials: Some("/etc/sluice/gcs.json".into()),
            requests: StoreRequestConfig {
                api_call_timeout: Duration::from_secs(5),
                connections_concurrent_max: 7,
                compression: BackupCompression::Zstd,
            },
        }
    );
    assert_eq!(
        b.azure.requests,
        StoreRequestConfig {
            api_call_timeout: Duration::from_millis(250),
            connections_concurrent_max: 9,
            compression: BackupCompression::None,
        }
    );
    assert_eq!(b.azure.account.as_deref(), Some("acct"));
    assert_eq!(
        b.azure.key.as_ref().map(Secret::expose),
        Some("azure-key==")
    );
    assert_eq!(
        b.azure.sas_token.as_ref().map(Secret::expose),
        Some("?sv=2024&sig=abc")
    );
    assert_eq!(b.azure.container.as_deref(), Some("backups"));
    assert_eq!(
        b.azure.endpoint.as_deref(),
        Some("http://127.0.0.1:10000/devstoreaccount1")
    );
    assert_eq!(b.azure.base_path.as_deref(), Some("azure/base"));
    assert_eq!(b.uploads_concurrent_max, 8);
    assert_eq!(b.upload_rate_limit_bytes_per_second, 10 << 20);
    assert_eq!(b.upload_memory_limit_bytes, 128 << 20);
    assert_eq!(c.gateway.cluster.brokers, vec!["a:1"]);
    assert_eq!(c.gateway.management.host, "localhost");
    assert_eq!(
        c.broker.cluster.token.as_ref().map(Secret::expose),
        Some("cluster-token")
    );
    assert_eq!(c.broker.cluster.ca, Some(PathBuf::from("Cargo.toml")));
    assert!(c.broker.insecure);
    assert_eq!(
        c.broker.tls,
        Some(TlsConfig {
            certificate: "Cargo.toml".into(),
            key: "KEYS.md".into()
        })
    );
    assert_eq!(
        c.gateway.cluster.token.as_ref().map(Secret::expose),
        Some("gateway-cluster-token")
    );
    assert_eq!(c.gateway.cluster.ca, Some(PathBuf::from("KEYS.md")));
    // Every key set at once sets both Azure key and sasToken, which exclude each other.
    let err = c.validate_broker().expect_err("key and sasToken");
    assert_eq!(err.key(), Some("broker.data.backup.azure.sasToken"));
    let mut c = c;
    c.broker.data.backup.azure.sas_token = None;
    // ... and an SSE-C key next to sse=KMS, which does not use it.
    let err = c.validate_broker().expect_err("sseCustomerKey with KMS");
    assert_eq!(err.key(), Some("broker.data.backup.s3.sseCustomerKey"));
    c.broker.data.backup.s3.sse.customer_key = None;
    c.validate_broker().expect("valid broker");
    c.validate_gateway().expect("valid gateway");
}

#[test]
fn yaml_keys_are_case_insensitive() {
    let texts = [
        "broker:\n  cluster:\n    nodeId: 2\n    clusterSize: 3\n",
        "BROKER:\n  CLUSTER:\n    NODEID: 2\n    CLUSTERSIZE: 3\n",
        "Broker:\n  cluster:\n    nodeid: 2\n    ClusterSize: 3\n",
        "broker.cluster.NodeId: 2\nBroker.Cluster.clustersize: 3\n",
    ];
    for text in texts {
        let file = yaml(text);
        let c = load_from(Some(file.path()), env(&[])).expect(text);
        assert_eq!(c.broker.cluster.node_id, 2, "{text}");
        assert_eq!(c.broker.cluster.cluster_size, 3, "{text}");
    }
}

#[test]
fn yaml_key_given_twice_in_different_cases_is_an_error() {
    let file = yaml("broker:\n  cluster:\n    nodeId: 1\n    NODEID: 2\n");
    let err = load_from(Some(file.path()), env(&[])).expect_err("duplicate");
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("broker.cluster.nodeId"), "{err}");
}

#[test]
fn yaml_lists_nulls_and_empty_sections() {
    let file = yaml(
        "broker:\n  cluster:\n    clusterSize: 2\n    brokers:\n      - a:1\n      - b:2\n\
         \x20 data:\n    backup:\n      s3:\n      filesystem:\n        basePath: ~\n\
         gateway:\n  cluster:\n    brokers: [\"g:1\"]\n    requestTimeout: null\n",
    );
    let c = load_from(Some(file.path()), env(&[])).expect("loads");
    assert_eq!(c.broker.cluster.brokers, vec!["a:1", "b:2"]);
    assert_eq!(c.gateway.cluster.brokers, vec!["g:1"]);
    assert_eq!(c.gateway.cluster.request_timeout, Duration::from_secs(15));
    assert_eq!(c.broker.data.backup.filesystem.base_path, None);

    let empty = yaml("# only comments\n");
    assert_eq!(
        load_from(Some(empty.path()), env(&[])).expect("loads"),
        defaults()
    );
}

#[test]
fn unknown_env_var_is_an_error() {
    let err = load_from(
        None,
        env(&[("SLUICE_BROKER_DATA_BACKUP_S3_BUCKET_NAME", "b")]),
    )
    .expect_err("unknown");
    match &err {
        ConfigError::UnknownKey { key, origin } => {
            assert_eq!(key, "SLUICE_BROKER_DATA_BACKUP_S3_BUCKET_NAME");
            assert_eq!(
                origin,
                "environment variable SLUICE_BROKER_DATA_BACKUP_S3_BUCKET_NAME"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("did you mean SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME?"),
        "{text}"
    );
    // Lower-case names do not match: the rule says upper-case.
    assert_eq!(
        err_key(load_from(
            None,
            env(&[("SLUICE_broker_cluster_nodeId", "1")])
        )),
        "SLUICE_broker_cluster_nodeId"
    );
}

#[test]
fn unknown_yaml_key_is_an_error() {
    let cases = [
        (
            "broker:\n  cluster:\n    nodeIdd: 1\n",
            "broker.cluster.nodeIdd",
        ),
        (
            "broker:\n  clustr:\n    nodeId: 1\n",
            "broker.clustr.nodeId",
        ),
        ("gateway:\n  port: 1\n", "gateway.port"),
        (
            "broker:\n  cluster:\n    nodeId:\n      value: 1\n",
            "broker.cluster.nodeId.value",
        ),
        ("broker:\n  cluster: 5\n", "broker.cluster"),
        ("unrelated: ~\n", "unrelated"),
    ];
    for (text, expected) in cases {
        let file = yaml(text);
        let err = load_from(Some(file.path()), env(&[])).expect_err(text);
        match &err {
            ConfigError::UnknownKey { key, origin } => {
                assert_eq!(key, expected, "{text}");
                assert_eq!(origin, &format!("file {}", file.path().display()));
            }
            other => panic!("unexpected {other:?} for {text}"),
        }
        assert!(err.to_string().contains(&file.path().display().to_string()));
    }
}

#[test]
fn invalid_values_name_their_key() {
    // (key, bad value, expected reason fragment)
    let cases: &[(&str, &str, &str)] = &[
        ("broker.cluster.nodeId", "abc", "not a non-negative integer"),
        ("broker.cluster.nodeId", "-1", "not a non-negative integer"),
        (
            "broker.cluster.nodeId",
            "4294967296",
            "between 0 and 4294967295",
        ),
        ("broker.cluster.clusterSize", "0", "between 1 and 64"),
        ("broker.cluster.clusterSize", "65", "between 1 and 64"),
        ("broker.cluster.partitionsCount", "0", "between 1 and 1024"),
        (
            "broker.cluster.partitionsCount",
            "1025",
            "between 1 and 1024",
        ),
        (
            "broker.cluster.replicationFactor",
            "2",
            "only replicationFactor=1 is supported for now",
        ),
        (
            "broker.cluster.replicationFactor",
            "x",
            "not a non-negative integer",
        ),
        ("broker.cluster.clusterName", "a b", "not a key id"),
        ("broker.cluster.clusterName", "", "not a key id"),
        (
            "broker.data.backup.encryption.keys",
            "k1",
            "is not <key id>=<source>",
        ),
        (
            "broker.data.backup.encryption.keys",
            "k1=file:",
            "is not a key source",
        ),
        (
            "broker.data.backup.encryption.keys",
            "k1=s3:x",
            "is not a key source",
        ),
        (
            "broker.data.backup.encryption.keys",
            "../k=env:X",
            "is not a key id",
        ),
        (
            "broker.data.backup.encryption.keys",
            "k=env:X,k=env:Y",
            "listed twice",
        ),
        ("broker.data.backup.encryption.keys", "k=env:X,,", "empty"),
        (
            "broker.data.backup.encryption.primaryKey",
            "k9",
            "names no key",
        ),
        (
            "broker.data.backup.encryption.primaryKey",
            "a/b",
            "not a key id",
        ),
        ("broker.cluster.brokers", "a:1,b", "not a host:port"),
        ("broker.cluster.brokers", "a:0", "invalid port"),
        ("broker.cluster.brokers", "a:70000", "invalid port"),
        ("broker.cluster.brokers", "a:1,,b:2", "empty"),
        ("broker.cluster.brokers", "::1:26501", "brackets"),
        ("broker.network.host", " ", "must not be empty"),
        ("broker.network.port", "0", "not a valid port"),
        ("broker.network.port", "65536", "not a valid port"),
        ("broker.network.port", "http", "not a valid port"),
        ("broker.data.directory", "", "must not be empty"),
        ("broker.data.logSegmentSize", "1KB", "between 4KB and 2GB"),
        ("broker.data.logSegmentSize", "3GB", "between 4KB and 2GB"),
        ("broker.data.logSegmentSize", "64 furlongs", "not a size"),
        ("broker.data.snapshotPeriod", "10ms", "at least 100ms"),
        ("broker.data.snapshotPeriod", "soon", "not a duration"),
        (
            "broker.data.backup.store",
            "hdfs",
            "NONE, FILESYSTEM, S3, GCS or AZURE",
        ),
        (
            "broker.data.backup.s3.endpoint",
            "minio:9000",
            "http:// or https://",
        ),
        (
            "broker.data.backup.s3.endpoint",
            "https://",
            "http:// or https://",
        ),
        ("broker.data.backup.s3.region", "", "must not be empty"),
        (
            "broker.data.backup.s3.forcePathStyleAccess",
            "yes",
            "true or false",
        ),
        (
            "broker.data.backup.s3.apiCallTimeout",
            "50ms",
            "at least 100ms",
        ),
        (
            "broker.data.backup.s3.apiCallTimeout",
            "forever",
            "not a duration",
        ),
        (
            "broker.data.backup.s3.maxConcurrentConnections",
            "0",
            "between 1 and 1024",
        ),
        (
            "broker.data.backup.s3.maxConcurrentConnections",
            "1025",
            "between 1 and 1024",
        ),
        ("broker.data.backup.s3.compression", "gzip", "NONE or ZSTD"),
        (
            "broker.data.backup.s3.sse",
            "aws:kms",
            "NONE, AES256, KMS, DSSE_KMS or CUSTOMER",
        ),
        ("broker.data.backup.s3.sseBucketKey", "yes", "true or false"),
        (
            "broker.data.backup.gcs.host",
            "localhost:4443",
            "http:// or https://",
        ),
        (
            "broker.data.backup.azure.endpoint",
            "devstoreaccount1.blob.core.windows.net",
            "http:// or https://",
        ),
        (
            "broker.data.backup.maxConcurrentUploads",
            "0",
            "between 1 and 64",
        ),
        (
            "broker.data.backup.maxConcurrentUploads",
            "65",
            "between 1 and 64",
        ),
        ("broker.data.backup.uploadRateLimit", "fast", "not a size"),
        (
            "broker.data.backup.uploadMemoryLimit",
            "4MB",
            "between 8MB and 4GB",
        ),
        ("broker.data.backup.uploadMemoryLimit", "lots", "not a size"),
        ("broker.data.backup.continuous", "yes", "true or false"),
        (
            "broker.data.backup.continuousLagLimit",
            "512KB",
            "between 1MB and 1TB",
        ),
        ("gateway.cluster.brokers", "nohost", "not a host:port"),
        ("gateway.cluster.requestTimeout", "0", "at least 100ms"),
        ("gateway.network.host", "", "must not be empty"),
        ("gateway.network.port", "0", "not a valid port"),
        ("gateway.management.host", "", "must not be empty"),
        ("gateway.management.port", "99999", "not a valid port"),
    ];
    for (key, value, reason_part) in cases {
        // From the environment ...
        let err = load_from(None, env(&[(&env_var_name(key), value)])).expect_err(key);
        // ... and from the file: same error.
        let file = yaml(&format!("{key}: \"{value}\"\n"));
        let file_err = load_from(Some(file.path()), env(&[])).expect_err(key);
        for err in [err, file_err] {
            match &err {
                ConfigError::Invalid {
                    key: k,
                    value: v,
                    reason,
                } => {
                    assert_eq!(k, key);
                    assert_eq!(v, value);
                    assert!(reason.contains(reason_part), "{key}={value:?}: {reason}");
                }
                other => panic!("unexpected {other:?} for {key}={value:?}"),
            }
            let text = err.to_string();
            assert!(text.contains(&format!("key={key} ")), "{text}");
            assert!(text.contains(&env_var_name(key)), "{text}");
        }
    }
}

#[test]
fn invalid_display_format() {
    let err = load_from(None, env(&[("SLUICE_BROKER_CLUSTER_NODEID", "abc")])).expect_err("abc");
    assert_eq!(
        err.to_string(),
        "invalid configuration: key=broker.cluster.nodeId value=\"abc\" reason=not a non-negative integer \
         (set SLUICE_BROKER_CLUSTER_NODEID or broker.cluster.nodeId in the YAML file)"
    );
}

/// A valid SSE-C key: the base64 of 32 bytes.
const SSE_C_KEY: &str = "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=";

#[test]
fn sse_customer_keys_are_checked_and_never_printed() {
    // (value, expected reason fragment); None = valid.
    let cases: &[(&str, Option<&str>)] = &[
        (SSE_C_KEY, None),
        // Blank is unset, as for every secret.
        ("  ", None),
        // 16 bytes: an AES-128 key.
        ("eHh4eHh4eHh4eHh4eHh4eA==", Some("decodes to 16 bytes")),
        // 33 bytes.
        (
            "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODkw",
            Some("decodes to 33 bytes"),
        ),
        // The 32 bytes themselves, not their base64.
        ("sluice-test-sse-c-key-0123456789", Some("is not base64")),
        // URL-safe alphabet, missing padding, a line break.
        (
            "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk_",
            Some("is not base64"),
        ),
        (
            "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk",
            Some("is not base64"),
        ),
        (
            "c2x1aWNlLXRlc3Qtc3NlLWMta2V5LTAxMjM0NTY3ODk=\n",
            Some("is not base64"),
        ),
    ];
    for (value, expected) in cases {
        let from_env = load_from(
            None,
            env(&[("SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY", value)]),
        );
        let file = yaml(&format!(
            "broker.data.backup.s3.sseCustomerKey: {}\n",
            serde_json::to_string(value).unwrap()
        ));
        let from_file = load_from(Some(file.path()), env(&[]));
        for result in [from_env, from_file] {
            match (result, expected) {
                (Ok(c), None) => {
                    let key = c.broker.data.backup.s3.sse.customer_key;
                    let expected = (!value.trim().is_empty()).then_some(*value);
                    assert_eq!(key.as_ref().map(Secret::expose), expected);
                }
                (Err(err), Some(fragment)) => {
                    assert_eq!(err.key(), Some("broker.data.backup.s3.sseCustomerKey"));
                    let display = err.to_string();
                    assert!(display.contains(fragment), "{display}");
                    assert!(display.contains("value=<redacted>"), "{display}");
                    let debug = format!("{err:?}");
                    for text in [&display, &debug] {
                        assert!(!text.contains(value.trim()), "{text}");
                    }
                }
                (result, expected) => {
                    panic!("{value:?}: got {:?}, expected {expected:?}", result.err())
                }
            }
        }
    }
    // The loaded configuration does not print a valid one either.
    let c = load_from(
        None,
        env(&[
            ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "CUSTOMER"),
            ("SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY", SSE_C_KEY),
        ]),
    )
    .expect("loads");
    c.validate_broker().expect("valid");
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains(SSE_C_KEY), "{debug}");
    assert!(is_secret("broker.data.backup.s3.sseCustomerKey"));
}

#[test]
fn secrets_are_redacted() {
    let secret = "hunter2-very-secret";
    let access = "AKIA-ACCESS-ID";
    let azure_key = "azure-account-key-value";
    let sas = "sv=2024-01-01&sig=very-secret-signature";
    // Errors about secret keys never show the value, neither in Display nor in Debug.
    let errors = [
        ConfigError::invalid("broker.data.backup.s3.secretKey", secret, "some reason"),
        ConfigError::invalid("broker.data.backup.s3.accessKey", access, "some reason"),
        load_from(
            None,
            env(&[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY", secret),
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "S3"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME", "b"),
            ]),
        )
        .expect("loads")
        .validate_broker()
        .expect_err("accessKey missing"),
        load_from(
            None,
            env(&[("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY", access)]),
        )
        .expect("loads")
        .validate_broker()
        .expect_err("secretKey missing"),
        ConfigError::invalid("broker.data.backup.azure.key", azure_key, "some reason"),
        ConfigError::invalid("broker.data.backup.azure.sasToken", sas, "some reason"),
        load_from(
            None,
            env(&[
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY", azure_key),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_SASTOKEN", sas),
            ]),
        )
        .expect("loads")
        .validate_broker()
        .expect_err("key and sasToken"),
    ];
    for err in &errors {
        let display = err.to_string();
        let debug = format!("{err:?}");
        assert!(display.contains("value=<redacted>"), "{display}");
        for text in [&display, &debug] {
            for value in [secret, access, azure_key, sas] {
                assert!(!text.contains(value), "{text}");
            }
        }
    }

    // The loaded configuration never prints them either.
    let c = load_from(
        None,
        env(&[
            ("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY", secret),
            ("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY", access),
            ("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY", azure_key),
            ("SLUICE_BROKER_DATA_BACKUP_AZURE_SASTOKEN", sas),
        ]),
    )
    .expect("loads");
    let debug = format!("{c:?} {c:#?}");
    for value in [secret, access, azure_key, sas] {
        assert!(!debug.contains(value), "{debug}");
    }
    assert!(debug.contains("<redacted>"));
    let s = Secret::new(secret);
    assert_eq!(format!("{s}"), "<redacted>");
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(s.expose(), secret);
}

#[test]
fn validate_broker_rules() {
    // (env, expected key of the error, reason fragment); None = valid.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        (&[], None),
        (
            &[
                ("SLUICE_BROKER_CLUSTER_NODEID", "3"),
                ("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "3"),
                ("SLUICE_BROKER_CLUSTER_BROKERS", "a:1,b:1,c:1"),
            ],
            Some((
                "broker.cluster.nodeId",
                "nodeId=3 must be less than clusterSize=3",
            )),
        ),
        (
            &[("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "3")],
            Some((
                "broker.cluster.brokers",
                "brokers must list clusterSize=3 addresses in node-id order, got 0",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "2"),
                ("SLUICE_BROKER_CLUSTER_BROKERS", "a:1,b:1,c:1"),
            ],
            Some((
                "broker.cluster.brokers",
                "brokers must list clusterSize=2 addresses in node-id order, got 3",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_CLUSTER_NODEID", "2"),
                ("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "3"),
                ("SLUICE_BROKER_CLUSTER_BROKERS", "a:1, b:1, c:1"),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_STORE", "filesystem")],
            Some((
                "broker.data.backup.filesystem.basePath",
                "required when broker.data.backup.store=FILESYSTEM",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "FileSystem"),
                ("SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH", "/b"),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_STORE", "S3")],
            Some((
                "broker.data.backup.s3.bucketName",
                "required when broker.data.backup.store=S3",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "S3"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME", "b"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "S3"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME", "b"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY", "a"),
            ],
            Some(("broker.data.backup.s3.secretKey", "set together")),
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY", "s")],
            Some(("broker.data.backup.s3.accessKey", "set together")),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "S3"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME", "b"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY", "a"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY", "s"),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_STORE", "gcs")],
            Some((
                "broker.data.backup.gcs.bucketName",
                "required when broker.data.backup.store=GCS",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "GCS"),
                ("SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME", "b"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "Azure"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER", "c"),
            ],
            Some((
                "broker.data.backup.azure.account",
                "required when broker.data.backup.store=AZURE",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "AZURE"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT", "a"),
            ],
            Some((
                "broker.data.backup.azure.container",
                "required when broker.data.backup.store=AZURE",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "AZURE"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT", "a"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER", "c"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "AZURE"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT", "a"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER", "c"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY", "k"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "AZURE"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT", "a"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER", "c"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_SASTOKEN", "sv=1&sig=2"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY", "k"),
                ("SLUICE_BROKER_DATA_BACKUP_AZURE_SASTOKEN", "sv=1&sig=2"),
            ],
            Some(("broker.data.backup.azure.sasToken", "mutually exclusive")),
        ),
        (&[("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "aes256")], None),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "KMS")],
            Some((
                "broker.data.backup.s3.sseKmsKeyId",
                "is required when broker.data.backup.s3.sse=KMS",
            )),
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "dsse_kms")],
            Some((
                "broker.data.backup.s3.sseKmsKeyId",
                "is required when broker.data.backup.s3.sse=DSSE_KMS",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "KMS"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID", "alias/sluice"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEBUCKETKEY", "true"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "DSSE_KMS"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID", "alias/sluice"),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID", "alias/sluice")],
            Some((
                "broker.data.backup.s3.sseKmsKeyId",
                "is only used with broker.data.backup.s3.sse=KMS or DSSE_KMS, not sse=NONE",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "AES256"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEBUCKETKEY", "true"),
            ],
            Some((
                "broker.data.backup.s3.sseBucketKey",
                "is only used with broker.data.backup.s3.sse=KMS, not sse=AES256",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "DSSE_KMS"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID", "alias/sluice"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEBUCKETKEY", "false"),
            ],
            Some((
                "broker.data.backup.s3.sseBucketKey",
                "not sse=DSSE_KMS (S3 has Bucket Keys for SSE-KMS only)",
            )),
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "customer")],
            Some((
                "broker.data.backup.s3.sseCustomerKey",
                "is required when broker.data.backup.s3.sse=CUSTOMER",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "CUSTOMER"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY", SSE_C_KEY),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY", SSE_C_KEY)],
            Some((
                "broker.data.backup.s3.sseCustomerKey",
                "is only used with broker.data.backup.s3.sse=CUSTOMER, not sse=NONE",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSE", "CUSTOMER"),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSECUSTOMERKEY", SSE_C_KEY),
                ("SLUICE_BROKER_DATA_BACKUP_S3_SSEKMSKEYID", "alias/sluice"),
            ],
            Some(("broker.data.backup.s3.sseKmsKeyId", "not sse=CUSTOMER")),
        ),
        (
            &[("SLUICE_BROKER_NETWORK_MANAGEMENTPORT", "26501")],
            Some((
                "broker.network.managementPort",
                "must differ from broker.network.port=26501",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_PORT", "9700"),
                ("SLUICE_BROKER_NETWORK_MANAGEMENTPORT", "9701"),
            ],
            None,
        ),
        (
            &[("SLUICE_BROKER_DATA_BACKUP_CONTINUOUS", "true")],
            Some((
                "broker.data.backup.continuous",
                "but broker.data.backup.store is NONE",
            )),
        ),
        (
            &[
                ("SLUICE_BROKER_DATA_BACKUP_CONTINUOUS", "true"),
                ("SLUICE_BROKER_DATA_BACKUP_STORE", "FILESYSTEM"),
                ("SLUICE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH", "/tmp/b"),
            ],
            None,
        ),
    ];
    for (vars, expected) in cases {
        let c = load_from(None, env(vars)).expect("loads");
        match (c.validate_broker(), expected) {
            (Ok(()), None) => {}
            (Err(ConfigError::Invalid { key, reason, .. }), Some((k, fragment))) => {
                assert_eq!(&key, k, "{vars:?}");
                assert!(reason.contains(fragment), "{vars:?}: {reason}");
            }
            (result, expected) => panic!("{vars:?}: got {result:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn validate_gateway_rules() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (&[], None),
        // No broker list anywhere (clusterSize > 1 prevents the single-broker default).
        (
            &[("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "2")],
            Some("gateway.cluster.brokers"),
        ),
        (
            &[
                ("SLUICE_BROKER_CLUSTER_CLUSTERSIZE", "2"),
                ("SLUICE_GATEWAY_CLUSTER_BROKERS", "a:1,b:2"),
            ],
            None,
        ),
        (
            &[("SLUICE_GATEWAY_MANAGEMENT_PORT", "8080")],
            Some("gateway.management.port"),
        ),
        (
            &[
                ("SLUICE_GATEWAY_MANAGEMENT_PORT", "8080"),
                ("SLUICE_GATEWAY_NETWORK_HOST", "0.0.0.0"),
            ],
            Some("gateway.management.port"),
        ),
        (
            &[
                ("SLUICE_GATEWAY_MANAGEMENT_PORT", "8080"),
                ("SLUICE_GATEWAY_MANAGEMENT_HOST", "10.0.0.1"),
            ],
            None,
        ),
    ];
    for (vars, expected) in cases {
        let c = load_from(None, env(vars)).expect("loads");
        match (c.validate_gateway(), expected) {
            (Ok(()), None) => {}
            (Err(ConfigError::Invalid { key, .. }), Some(k)) => assert_eq!(&key, k, "{vars:?}"),
            (result, expected) => panic!("{vars:?}: got {result:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn derived_broker_lists() {
    let c = load_from(
        None,
        env(&[
            ("SLUICE_BROKER_NETWORK_HOST", "0.0.0.0"),
            ("SLUICE_BROKER_NETWORK_PORT", "5000"),
        ]),
    )
    .expect("loads");
    assert_eq!(c.broker.cluster.brokers, vec!["127.0.0.1:5000"]);
    assert_eq!(c.gateway.cluster.brokers, vec!["127.0.0.1:5000"]);

    let c = load_from(None, env(&[("SLUICE_BROKER_NETWORK_HOST", "::")])).expect("loads");
    assert_eq!(c.broker.cluster.brokers, vec!["[::1]:26501"]);

    // An explicit gateway list wins over the broker list.
    let c = load_from(None, env(&[("SLUICE_GATEWAY_CLUSTER_BROKERS", "x:1")])).expect("loads");
    assert_eq!(c.broker.cluster.brokers, vec!["127.0.0.1:26501"]);
    assert_eq!(c.gateway.cluster.brokers, vec!["x:1"]);

    // Optional keys: empty means unset; basePath slashes stripped.
    let c = load_from(
        None,
        env(&[
            ("SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME", ""),
            ("SLUICE_BROKER_DATA_BACKUP_S3_BASEPATH", "///"),
            ("SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT", " "),
            ("SLUICE_BROKER_DATA_BACKUP_GCS_BASEPATH", "/"),
            ("SLUICE_BROKER_DATA_BACKUP_GCS_HOST", ""),
            ("SLUICE_BROKER_DATA_BACKUP_AZURE_BASEPATH", "//a/b//"),
            ("SLUICE_BROKER_DATA_BACKUP_AZURE_KEY", " "),
        ]),
    )
    .expect("loads");
    assert_eq!(c.broker.data.backup.s3.bucket_name, None);
    assert_eq!(c.broker.data.backup.s3.base_path, None);
    assert_eq!(c.broker.data.backup.s3.endpoint, None);
    assert_eq!(c.broker.data.backup.gcs.base_path, None);
    assert_eq!(c.broker.data.backup.gcs.host, None);
    assert_eq!(c.broker.data.backup.azure.base_path.as_deref(), Some("a/b"));
    assert_eq!(c.broker.data.backup.azure.key, None);
}

#[test]
fn sizes() {
    let ok: &[(&str, u64)] = &[
        ("0", 0),
        ("4096", 4096),
        ("12B", 12),
        ("4KB", 4096),
        ("4kb", 4096),
        ("4 KiB", 4096),
        ("64MB", 64 << 20),
        ("64mib", 64 << 20),
        (" 2 GB ", 2 << 30),
        ("1GiB", 1 << 30),
    ];
    for (s, n) in ok {
        assert_eq!(parse_size(s), Ok(*n), "{s:?}");
    }
    for s in [
        "",
        "MB",
        "1.5MB",
        "-1",
        "1 TB",
        "1 M",
        "64MBs",
        "99999999999999999999",
    ] {
        assert!(parse_size(s).is_err(), "{s:?}");
    }
    assert!(parse_size("17179869184GB").is_err(), "overflow");
    assert_eq!(parse_rate("10MB/s"), Ok(10 << 20));
    assert_eq!(parse_rate("512 KB"), Ok(512 << 10));
}

#[test]
fn durations() {
    let ok: &[(&str, Duration)] = &[
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h 30m", Duration::from_secs(5400)),
        ("250ms", Duration::from_millis(250)),
        ("1500", Duration::from_millis(1500)),
        (" 2s ", Duration::from_secs(2)),
    ];
    for (s, d) in ok {
        assert_eq!(parse_duration(s), Ok(*d), "{s:?}");
    }
    for s in ["", "soon", "5 parsecs", "-1s", "1.5.2s"] {
        assert!(parse_duration(s).is_err(), "{s:?}");
    }
}

#[test]
fn config_file_resolution() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default = dir.path().join("config/application.yaml");
    // Unset variable, no default file: no file.
    assert_eq!(resolve_file(None, &default).expect("ok"), None);
    // Variable naming a missing file: error naming the path and the variable.
    let missing = dir.path().join("nope.yaml");
    let err = resolve_file(Some(missing.clone().into_os_string()), &default).expect_err("missing");
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("SLUICE_CONFIG"), "{text}");
    assert!(resolve_file(Some("".into()), &default).is_err());
    // Default file present: used.
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(&default, "broker:\n  cluster:\n    nodeId: 0\n").expect("write");
    assert_eq!(
        resolve_file(None, &default).expect("ok"),
        Some(default.clone())
    );
    // Variable wins over the default file.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "").expect("write");
    assert_eq!(
        resolve_file(Some(other.clone().into_os_string()), &default).expect("ok"),
        Some(other)
    );
}

#[test]
fn file_errors() {
    let missing = Path::new("/nonexistent/sluice.yaml");
    let err = load_from(Some(missing), env(&[])).expect_err("missing");
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/sluice.yaml"));

    let bad = yaml("broker: [unclosed\n");
    let err = load_from(Some(bad.path()), env(&[])).expect_err("bad yaml");
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");

    let nested = yaml("broker:\n  cluster:\n    brokers:\n      - host: a\n");
    let err = load_from(Some(nested.path()), env(&[])).expect_err("nested list");
    assert_eq!(err.key(), Some("broker.cluster.brokers"));
}

/// Environment settings of one case.
type Settings = &'static [(&'static str, &'static str)];

/// The internal API's security rules, as data: (settings, the key the error names or `None`).
#[test]
fn internal_api_security_rules() {
    let cases: &[(Settings, Option<&str>)] = &[
        (&[], None),
        (&[("SLUICE_BROKER_NETWORK_HOST", "localhost")], None),
        (&[("SLUICE_BROKER_NETWORK_HOST", "127.0.0.2")], None),
        (&[("SLUICE_BROKER_NETWORK_HOST", "::1")], None),
        (
            &[("SLUICE_BROKER_NETWORK_HOST", "0.0.0.0")],
            Some("broker.cluster.token"),
        ),
        (
            &[("SLUICE_BROKER_NETWORK_HOST", "10.0.0.7")],
            Some("broker.cluster.token"),
        ),
        (
            &[("SLUICE_BROKER_NETWORK_HOST", "broker-0.internal")],
            Some("broker.cluster.token"),
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_HOST", "0.0.0.0"),
                ("SLUICE_BROKER_CLUSTER_TOKEN", "t"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_HOST", "0.0.0.0"),
                ("SLUICE_BROKER_NETWORK_INSECURE", "true"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", "Cargo.toml"),
                ("SLUICE_BROKER_NETWORK_TLS_KEY", "KEYS.md"),
            ],
            Some("broker.cluster.ca"),
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", "Cargo.toml"),
                ("SLUICE_BROKER_NETWORK_TLS_KEY", "KEYS.md"),
                ("SLUICE_BROKER_CLUSTER_CA", "Cargo.toml"),
            ],
            None,
        ),
        (
            &[
                ("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", "/nonexistent.pem"),
                ("SLUICE_BROKER_NETWORK_TLS_KEY", "KEYS.md"),
                ("SLUICE_BROKER_CLUSTER_CA", "Cargo.toml"),
            ],
            Some("broker.network.tls.certificate"),
        ),
        (
            &[("SLUICE_BROKER_CLUSTER_CA", "/nonexistent.pem")],
            Some("broker.cluster.ca"),
        ),
    ];
    for (settings, expected) in cases {
        let config = load_from(None, env(settings)).expect("loads");
        let result = config.validate_broker();
        assert_eq!(
            result.as_ref().err().and_then(|e| e.key()),
            *expected,
            "{settings:?}: {result:?}"
        );
        if let Err(error) = result {
            // The error says how to fix it and never shows a secret.
            assert!(!error.to_string().contains("=t "), "{error}");
        }
    }
    // A certificate without its key is refused while loading, naming the missing key.
    let error = load_from(
        None,
        env(&[("SLUICE_BROKER_NETWORK_TLS_CERTIFICATE", "Cargo.toml")]),
    )
    .expect_err("key missing");
    assert_eq!(error.key(), Some("broker.network.tls.key"));
    // The gateway inherits the brokers' token and CA unless given its own; the token is
    // redacted in Debug output.
    let config = load_from(
        None,
        env(&[
            ("SLUICE_BROKER_CLUSTER_TOKEN", "shared-secret"),
            ("SLUICE_BROKER_CLUSTER_CA", "Cargo.toml"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.gateway.cluster.token.as_ref().map(Secret::expose),
        Some("shared-secret")
    );
    assert_eq!(config.gateway.cluster.ca, Some(PathBuf::from("Cargo.toml")));
    assert!(!format!("{config:?}").contains("shared-secret"));
}
