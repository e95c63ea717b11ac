//! HTTP helpers: the client API (commands, balances, ledger) and the actuator (backups).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

/// Status and body of an answer; a body that is not JSON becomes a JSON string.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    answer(response).await
}

/// POST with a raw body (JSON content type) or none.
pub async fn post(url: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = http_client().post(url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    answer(response).await
}

/// POST `/v1/commands` with one JSON command a line; returns the result lines. Panics unless the
/// answer is 200 with one line per command.
pub async fn commands(api: &str, lines: &[Value]) -> Vec<Value> {
    let mut body = String::with_capacity(lines.len() * 64);
    for line in lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let url = format!("{api}/v1/commands");
    let response = http_client()
        .post(&url)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST {url} answered {status}: {text}");
    let results: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("result line {l:?} is not JSON: {e}"))
        })
        .collect();
    assert_eq!(
        results.len(),
        lines.len(),
        "one result line per command: {text}"
    );
    results
}

/// [`commands`] with deposits only; panics unless every one succeeded.
pub async fn deposit_all(api: &str, deposits: &[(String, u64)]) {
    for chunk in deposits.chunks(5_000) {
        let lines: Vec<Value> = chunk
            .iter()
            .map(|(account, amount)| serde_json::json!({"type": "deposit", "account": account, "amount": amount}))
            .collect();
        let results = commands(api, &lines).await;
        for (line, result) in lines.iter().zip(&results) {
            assert_eq!(result["code"], 200, "command {line} failed: {result}");
        }
    }
}

/// `POST /v1/accounts/{account}/deposit`, asserting success; returns the new balance.
pub async fn deposit(api: &str, account: &str, amount: u64) -> u64 {
    let (status, body) = post(
        &format!("{api}/v1/accounts/{account}/deposit"),
        Some(&serde_json::json!({ "amount": amount }).to_string()),
    )
    .await;
    assert_eq!(status, 200, "deposit of {amount} to {account}: {body}");
    body["balance"]
        .as_u64()
        .unwrap_or_else(|| panic!("no balance in {body}"))
}

/// The balance of `account`; `None` when it does not exist (404). Panics on other answers.
pub async fn balance(api: &str, account: &str) -> Option<u64> {
    let (status, body) = get(&format!("{api}/v1/accounts/{account}")).await;
    match status {
        200 => Some(
            body["balance"]
                .as_u64()
                .unwrap_or_else(|| panic!("no balance in {body}")),
        ),
        404 => None,
        _ => panic!("GET account {account} answered {status}: {body}"),
    }
}

/// Balances of many accounts, a few requests at a time.
pub async fn balances(api: &str, accounts: &[String]) -> BTreeMap<String, Option<u64>> {
    use futures::StreamExt;
    futures::stream::iter(accounts.iter().cloned())
        .map(|account| async move {
            let value = balance(api, &account).await;
            (account, value)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// `GET /v1/ledger` → total.
pub async fn ledger_total(api: &str) -> u64 {
    let (status, body) = get(&format!("{api}/v1/ledger")).await;
    assert_eq!(status, 200, "GET /v1/ledger: {body}");
    body["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total in {body}"))
}

/// `POST /actuator/backups/{id}`.
pub async fn take_backup(mgmt: &str, id: &str) -> (u16, Value) {
    post(&format!("{mgmt}/actuator/backups/{id}"), None).await
}

/// `GET /actuator/backups/{id}`.
pub async fn backup_status(mgmt: &str, id: u64) -> (u16, Value) {
    get(&format!("{mgmt}/actuator/backups/{id}")).await
}

/// Polls `GET /actuator/backups/{id}` until its status is `want` and returns that JSON. Panics on
/// timeout, or when the backup ends in another final state (COMPLETED/FAILED), with the last JSON.
pub async fn poll_backup(mgmt: &str, id: u64, want: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = backup_status(mgmt, id).await;
        if status == 200 {
            let state = body["status"].as_str().unwrap_or_default().to_string();
            if state == want {
                return body;
            }
            if (state == "COMPLETED" || state == "FAILED") && state != want {
                panic!("backup {id} ended {state}, wanted {want}: {body}");
            }
        }
        let last = serde_json::json!({"httpStatus": status, "body": body});
        if started.elapsed() > timeout {
            panic!("backup {id} not {want} within {timeout:?}; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `message` of a JSON error body; panics when there is none.
pub fn message(body: &Value) -> String {
    body["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| panic!("expected a JSON body with a non-empty \"message\", got {body}"))
        .to_string()
}

/// Whether `text` contains `number` as a whole number (not as part of a longer one).
pub fn mentions_number(text: &str, number: u64) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|token| token == number.to_string())
}
