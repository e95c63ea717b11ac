//! Bearer-token authentication of the client API (`gateway.network.token`) and the actuator
//! (`gateway.management.token`). The comparison takes the same time whatever the token sent, so
//! that response times do not leak how much of a guess was right (`transport::authorized`, the
//! one check shared with the brokers' cluster token).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_config::Secret;
use sluice_protocol::transport::authorized;

use crate::error::GatewayError;

/// The token one port requires, and the configuration key that sets it (named in 401 answers).
#[derive(Clone)]
pub struct RequiredToken {
    pub token: Arc<Secret>,
    pub key: &'static str,
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_token(
    State(required): State<RequiredToken>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    if authorized(header, &required.token) {
        next.run(request).await
    } else {
        GatewayError::Unauthorized { key: required.key }.into_response()
    }
}
