//! The OpenAPI description served at `/actuator/openapi.json` against the live gateway, with
//! schemathesis (from PyPI): every documented operation is fuzzed, and every answer must match the
//! documented status codes, content types and schemas, so description and server cannot drift.
//!
//! Three runs, because the schema cannot express every rule:
//! - the actuator: all checks;
//! - the client API but `/v1/commands`: all checks but `positive_data_acceptance` (business rules
//!   such as "from and to differ" or "enough funds" reject some schema-valid requests, by design);
//! - `/v1/commands`: also without `negative_data_rejection`, because a batch answers 200 with one
//!   result a line and reports a bad line in that line (`{"code": 400, ...}`), not as a 4xx.

use std::path::Path;

use sluice_tests::*;

fn schemathesis(schema: &str, base: &str, filter: &[&str]) {
    let hooks_dir = workspace_root().join("tests").join("schemathesis");
    let env: Env = [("SCHEMATHESIS_HOOKS".to_string(), "sluice_hooks".to_string())]
        .into_iter()
        .collect();
    let mut args = vec![
        "run",
        schema,
        "--url",
        base,
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
    ];
    args.extend(filter);
    let output = run_program_in(Path::new("schemathesis"), &env, &hooks_dir, &args);
    assert!(
        output.status.success(),
        "schemathesis {args:?} found the description and the server apart (install it with \
         `python3 -m pip install schemathesis`):\n{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_matches_the_running_gateway() {
    let spec = ClusterSpec::new(1, 2).with_filesystem_store();
    let mut cluster = spec.start().await;
    let ep = spec.endpoints();
    let schema = format!("{}/actuator/openapi.json", ep.mgmt);
    let (status, document) = get(&schema).await;
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["openapi"], "3.1.0", "{document}");

    let (mgmt, api, schema_url) = (ep.mgmt.clone(), ep.api.clone(), schema.clone());
    tokio::task::spawn_blocking(move || {
        schemathesis(&schema_url, &mgmt, &["--include-path-regex", "^/actuator"]);
        schemathesis(
            &schema_url,
            &api,
            &[
                "--include-path-regex",
                "^/v1/(accounts|transfers|ledger)",
                "--exclude-checks",
                "positive_data_acceptance",
            ],
        );
        schemathesis(
            &schema_url,
            &api,
            &[
                "--include-path",
                "/v1/commands",
                "--exclude-checks",
                "positive_data_acceptance,negative_data_rejection",
            ],
        );
    })
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    // The fuzzing must not have broken the cluster.
    let (status, ledger) = get(&format!("{}/v1/ledger", ep.api)).await;
    assert_eq!(status, 200, "{ledger}\n{}", cluster.logs());
    cluster.stop();
}
