//! The one HTTPS client every AWS SDK client of pitstop sends through.
//!
//! The SDK's default client is rustls on aws-lc-rs; kube's is rustls on ring. pitstop turns the SDK's default off
//! (Cargo.toml) and builds its client on ring, so the binary carries one TLS crypto library, not two: a smaller
//! binary and resident set (issue 13) and no aws-lc C build. One client serves every region and service, so
//! they share one connection pool; the credential providers (web identity, IMDS, SSO) use it too.

use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// A new HTTPS (and plain HTTP, for emulators) client on rustls with ring, trusting the system's roots.
pub fn https_client() -> SharedHttpClient {
    Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
