#!/usr/bin/env python3
"""Writes gateway/openapi.json, the OpenAPI description of the gateway's client and actuator
APIs. Edit this file, run it, and commit both; tests/tests/openapi.rs runs schemathesis against
the live gateway so the description and the server cannot drift."""
import json
import os

ACCOUNT = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$", "minLength": 1, "maxLength": 128}
UUID = {"type": "string", "format": "uuid"}
AMOUNT = {"type": "integer", "minimum": 1, "maximum": 18446744073709551615}
U64 = {"type": "integer", "minimum": 0}
BACKUP_ID = {"type": "integer", "minimum": 1, "maximum": 9223372036854775807}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description):
    return json_body(ref("Error"), description)


SERVER_ERRORS = {
    "502": error("a broker is unreachable or its backup store failed; the message names which"),
    "503": error("a partition is unavailable (starting or shutting down)"),
    "504": error("a broker did not answer in time"),
}
UNAUTHORIZED = {"401": error("the port requires a bearer token and none or a wrong one was sent")}


def op(summary, responses, tag, **extra):
    out = {"summary": summary, "tags": [tag], "responses": {**responses, **UNAUTHORIZED}}
    out.update(extra)
    return out


schemas = {
    "Error": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string", "description": "what was wrong and what to do"}},
    },
    "Amount": {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": AMOUNT},
    },
    "Balance": {
        "type": "object",
        "required": ["account", "balance"],
        "properties": {"account": ACCOUNT, "balance": U64},
    },
    "TransferRequest": {
        "type": "object",
        "required": ["from", "to", "amount"],
        "properties": {
            "from": ACCOUNT,
            "to": ACCOUNT,
            "amount": AMOUNT,
            "transferId": {**UUID, "description": "makes the transfer idempotent; generated when absent"},
        },
    },
    "TransferAccepted": {
        "type": "object",
        "required": ["transferId", "status"],
        "properties": {
            "transferId": UUID,
            "status": {"type": "string", "enum": ["COMPLETED", "PENDING", "FAILED"]},
            "failureReason": {
                "type": "string",
                "nullable": True,
                "description": "why the target refused the credit (the sender was refunded); only with FAILED",
            },
        },
    },
    "TransferStatus": {
        "type": "object",
        "required": ["transferId", "from", "to", "amount", "status"],
        "properties": {
            "transferId": UUID,
            "from": ACCOUNT,
            "to": ACCOUNT,
            "amount": AMOUNT,
            "status": {"type": "string", "enum": ["COMPLETED", "PENDING", "FAILED"]},
            "failureReason": {
                "type": "string",
                "description": "why the target refused the credit (the sender was refunded); only with FAILED",
            },
        },
    },
    "Ledger": {
        "type": "object",
        "required": ["total", "partitions"],
        "properties": {
            "total": {**U64, "description": "sum of balances plus money in flight: constant but for deposits and withdrawals"},
            "partitions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["partitionId", "accounts", "balanceTotal", "inFlight"],
                    "properties": {
                        "partitionId": {"type": "integer", "minimum": 1},
                        "accounts": U64,
                        "balanceTotal": U64,
                        "inFlight": U64,
                    },
                },
            },
        },
    },
    "Command": {
        "oneOf": [
            {"type": "object", "required": ["type", "account", "amount"], "additionalProperties": False,
             "properties": {"type": {"type": "string", "enum": ["deposit", "withdraw"]}, "account": ACCOUNT, "amount": AMOUNT}},
            {"type": "object", "required": ["type", "from", "to", "amount"], "additionalProperties": False,
             "properties": {"type": {"type": "string", "enum": ["transfer"]}, "from": ACCOUNT, "to": ACCOUNT,
                            "amount": AMOUNT, "transferId": UUID}},
        ],
    },
    "BackupState": {"type": "string", "enum": ["COMPLETED", "IN_PROGRESS", "FAILED", "DOES_NOT_EXIST"]},
    "PartitionBackup": {
        "type": "object",
        "required": ["partitionId", "status"],
        "properties": {
            "partitionId": {"type": "integer", "minimum": 1},
            "status": ref("BackupState"),
            "description": {
                "nullable": True,
                "type": "object",
                "required": ["checkpointPosition", "brokerId", "brokerVersion"],
                "properties": {
                    "snapshotId": {"type": "string", "nullable": True},
                    "checkpointPosition": U64,
                    "brokerId": {"type": "integer", "minimum": 0},
                    "brokerVersion": {"type": "string"},
                },
            },
            "failureReason": {"type": "string", "nullable": True},
            "createdAt": {"type": "string", "format": "date-time", "nullable": True},
            "lastUpdatedAt": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "Backup": {
        "type": "object",
        "required": ["backupId", "status", "partitions"],
        "properties": {
            "backupId": BACKUP_ID,
            "status": ref("BackupState"),
            "failureReason": {"type": "string", "nullable": True},
            "partitions": {"type": "array", "items": ref("PartitionBackup")},
        },
    },
    "BackupTaken": {"type": "object", "required": ["id"], "properties": {"id": BACKUP_ID}},
    "Schedule": {
        "type": "object",
        "required": ["enabled", "retention"],
        "properties": {
            "enabled": {"type": "boolean"},
            "schedule": {"type": "string", "nullable": True, "description": "e.g. `every 1h` or `cron 0 */6 * * *`"},
            "retention": {
                "type": "object",
                "properties": {
                    "keepLast": {"type": "integer", "minimum": 1, "nullable": True},
                    "keepWithin": {"type": "string", "nullable": True},
                },
            },
            "nextRunAt": {"type": "string", "format": "date-time", "nullable": True},
            "lastRun": {
                "nullable": True,
                "type": "object",
                "required": ["backupId", "at", "result", "deleted"],
                "properties": {
                    "backupId": BACKUP_ID,
                    "at": {"type": "string", "format": "date-time"},
                    "result": {"type": "string", "enum": ["TRIGGERED", "FAILED"]},
                    "message": {"type": "string", "nullable": True},
                    "deleted": {"type": "array", "items": BACKUP_ID},
                    "retentionError": {"type": "string", "nullable": True},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "brokers"],
        "properties": {
            "status": {"type": "string", "enum": ["UP", "DOWN"]},
            "reason": {"type": "string"},
            "brokers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["address", "status"],
                    "properties": {
                        "address": {"type": "string"},
                        "status": {"type": "string", "enum": ["UP", "DOWN"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
}

account_param = {"name": "account", "in": "path", "required": True, "schema": ACCOUNT}
backup_param = {"name": "backupId", "in": "path", "required": True, "schema": BACKUP_ID}
bad = {"400": error("invalid input: the message names the field and the rule")}

paths = {
    "/v1/accounts/{account}": {
        "get": op("Balance of an account", {
            "200": json_body(ref("Balance"), "the balance"),
            "404": error("the account was never seen"),
            **bad, **SERVER_ERRORS}, "client", parameters=[account_param]),
    },
    "/v1/accounts/{account}/deposit": {
        "post": op("Deposit into an account", {
            "200": json_body(ref("Balance"), "the new balance"),
            "422": error("the balance would overflow a 64-bit integer"),
            **bad, **SERVER_ERRORS}, "client", parameters=[account_param],
            requestBody={"required": True, "content": {"application/json": {"schema": ref("Amount")}}}),
    },
    "/v1/accounts/{account}/withdraw": {
        "post": op("Withdraw from an account", {
            "200": json_body(ref("Balance"), "the new balance"),
            "404": error("the account was never seen"),
            "409": error("insufficient funds"),
            **bad, **SERVER_ERRORS}, "client", parameters=[account_param],
            requestBody={"required": True, "content": {"application/json": {"schema": ref("Amount")}}}),
    },
    "/v1/transfers": {
        "post": op("Transfer between two accounts (also across partitions)", {
            "200": json_body(ref("TransferAccepted"), "COMPLETED, PENDING when the credit is not applied within the request's time budget, or FAILED when the target refused the credit and the sender was refunded"),
            "404": error("the source account was never seen"),
            "409": error("insufficient funds, or the transferId was used for another transfer"),
            "422": error("the target balance would overflow a 64-bit integer"),
            **bad, **SERVER_ERRORS}, "client",
            requestBody={"required": True, "content": {"application/json": {"schema": ref("TransferRequest")}}}),
    },
    "/v1/transfers/{transferId}": {
        "get": op("Final state of a transfer", {
            "200": json_body(ref("TransferStatus"), "the transfer"),
            "404": error("no partition knows the transfer"),
            **bad, **SERVER_ERRORS}, "client",
            parameters=[{"name": "transferId", "in": "path", "required": True, "schema": UUID}]),
    },
    "/v1/ledger": {
        "get": op("Totals per partition", {"200": json_body(ref("Ledger"), "the ledger"), **SERVER_ERRORS}, "client"),
    },
    "/v1/commands": {
        "post": op("A batch: one JSON command a line in, one JSON result a line out, in order", {
            "200": {"description": "one result a line: a balance or transfer object, or `{\"code\": <HTTP status>, \"message\": ...}`",
                    "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            **bad, **SERVER_ERRORS}, "client",
            requestBody={"required": False, "description": "one JSON command a line (an empty body is an empty batch)",
                         "content": {"application/x-ndjson": {"schema": {
                "type": "array", "maxItems": 10000, "items": ref("Command")}}}}),
    },
    "/actuator/backups": {
        "get": op("Every backup, newest id first", {
            "200": json_body({"type": "array", "items": ref("Backup")}, "the backups"),
            **bad, **SERVER_ERRORS}, "actuator",
            parameters=[{"name": "prefix", "in": "query", "required": False,
                         "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                         "description": "only backups whose id starts with these digits"}]),
    },
    "/actuator/backups/schedule": {
        "get": op("The backup schedule: next run, last result", {"200": json_body(ref("Schedule"), "the schedule")}, "actuator"),
    },
    "/actuator/backups/{backupId}": {
        "post": op("Take a backup: returns once every partition holds the checkpoint", {
            "200": json_body(ref("BackupTaken"), "every partition created the checkpoint; the upload goes on in the background"),
            "409": error("the id is not greater than the latest checkpoint (the message names it)"),
            **bad, **SERVER_ERRORS}, "actuator", parameters=[backup_param]),
        "get": op("Status of a backup, aggregated over partitions", {
            "200": json_body(ref("Backup"), "the backup (status DOES_NOT_EXIST when unknown)"),
            **bad, **SERVER_ERRORS}, "actuator", parameters=[backup_param]),
        "delete": op("Delete a backup from the store", {
            "204": {"description": "deleted"},
            "404": error("no such backup"),
            "409": error("the backup is IN_PROGRESS"),
            **bad, **SERVER_ERRORS}, "actuator", parameters=[backup_param]),
    },
    "/actuator/health": {
        "get": op("UP when every broker and partition answers", {
            "200": json_body(ref("Health"), "UP"),
            "503": json_body(ref("Health"), "DOWN: the brokers' answers say which"),
        }, "actuator"),
    },
    "/actuator/prometheus": {
        "get": op("Metrics in the Prometheus text format", {
            "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
        }, "actuator"),
    },
    "/actuator/openapi.json": {
        "get": op("This document", {"200": json_body({"type": "object"}, "the OpenAPI description")}, "actuator"),
    },
}

document = {
    "openapi": "3.0.3",
    "info": {
        "title": "Sluice gateway",
        "version": "0.1.0",
        "description": "Client API (gateway.network.port, default 8080: /v1/...) and actuator API "
                       "(gateway.management.port, default 9600: /actuator/...). Errors are "
                       "`{\"message\": \"...\"}`. When gateway.network.token or "
                       "gateway.management.token is set, the port needs `Authorization: Bearer <token>`.",
    },
    "servers": [{"url": "http://127.0.0.1:8080", "description": "client API"},
                {"url": "http://127.0.0.1:9600", "description": "actuator API"}],
    "tags": [{"name": "client"}, {"name": "actuator"}],
    "components": {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{}, {"bearer": []}],
    "paths": paths,
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gateway", "openapi.json")
with open(out, "w") as f:
    json.dump(document, f, indent=2)
    f.write("\n")
