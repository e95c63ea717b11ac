//! How Sluice processes talk HTTP: the bearer-token check (the brokers' cluster token and the
//! gateway's client and actuator tokens share it), the client side of the internal API (scheme,
//! trusted CA, cluster token) and serving a router over plain TCP or rustls.
//!
//! Invariant: with `broker.cluster.token` set, every internal request is answered 401 unless it
//! carries the token; the comparison takes the same time whatever was sent, so response times do
//! not tell how much of a guess was right.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use sluice_config::{Secret, TlsConfig};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::error::ProtocolError;
use crate::wire::{ErrorBody, ErrorKind};

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

/// The one internal path answered without the cluster token.
pub const HEALTH_PATH: &str = "/internal/v1/health";

/// The internal API behind the cluster token (all but [`HEALTH_PATH`]), when one is configured.
pub fn with_cluster_token(router: Router, token: Option<&Secret>) -> Router {
    match token {
        None => router,
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(token.clone()),
            require_cluster_token,
        )),
    }
}

async fn require_cluster_token(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    // Health tells only UP or DOWN, and probes (load balancers, orchestrators) have no token.
    if authorized(header, &token) || request.uri().path() == HEALTH_PATH {
        return next.run(request).await;
    }
    let body = ErrorBody {
        kind: ErrorKind::Unauthorized,
        message: "missing or wrong cluster token: every broker and the gateway must send \
                  `Authorization: Bearer <broker.cluster.token>` with the same broker.cluster.token \
                  (SLUICE_BROKER_CLUSTER_TOKEN, or gateway.cluster.token on the gateway)"
            .to_string(),
        latest: None,
    };
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// What a client of the internal API needs: an HTTP client (trusting the cluster CA when set),
/// the scheme that follows from it, and the cluster token to send. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterTransport {
    http: reqwest::Client,
    https: bool,
    token: Option<Secret>,
}

impl ClusterTransport {
    /// `ca` (a PEM file, `ca_key` names its setting in errors) switches to HTTPS and is the only
    /// trusted root: brokers' certificates come from the cluster's own CA.
    pub fn new(
        token: Option<Secret>,
        ca: Option<&Path>,
        ca_key: &'static str,
    ) -> Result<ClusterTransport, ProtocolError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca) = ca {
            let tls_error = |reason: String| ProtocolError::Tls {
                key: ca_key,
                path: ca.to_path_buf(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|error| tls_error(error.to_string()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| tls_error(format!("not a PEM certificate bundle: {error}")))?;
            if certificates.is_empty() {
                return Err(tls_error("holds no PEM certificate".to_string()));
            }
            builder = builder.tls_built_in_root_certs(false).https_only(true);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|error| ProtocolError::Tls {
            key: ca_key,
            path: ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!("cannot build the HTTP client: {error}"),
        })?;
        Ok(ClusterTransport {
            http,
            https: ca.is_some(),
            token,
        })
    }

    /// The base URL of the broker at `address` (`host:port`).
    pub fn base_url(&self, address: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{address}")
    }

    /// A request with the cluster token attached.
    pub fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }
}

/// Loads a PEM certificate chain and key for serving HTTPS; `key` names the setting in errors.
pub async fn rustls_config(
    tls: &TlsConfig,
    key: &'static str,
) -> Result<axum_server::tls_rustls::RustlsConfig, ProtocolError> {
    // One process-wide crypto provider (ring); installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.certificate, &tls.key)
        .await
        .map_err(|error| ProtocolError::Tls {
            key,
            path: tls.certificate.clone(),
            reason: format!(
                "cannot load the certificate and key {} as PEM: {error}",
                tls.key.display()
            ),
        })
}

/// Binds `address` for [`serve`].
pub fn bind(address: &str) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `cancel`, then lets
/// in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    cancel: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        cancel.cancelled().await;
        shutdown.graceful_shutdown(Some(grace));
    });
    let app = router.into_make_service();
    match tls {
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(app)
                .await
        }
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(app)
                .await
        }
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
