//! From SDK errors to [`AwsError`]: the category decides whether pitstop retries soon
//! (throttled), backs off (transient), waits for someone to fix the setup (credentials,
//! access denied, endpoint) or gives up on the instance (not found, rejected). Messages are
//! the error's chain of causes in words, never the SDK's `Debug` output.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::endpoint::error::ResolveEndpointError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::aws::{AwsError, AwsErrorKind};

/// Error codes that mean "slow down". The first four are the ones ELBv2 and SSM document; the
/// rest are spellings other AWS front ends use and the SDK's own retry classifier also treats
/// as throttling, kept so the two never disagree.
pub const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

/// Error codes that mean the target group, instance, document or command does not exist.
pub const NOT_FOUND_CODES: &[&str] = &[
    "TargetGroupNotFound",
    "InvalidTarget",
    "InvalidInstanceId",
    "InvalidDocument",
    "InvalidCommandId",
];

/// Error codes that mean IAM does not allow the action: `AccessDenied` (ELBv2, Query
/// protocol), `AccessDeniedException` (SSM, JSON protocol), `UnauthorizedOperation` (EC2).
pub const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
];

/// Error codes that mean AWS refused the credentials themselves: an unknown key, a bad
/// signature, an invalid or expired session token. The SDK's credential providers refresh
/// what they hand out before it expires, so an expired token that reaches AWS came from a
/// source that will not refresh it (fixed keys in the environment or a profile): waiting
/// does not fix it.
pub const CREDENTIALS_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "AuthFailure",
    "InvalidAccessKeyId",
];

/// Codes AWS answers with a 4xx status but that go away by themselves: a request that
/// expired in flight (a long pause) or an identity provider that did not answer succeeds
/// when sent again. Treating them as `Rejected` would fail an instance over a blip.
const TRANSIENT_CODES: &[&str] = &[
    "RequestExpired",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

/// What the resolver says when a host name does not exist (glibc, musl, macOS): an unknown
/// region or a mistyped endpoint. "Temporary failure in name resolution" (no DNS server
/// reachable) is not among them: that one is transient.
const NO_SUCH_HOST: &[&str] = &[
    "Name or service not known",
    "nodename nor servname provided",
    "No address associated with hostname",
];

/// Whether an error code or HTTP status means the request was throttled.
pub fn is_throttling(code: Option<&str>, http_status: Option<u16>) -> bool {
    code.is_some_and(|c| THROTTLING_CODES.contains(&c)) || http_status == Some(429)
}

/// The category of a service error answer, from its code and HTTP status.
pub fn kind_of(code: Option<&str>, http_status: Option<u16>) -> AwsErrorKind {
    if is_throttling(code, http_status) {
        return AwsErrorKind::Throttled;
    }
    if let Some(code) = code {
        if NOT_FOUND_CODES.contains(&code) {
            return AwsErrorKind::NotFound;
        }
        if ACCESS_DENIED_CODES.contains(&code) {
            return AwsErrorKind::AccessDenied;
        }
        if CREDENTIALS_CODES.contains(&code) {
            return AwsErrorKind::Credentials;
        }
        if TRANSIENT_CODES.contains(&code) {
            return AwsErrorKind::Transient;
        }
        // AWS also answers some server faults with a 400-class status and one of these codes.
        if matches!(
            code,
            "InternalError" | "InternalFailure" | "InternalServerError" | "ServiceUnavailable" | "HealthUnavailable"
        ) {
            return AwsErrorKind::Transient;
        }
    }
    match http_status {
        Some(status) if (400..500).contains(&status) => AwsErrorKind::Rejected,
        // 5xx, or a status we cannot read: the service had trouble, not our request.
        _ => AwsErrorKind::Transient,
    }
}

/// Maps a failed SDK call of `operation` to an [`AwsError`].
///
/// A service answer is classified by its code and HTTP status ([`kind_of`]). A failure before
/// any answer is classified by its causes: a credential provider's error means no usable
/// credentials, an endpoint that cannot be resolved (or a host name that does not exist) means
/// a wrong region or endpoint; everything else there (connecting, timing out, reading the
/// response) is `Transient`.
pub fn from_sdk_error<E>(operation: &'static str, error: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let status = service.raw().status().as_u16();
            let code = err.code();
            let kind = kind_of(code, Some(status));
            let message = match err.message().filter(|m| !m.is_empty()) {
                Some(message) => format!("{} (HTTP {status}): {message}", code.unwrap_or("error")),
                None => format!("{} (HTTP {status})", chain(error)),
            };
            let error = AwsError::new(operation, kind, code.map(str::to_owned), message);
            // A 5xx may come from a front end whose back end had already acted; a 4xx
            // (throttling included) is a refusal of the request.
            if status >= 500 && kind != AwsErrorKind::Throttled {
                error.with_outcome_unknown()
            } else {
                error
            }
        }
        _ => {
            let aws_error = AwsError::new(operation, kind_before_answer(error), None, chain(error));
            // Credentials and endpoint failures happen before anything is sent.
            if aws_error.kind != AwsErrorKind::Transient || never_sent(error) {
                aws_error
            } else {
                aws_error.with_outcome_unknown()
            }
        }
    }
}

/// Whether a call that got no answer certainly never reached AWS: the request could not be
/// built, or the connection was refused. Everything else (a timeout, a connection reset or
/// closed after the request went out, an answer that could not be read) may have been
/// carried out.
pub fn never_sent<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    match error {
        SdkError::ConstructionFailure(_) => true,
        SdkError::DispatchFailure(failure) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
            let mut refused = false;
            while let Some(current) = source {
                if let Some(io) = current.downcast_ref::<std::io::Error>() {
                    refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
                }
                source = current.source();
            }
            refused && !failure.is_timeout()
        }
        _ => false,
    }
}

/// The category of a failure that happened before AWS answered, from its causes.
pub fn kind_before_answer(error: &(dyn StdError + 'static)) -> AwsErrorKind {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<CredentialsError>().is_some() {
            return AwsErrorKind::Credentials;
        }
        // The region is not even a host name (endpoint parameters refused), or the endpoint
        // rules have no endpoint for it.
        if current.downcast_ref::<ResolveEndpointError>().is_some()
            || current
                .downcast_ref::<aws_sdk_elasticloadbalancingv2::config::endpoint::InvalidParams>()
                .is_some()
            || current
                .downcast_ref::<aws_sdk_ssm::config::endpoint::InvalidParams>()
                .is_some()
        {
            return AwsErrorKind::Endpoint;
        }
        cause = current.source();
    }
    let text = chain(error);
    if NO_SUCH_HOST.iter().any(|n| text.contains(n)) {
        return AwsErrorKind::Endpoint;
    }
    AwsErrorKind::Transient
}

/// An error and its causes in words, joined by ": " (what `anyhow` prints for `{:#}`), with a
/// cause that only repeats the text before it left out. Unlike the SDK's
/// `DisplayErrorContext`, it never appends the `Debug` form, which is several hundred
/// characters of Rust structs that no log line or status message should carry.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(text)) {
            parts.push(text.to_owned());
        }
        cause = current.source();
    }
    parts.join(": ")
}

/// The error code of a failed call, if AWS answered with one.
pub fn error_code<E>(error: &SdkError<E, HttpResponse>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_throttled_whatever_the_status() {
        for code in [
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
        ] {
            assert_eq!(kind_of(Some(code), Some(400)), AwsErrorKind::Throttled, "{code}");
            assert_eq!(kind_of(Some(code), Some(503)), AwsErrorKind::Throttled, "{code}");
        }
        assert_eq!(kind_of(None, Some(429)), AwsErrorKind::Throttled);
    }

    #[test]
    fn missing_things_are_not_found() {
        for code in [
            "TargetGroupNotFound",
            "InvalidTarget",
            "InvalidInstanceId",
            "InvalidDocument",
        ] {
            assert_eq!(kind_of(Some(code), Some(400)), AwsErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn other_client_errors_are_rejected() {
        assert_eq!(kind_of(Some("ValidationError"), Some(400)), AwsErrorKind::Rejected);
        assert_eq!(kind_of(None, Some(404)), AwsErrorKind::Rejected);
    }

    #[test]
    fn server_trouble_is_transient() {
        assert_eq!(kind_of(None, Some(500)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("InternalError"), Some(500)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("ServiceUnavailable"), Some(503)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("RequestExpired"), Some(400)), AwsErrorKind::Transient);
        assert_eq!(kind_of(None, None), AwsErrorKind::Transient);
    }

    #[test]
    fn what_needs_a_fixed_setup() {
        assert_eq!(kind_of(Some("AccessDenied"), Some(403)), AwsErrorKind::AccessDenied);
        assert_eq!(
            kind_of(Some("AccessDeniedException"), Some(400)),
            AwsErrorKind::AccessDenied
        );
        assert_eq!(
            kind_of(Some("UnauthorizedOperation"), Some(403)),
            AwsErrorKind::AccessDenied
        );
        for code in [
            "InvalidClientTokenId",
            "ExpiredToken",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(kind_of(Some(code), Some(403)), AwsErrorKind::Credentials, "{code}");
        }
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn StdError + Send + Sync>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_decide_before_an_answer() {
        let no_credentials = Layer(
            "dispatch failure",
            Some(Box::new(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            ))),
        );
        assert_eq!(kind_before_answer(&no_credentials), AwsErrorKind::Credentials);
        let endpoint = Layer(
            "failed to construct request",
            Some(Box::new(ResolveEndpointError::message("invalid region"))),
        );
        assert_eq!(kind_before_answer(&endpoint), AwsErrorKind::Endpoint);
        let refused = Layer(
            "io error",
            Some(Box::new(Layer("Connection refused (os error 111)", None))),
        );
        assert_eq!(kind_before_answer(&refused), AwsErrorKind::Transient);
        let no_host = Layer(
            "dns error",
            Some(Box::new(Layer(
                "failed to lookup address information: Name or service not known",
                None,
            ))),
        );
        assert_eq!(kind_before_answer(&no_host), AwsErrorKind::Endpoint);
    }

    #[test]
    fn chains_are_words_without_repeats() {
        let error = Layer(
            "dispatch failure",
            Some(Box::new(Layer("io error", Some(Box::new(Layer("io error", None)))))),
        );
        assert_eq!(chain(&error), "dispatch failure: io error");
    }
}
