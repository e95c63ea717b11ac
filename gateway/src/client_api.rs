//! The client API (`gateway.network.port`, default 8080): accounts, transfers, ledger, batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::future::join_all;
use serde::Serialize;
use serde_json::{json, Value};
use sluice_ledger::record::{Command, Outcome};
use sluice_ledger::routing::validate_account;
use sluice_protocol::client::ClientError;
use sluice_protocol::retry::RetryPolicy;
use sluice_protocol::wire::{ErrorKind, TransferState, TransferStatus};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cluster::Cluster;
use crate::error::{rejection_error, ErrorMessage, GatewayError};
use crate::openapi::{AccountId, Amount, Batch, BrokerErrors, TransferRequest};

/// Lines accepted in one `/v1/commands` batch, and its size in bytes.
pub const BATCH_COMMANDS_MAX: usize = 10_000;
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The client API's routes, each with its OpenAPI operation (`#[utoipa::path]`): a route is
/// added here with its description or not at all.
pub fn routes() -> OpenApiRouter<Arc<Cluster>> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(deposit))
        .routes(routes!(withdraw))
        .routes(routes!(transfer))
        .routes(routes!(transfer_status))
        .routes(routes!(ledger))
        .routes(routes!(commands))
}

pub fn router(cluster: Arc<Cluster>) -> Router {
    crate::rejection::json_error_bodies(routed(cluster), Some(BATCH_BYTES_MAX))
}

/// The router before its error bodies are rewritten (its `Debug` form still lists its paths).
pub(crate) fn routed(cluster: Arc<Cluster>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BATCH_BYTES_MAX))
        .with_state(cluster)
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
    validate_account(account).map_err(|reason| GatewayError::InvalidRequest(reason.to_string()))
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

/// An account's balance: the answer to reading it, to a deposit and to a withdrawal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    #[schema(value_type = AccountId)]
    pub account: String,
    pub balance: u64,
}

/// The answer to `POST /v1/transfers`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferAccepted {
    #[schema(format = "uuid")]
    pub transfer_id: String,
    pub status: TransferState,
    /// Why the target refused the credit (the sender was refunded); only with FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

impl TransferAccepted {
    fn new(transfer_id: String, status: TransferState) -> TransferAccepted {
        TransferAccepted {
            transfer_id,
            status,
            failure_reason: None,
        }
    }
}

/// What a client command answers: a balance (deposit, withdrawal) or a transfer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Answer {
    Balance(Balance),
    Transfer(TransferAccepted),
}

impl Answer {
    fn balance(self) -> Result<Balance, GatewayError> {
        match self {
            Answer::Balance(balance) => Ok(balance),
            other => Err(GatewayError::Internal(format!(
                "unexpected answer to a deposit or withdrawal: {other:?}"
            ))),
        }
    }
}

fn outcome_body(outcome: Outcome) -> Result<Answer, GatewayError> {
    match outcome {
        Outcome::Balance { account, balance } => Ok(Answer::Balance(Balance { account, balance })),
        Outcome::TransferCompleted { transfer_id } => Ok(Answer::Transfer(TransferAccepted::new(
            transfer_id,
            TransferState::Completed,
        ))),
        Outcome::TransferPending { transfer_id } => Ok(Answer::Transfer(TransferAccepted::new(
            transfer_id,
            TransferState::Pending,
        ))),
        // A repeated request of a transfer whose credit was refused: the first answer again.
        Outcome::TransferRefunded { transfer_id } => Ok(Answer::Transfer(TransferAccepted::new(
            transfer_id,
            TransferState::Failed,
        ))),
        Outcome::Rejected { rejection } => Err(rejection_error(&rejection)),
        other @ (Outcome::CheckpointCreated { .. }
        | Outcome::CheckpointExists { .. }
        | Outcome::Credited { .. }
        | Outcome::CreditAcked { .. }) => Err(GatewayError::Internal(format!(
            "unexpected outcome for a client command: {other:?}"
        ))),
    }
}

async fn execute_one(cluster: &Cluster, command: Command) -> Result<Answer, GatewayError> {
    let routing = cluster.routing().await?;
    let partition = routing.partition_of(routing_account(&command));
    let outcome = cluster
        .owner(&routing, partition)
        .execute(partition, vec![command])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| GatewayError::Internal("broker returned no outcome".into()))?;
    outcome_body(outcome)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account}/deposit",
    tag = "client",
    summary = "Deposit into an account",
    params(("account" = AccountId, Path)),
    request_body = Amount,
    responses(
        (status = 200, body = Balance, description = "the new balance"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 422, body = ErrorMessage, description = "the balance would overflow a 64-bit integer"),
        BrokerErrors,
    ),
)]
async fn deposit(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Json<Balance>, GatewayError> {
    account_id(&account)?;
    let amount = amount(&parse_json(&body)?)?;
    let answer = execute_one(&cluster, Command::Deposit { account, amount }).await?;
    answer.balance().map(Json)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account}/withdraw",
    tag = "client",
    summary = "Withdraw from an account",
    params(("account" = AccountId, Path)),
    request_body = Amount,
    responses(
        (status = 200, body = Balance, description = "the new balance"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 404, body = ErrorMessage, description = "the account was never seen"),
        (status = 409, body = ErrorMessage, description = "insufficient funds"),
        BrokerErrors,
    ),
)]
async fn withdraw(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Result<Json<Balance>, GatewayError> {
    account_id(&account)?;
    let amount = amount(&parse_json(&body)?)?;
    let answer = execute_one(&cluster, Command::Withdraw { account, amount }).await?;
    answer.balance().map(Json)
}

/// How long `POST /v1/transfers` waits for a cross-partition credit before answering PENDING.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(2);
/// How often the transfer is asked for within [`TRANSFER_WAIT`]: soon at first (a credit to a
/// partition of the same broker lands in milliseconds), then every 100 ms.
const TRANSFER_POLL: RetryPolicy =
    RetryPolicy::exponential(Duration::from_millis(2), Duration::from_millis(100))
        .within(TRANSFER_WAIT);

#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "client",
    summary = "Transfer between two accounts (also across partitions)",
    request_body = TransferRequest,
    responses(
        (status = 200, body = TransferAccepted, description = "COMPLETED, PENDING when the credit is not applied within the request's time budget, or FAILED when the target refused the credit and the sender was refunded"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 404, body = ErrorMessage, description = "the source account was never seen"),
        (status = 409, body = ErrorMessage, description = "insufficient funds, or the transferId was used for another transfer"),
        (status = 422, body = ErrorMessage, description = "the target balance would overflow a 64-bit integer"),
        BrokerErrors,
    ),
)]
async fn transfer(
    State(cluster): State<Arc<Cluster>>,
    body: Bytes,
) -> Result<Json<TransferAccepted>, GatewayError> {
    let command = transfer_command(&parse_json(&body)?)?;
    let answer = match execute_one(&cluster, command.clone()).await? {
        Answer::Transfer(answer) => answer,
        other => {
            return Err(GatewayError::Internal(format!(
                "unexpected answer to a transfer: {other:?}"
            )))
        }
    };
    if answer.status != TransferState::Pending {
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
                return Ok(Json(TransferAccepted::new(
                    transfer_id,
                    TransferState::Completed,
                )))
            }
            TransferState::Failed => {
                return Ok(Json(TransferAccepted {
                    failure_reason: status.failure_reason,
                    ..TransferAccepted::new(transfer_id, TransferState::Failed)
                }))
            }
        }
    }
    Ok(Json(TransferAccepted::new(
        transfer_id,
        TransferState::Pending,
    )))
}

/// Asks every partition; the source one knows the transfer.
#[utoipa::path(
    get,
    path = "/v1/transfers/{transferId}",
    tag = "client",
    summary = "Final state of a transfer",
    params(("transferId" = String, Path, format = "uuid")),
    responses(
        (status = 200, body = TransferStatus, description = "the transfer"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 404, body = ErrorMessage, description = "no partition knows the transfer"),
        BrokerErrors,
    ),
)]
async fn transfer_status(
    State(cluster): State<Arc<Cluster>>,
    Path(transfer_id): Path<String>,
) -> Result<Json<TransferStatus>, GatewayError> {
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
            Ok(status) => return Ok(Json(status)),
            Err(ClientError::Remote { body, .. }) if body.kind == ErrorKind::TransferNotFound => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(GatewayError::NotFound(format!(
        "transfer not found: transferId={transfer_id}"
    )))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account}",
    tag = "client",
    summary = "Balance of an account",
    params(("account" = AccountId, Path)),
    responses(
        (status = 200, body = Balance, description = "the balance"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        (status = 404, body = ErrorMessage, description = "the account was never seen"),
        BrokerErrors,
    ),
)]
async fn account(
    State(cluster): State<Arc<Cluster>>,
    Path(account): Path<String>,
) -> Result<Json<Balance>, GatewayError> {
    account_id(&account)?;
    let routing = cluster.routing().await?;
    let partition = routing.partition_of(&account);
    let balance = cluster
        .owner(&routing, partition)
        .balance(partition, &account)
        .await?;
    Ok(Json(Balance {
        account: balance.account,
        balance: balance.balance,
    }))
}

// `GET /v1/ledger`. Sums are 128-bit: many accounts of up to `u64::MAX` each exceed 64 bits, and
// the JSON writer prints them exactly (a `serde_json::Value` could not hold them).
#[derive(serde::Serialize, ToSchema)]
#[schema(as = Ledger)]
struct LedgerBody {
    /// Sum of balances plus money in flight: constant but for deposits and withdrawals.
    total: u128,
    partitions: Vec<LedgerPartition>,
}

#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LedgerPartition {
    #[schema(minimum = 1)]
    partition_id: u32,
    accounts: u64,
    balance_total: u128,
    in_flight: u128,
}

#[utoipa::path(
    get,
    path = "/v1/ledger",
    tag = "client",
    summary = "Totals per partition",
    responses(
        (status = 200, body = LedgerBody, description = "the ledger"),
        BrokerErrors,
    ),
)]
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

/// Lines are grouped by partition and each group goes to its broker in one request.
#[utoipa::path(
    post,
    path = "/v1/commands",
    tag = "client",
    summary = "A batch: one JSON command a line in, one JSON result a line out, in order",
    request_body(
        description = "one JSON command a line (an empty body is an empty batch)",
        content((Option<Batch> = "application/x-ndjson")),
    ),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String, description = "one result a line: a balance or transfer object, or `{\"code\": <HTTP status>, \"message\": ...}`"),
        (status = 400, body = ErrorMessage, description = "invalid input: the message names the field and the rule"),
        BrokerErrors,
    ),
)]
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
                        Ok(answer) => {
                            let mut body = serde_json::to_value(answer).expect("serializes");
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
