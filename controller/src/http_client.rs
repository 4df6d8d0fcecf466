//! The one HTTP(S) client stack of pitstop's own outbound calls (the Prometheus gate, the
//! notification webhook): hyper 1 with rustls and the system's roots, the stack kube already
//! builds, so no second one comes in.

use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client for HTTP and HTTPS URLs sending bodies of type `B`.
pub type HttpsClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// A client trusting the system's root certificates (none, if they cannot be read: then
/// HTTPS fails per call, with the reason, and HTTP still works). Its TLS uses ring
/// explicitly, so it needs no process-wide rustls provider. Reading the roots takes a
/// while: callers build it lazily, on first use.
pub fn build<B>() -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(Arc::clone(&provider))
    {
        Ok(builder) => builder,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(without_roots(provider)),
    };
    Client::builder(TokioExecutor::new()).build(builder.https_or_http().enable_http1().build())
}

/// A TLS configuration that trusts no server: HTTPS fails with an unknown-issuer error.
fn without_roots(provider: Arc<rustls::crypto::CryptoProvider>) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// The error and its causes, `: `-joined (hyper's own message alone says little).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
