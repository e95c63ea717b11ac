//! The client API (`gateway.network.port`, default 8080): accounts, transfers, ledger, batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::join_all;
use serde_json::{json, Value};
use sluice_ledger::record::{Command, Outcome};
use sluice_ledger::routing::validate_account;
use sluice_protocol::client::ClientError;
use sluice_protocol::retry::RetryPolicy;
use sluice_protocol::wire::{ErrorKind, TransferState};

use crate::cluster::Cluster;
use crate::error::{rejection_error, GatewayError};

/// Lines accepted in one `/v1/commands` batch, and its size in bytes.
pub const BATCH_COMMANDS_MAX: usize = 10_000;
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

pub fn router(cluster: Arc<Cluster>) -> Router {
    let router = Router::new()
        .route("/v1/accounts/{account}", get(account))
        .route("/v1/accounts/{account}/deposit", post(deposit))
        .route("/v1/accounts/{account}/withdraw", post(withdraw))
        .route("/v1/transfers", post(transfer))
        .route("/v1/transfers/{transfer_id}", get(transfer_status))
        .route("/v1/ledger", get(ledger))
        .route("/v1/commands", post(commands))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BATCH_BYTES_MAX))
        .with_state(cluster);
    crate::rejection::json_error_bodies(router, Some(BATCH_BYTES_MAX))
}

pub async fn not_found() -> GatewayError {
    GatewayError::NotFound("no such endpoint; see README.md for the API".into())
}

fn parse_json(body: &[u8]) -> Result<Value, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        GatewayError::InvalidRequest(format!("body is not valid JSON: {error}"))
    })?;
    if !value.is_object() {
        return Err(GatewayError::InvalidRequest(
            "body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

fn amount(value: &Value) -> Result<u64, GatewayError> {
    match value.get("amount") {
        None => Err(GatewayError::InvalidRequest(
            "field \"amount\" is missing".into(),
        )),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(amount) if amount > 0 => Ok(amount),
            _ => Err(GatewayError::InvalidRequest(format!(
                "amount must be a positive integer (at most {}), got {n}",
                u64::MAX
            ))),
        },
        Some(other) => Err(GatewayError::InvalidRequest(format!(
            "amount must be a positive integer, got {other}"
        ))),
    }
}

fn string_field<'a>(value: &'a Value, field: &str) -> Result<&'a str, GatewayError> {
    match value.get(field) {
        Some(Value::String(s)) => Ok(s),
        None => Err(GatewayError::InvalidRequest(format!(
            "field {field:?} is missing"
        ))),
        Some(other) => Err(GatewayError::InvalidRequest(format!(
            "field {field:?} must be a string, got {other}"
        ))),
    }
}

fn account_id(account: &str) -> Result<(), GatewayError> {
    validate_account(account).map_err(GatewayError::InvalidRequest)
}

/// Turns one JSON command (`{"type": "deposit", ...}`) into a ledger command.
fn command_from_json(value: &Value) -> Result<Command, GatewayError> {
    let kind = string_field(value, "type")?;
    match kind {
        "deposit" | "withdraw" => {
            let account = string_field(value, "account")?;
            account_id(account)?;
            let amount = amount(value)?;
            Ok(if kind == "deposit" {
                Command::Deposit {
                    account: account.into(),
                    amount,
                }
            } else {
                Command::Withdraw {
                    account: account.into(),
                    amount,
                }
            })
        }
        "transfer" => transfer_command(value),
        other => Err(GatewayError::InvalidRequest(format!(
            "unknown command type {other:?}; use deposit, withdraw or transfer"
        ))),
    }
}

fn transfer_command(value: &Value) -> Result<Command, GatewayError> {
    let from = string_field(value, "from")?;
    let to = string_field(value, "to")?;
    account_id(from)?;
    account_id(to)?;
    let amount = amount(value)?;
    let transfer_id = match value.get("transferId") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) => uuid::Uuid::parse_str(s)
            .map_err(|error| {
                GatewayError::InvalidRequest(format!(
                    "transferId must be a UUID, got {s:?}: {error}"
                ))
            })?
            .hyphenated()
            .to_string(),
        Some(other) => {
            return Err(GatewayError::InvalidRequest(format!(
                "transferId must be a UUID string, got {other}"
            )))
        }
    };
    Ok(Command::Transfer {
        transfer_id,
        from: from.into(),
        to: to.into(),
        amount,
    })
}

/// The account a command is routed by.
fn routing_account(command: &Command) -> &str {
    match command {
        Command::Deposit { account, .. } | Command::Withdraw { account, .. } => account,
        Command::Transfer { from, .. } => from,
        Command::Checkpoint { .. }
        | Command::Credit { .. }
        | Command::CreditAck { .. }
        | Command::CreditRefused { .. } => {
            unreachable!("clients send only deposits, withdrawals and transfers")
        }
    }
}

fn outcome_body(outcome: Outcome) -> Result<Value, GatewayError> {
    match outcome {
        Outcome::Balance { account, balance } => {
            Ok(json!({"account": account, "balance": balance}))
        }
        Outcome::TransferCompleted { transfer_id } => {
            Ok(json!({"transferId": transfer_id, "status": "COMPLETED"}))
        }
        Outcome::TransferPending { transfer_id } => {
            Ok(json!({"transferId": transfer_id, "status": "PENDING"}))
        }
        // A repeated request of a transfer whose credit was refused: the first answer again.
        Outcome::TransferRefunded { transfer_id } => {
            Ok(json!({"transferId": transfer_id, "status": "FAILED"}))
        }
        Outcome::Rejected { rejection } => Err(rejection_error(&rejection)),
        other @ (Outcome::CheckpointCreated { .. }
        | Outcome::CheckpointExists { .. }
        | Outcome::Credited { .. }
        | Outcome::CreditAcked { .. }) => Err(GatewayError::Internal(format!(
            "unexpected outcome for a client command: {other:?}"
        ))),
    }
}

async fn execute_one(cluster: &Cluster, command: Command) -> Result<Json<Value>, GatewayError> {
    let routing = cluster.routing().await?;
    let partition = routing.partition_of(routing_account(&command));
    let outcome = cluster
        .owner(&routing, partition)
        .execute(partition, vec![command])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| GatewayError::Internal("broker returned no outcome".into()))?;
    outcome_body(outcome).map(Json)
}

async fn deposit(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, GatewayError> {
    account_id(&account)?;
    let amount = amount(&parse_json(&body)?)?;
    execute_one(&cluster, Command::Deposit { account, amount }).await
}

async fn withdraw(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, GatewayError> {
    account_id(&account)?;
    let amount = amount(&parse_json(&body)?)?;
    execute_one(&cluster, Command::Withdraw { account, amount }).await
}

/// How long `POST /v1/transfers` waits for a cross-partition credit before answering PENDING.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(2);
/// How often the transfer is asked for within [`TRANSFER_WAIT`]: soon at first (a credit to a
/// partition of the same broker lands in milliseconds), then every 100 ms.
const TRANSFER_POLL: RetryPolicy =
    RetryPolicy::exponential(Duration::from_millis(2), Duration::from_millis(100))
        .within(TRANSFER_WAIT);

async fn transfer(
    State(cluster): State<Arc<Cluster>>,
    body: Bytes,
) -> Result<Json<Value>, GatewayError> {
    let command = transfer_command(&parse_json(&body)?)?;
    let Json(answer) = execute_one(&cluster, command.clone()).await?;
    if answer["status"] != "PENDING" {
        return Ok(Json(answer));
    }
    // Cross-partition: the credit travels on; wait a little for it, then tell the truth.
    let Command::Transfer {
        transfer_id, from, ..
    } = command
    else {
        unreachable!("a transfer command")
    };
    let routing = cluster.routing().await?;
    let source = routing.partition_of(&from);
    let broker = cluster.owner(&routing, source);
    let mut backoff = TRANSFER_POLL.start();
    while backoff.wait().await {
        let status = broker.transfer(source, &transfer_id).await?;
        match status.status {
            TransferState::Pending => {}
            TransferState::Completed => {
                return Ok(Json(
                    json!({"transferId": transfer_id, "status": "COMPLETED"}),
                ))
            }
            TransferState::Failed => {
                return Ok(Json(json!({
                    "transferId": transfer_id,
                    "status": "FAILED",
                    "failureReason": status.failure_reason,
                })))
            }
        }
    }
    Ok(Json(
        json!({"transferId": transfer_id, "status": "PENDING"}),
    ))
}

/// `GET /v1/transfers/{transferId}`: asks every partition; the source one knows the transfer.
async fn transfer_status(
    State(cluster): State<Arc<Cluster>>,
    Path(transfer_id): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    let transfer_id = uuid::Uuid::parse_str(&transfer_id)
        .map_err(|error| {
            GatewayError::InvalidRequest(format!(
                "transferId must be a UUID, got {transfer_id:?}: {error}"
            ))
        })?
        .hyphenated()
        .to_string();
    let routing = cluster.routing().await?;
    let answers = join_all(routing.partitions().map(|partition| {
        cluster
            .owner(&routing, partition)
            .transfer(partition, &transfer_id)
    }))
    .await;
    for answer in answers {
        match answer {
            Ok(status) => return Ok(Json(serde_json::to_value(status).expect("serializes"))),
            Err(ClientError::Remote { body, .. }) if body.kind == ErrorKind::TransferNotFound => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(GatewayError::NotFound(format!(
        "transfer not found: transferId={transfer_id}"
    )))
}

async fn account(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
) -> Result<Json<Value>, GatewayError> {
    account_id(&account)?;
    let routing = cluster.routing().await?;
    let partition = routing.partition_of(&account);
    let balance = cluster
        .owner(&routing, partition)
        .balance(partition, &account)
        .await?;
    Ok(Json(
        json!({"account": balance.account, "balance": balance.balance}),
    ))
}

/// `GET /v1/ledger`. Sums are 128-bit: many accounts of up to `u64::MAX` each exceed 64 bits, and
/// the JSON writer prints them exactly (a `serde_json::Value` could not hold them).
#[derive(serde::Serialize)]
struct LedgerBody {
    total: u128,
    partitions: Vec<LedgerPartition>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LedgerPartition {
    partition_id: u32,
    accounts: u64,
    balance_total: u128,
    in_flight: u128,
}

async fn ledger(State(cluster): State<Arc<Cluster>>) -> Result<Json<LedgerBody>, GatewayError> {
    let routing = cluster.routing().await?;
    let summaries = join_all(
        routing
            .partitions()
            .map(|partition| cluster.owner(&routing, partition).summary(partition)),
    )
    .await;
    // total = Σ balances + Σ in flight: money is neither created nor lost.
    let mut total: u128 = 0;
    let mut partitions = Vec::new();
    for summary in summaries {
        let summary = summary?;
        total += summary.balance_total + summary.in_flight;
        partitions.push(LedgerPartition {
            partition_id: summary.partition_id,
            accounts: summary.accounts,
            balance_total: summary.balance_total,
            in_flight: summary.in_flight,
        });
    }
    Ok(Json(LedgerBody { total, partitions }))
}

fn error_line(error: &GatewayError) -> Value {
    json!({"code": error.status().as_u16(), "message": error.to_string()})
}

/// `POST /v1/commands`: one JSON command a line in, one JSON result a line out, in order. Lines are
/// grouped by partition and each group goes to its broker in one request.
async fn commands(
    State(cluster): State<Arc<Cluster>>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let text = std::str::from_utf8(&body)
        .map_err(|error| GatewayError::InvalidRequest(format!("body is not UTF-8: {error}")))?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.len() > BATCH_COMMANDS_MAX {
        return Err(GatewayError::InvalidRequest(format!(
            "{} commands in one batch; at most {BATCH_COMMANDS_MAX}",
            lines.len()
        )));
    }
    let routing = cluster.routing().await?;
    let mut results: Vec<Option<Value>> = vec![None; lines.len()];
    let mut groups: BTreeMap<u32, (Vec<usize>, Vec<Command>)> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|error| {
                GatewayError::InvalidRequest(format!(
                    "line {} is not valid JSON: {error}",
                    index + 1
                ))
            })
            .and_then(|value| command_from_json(&value));
        match parsed {
            Ok(command) => {
                let partition = routing.partition_of(routing_account(&command));
                let group = groups.entry(partition).or_default();
                group.0.push(index);
                group.1.push(command);
            }
            Err(error) => results[index] = Some(error_line(&error)),
        }
    }
    let sent = join_all(groups.into_iter().map(|(partition, (indexes, commands))| {
        let broker = cluster.owner(&routing, partition).clone();
        async move { (indexes, broker.execute(partition, commands).await) }
    }))
    .await;
    for (indexes, outcome) in sent {
        match outcome {
            Ok(outcomes) => {
                for (index, outcome) in indexes.into_iter().zip(outcomes) {
                    results[index] = Some(match outcome_body(outcome) {
                        Ok(mut body) => {
                            body["code"] = json!(200);
                            body
                        }
                        Err(error) => error_line(&error),
                    });
                }
            }
            Err(error) => {
                let line = error_line(&GatewayError::from(error));
                for index in indexes {
                    results[index] = Some(line.clone());
                }
            }
        }
    }
    let mut out = String::with_capacity(results.len() * 48);
    for result in results {
        let value =
            result.unwrap_or_else(|| error_line(&GatewayError::Internal("no result".into())));
        out.push_str(&value.to_string());
        out.push('\n');
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}
