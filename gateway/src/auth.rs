//! Bearer-token authentication of the client API (`gateway.network.token`) and the actuator
//! (`gateway.management.token`). The comparison takes the same time whatever the token sent, so
//! that response times do not leak how much of a guess was right.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_config::Secret;
use subtle::ConstantTimeEq;

use crate::error::GatewayError;

/// The token one port requires, and the configuration key that sets it (named in 401 answers).
#[derive(Clone)]
pub struct RequiredToken {
    pub token: Arc<Secret>,
    pub key: &'static str,
}

/// Whether `header` (the whole `Authorization` value) carries exactly `token`.
pub fn authorized(header: Option<&[u8]>, token: &Secret) -> bool {
    // The scheme is case-insensitive (RFC 7235); the token is not.
    let Some(presented) = header
        .filter(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|h| &h[7..])
    else {
        return false;
    };
    // `ct_eq` on slices of different lengths is false without comparing contents; the length
    // of the configured token is not secret enough to matter.
    presented.ct_eq(token.expose().as_bytes()).into()
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_token(
    State(required): State<RequiredToken>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if authorized(header, &required.token) {
        next.run(request).await
    } else {
        GatewayError::Unauthorized { key: required.key }.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = Secret::new("s3cret-token");
        let cases: &[(Option<&str>, bool)] = &[
            (Some("Bearer s3cret-token"), true),
            (None, false),
            (Some(""), false),
            (Some("s3cret-token"), false),
            (Some("Basic s3cret-token"), false),
            (Some("Bearer s3cret-toke"), false),
            (Some("Bearer s3cret-token2"), false),
            (Some("Bearer S3CRET-TOKEN"), false),
            (Some("bearer s3cret-token"), true),
        ];
        for (header, expected) in cases {
            assert_eq!(
                authorized(header.map(str::as_bytes), &token),
                *expected,
                "{header:?}"
            );
        }
    }
}
