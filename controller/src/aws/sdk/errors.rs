//! From SDK errors to [`AwsError`]: the category decides whether pitstop retries soon
//! (throttled), backs off (transient) or gives up on the instance (not found, rejected).

use aws_sdk_elasticloadbalancingv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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

/// Codes AWS answers with a 4xx status but that go away by themselves: an expired session
/// token is refreshed by the credential provider, a request that expired in flight (clock
/// skew, a long pause) succeeds when sent again. Treating them as `Rejected` would fail an
/// instance over a blip.
const TRANSIENT_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
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
/// Only service answers can be `Throttled`, `NotFound` or `Rejected`. Everything that happened
/// before an answer (building the request, loading credentials, connecting, timing out, reading
/// the response) is `Transient`: pitstop's inputs are already validated, so a failure there is
/// an environment problem (IMDS slow to hand out credentials, a network blip), and failing an
/// instance half-way through its maintenance over one would be worse than retrying.
pub fn from_sdk_error<E>(operation: &'static str, error: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let status = service.raw().status().as_u16();
            let code = err.code();
            let kind = kind_of(code, Some(status));
            let message = match err.message().filter(|m| !m.is_empty()) {
                Some(message) => format!("{} (HTTP {status}): {message}", code.unwrap_or("error")),
                None => format!("{} (HTTP {status})", DisplayErrorContext(error)),
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
            let aws_error = AwsError::new(
                operation,
                AwsErrorKind::Transient,
                None,
                DisplayErrorContext(error).to_string(),
            );
            if never_sent(error) {
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
        assert_eq!(kind_of(Some("AccessDenied"), Some(403)), AwsErrorKind::Rejected);
        assert_eq!(
            kind_of(Some("AccessDeniedException"), Some(400)),
            AwsErrorKind::Rejected
        );
        assert_eq!(kind_of(Some("ValidationError"), Some(400)), AwsErrorKind::Rejected);
        assert_eq!(kind_of(None, Some(404)), AwsErrorKind::Rejected);
    }

    #[test]
    fn server_trouble_is_transient() {
        assert_eq!(kind_of(None, Some(500)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("InternalError"), Some(500)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("ServiceUnavailable"), Some(503)), AwsErrorKind::Transient);
        assert_eq!(kind_of(Some("ExpiredToken"), Some(400)), AwsErrorKind::Transient);
        assert_eq!(kind_of(None, None), AwsErrorKind::Transient);
    }
}
