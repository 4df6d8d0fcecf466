//! What a failed AWS call means to the person running pitstop: one sentence that names the
//! operation, the region and the cause, and, for what waiting does not fix, the usual fix.
//! The controller puts it on the plan's status and in a Warning Event; `pitstop run` prints it
//! as its last line.

use super::{AwsError, AwsErrorKind};

/// Condition reason for missing or refused credentials.
pub const REASON_CREDENTIALS: &str = "AWSCredentials";
/// Condition reason for an action the IAM policy does not allow.
pub const REASON_ACCESS_DENIED: &str = "AWSAccessDenied";
/// Condition reason for an unknown region or an endpoint that does not exist.
pub const REASON_ENDPOINT: &str = "AWSEndpoint";
/// Condition reason for a target group, instance or document that does not exist.
pub const REASON_NOT_FOUND: &str = "AWSNotFound";
/// Condition reason for a request AWS refuses as invalid.
pub const REASON_REJECTED: &str = "AWSRejected";
/// Condition reason for AWS that does not answer (network, timeouts, 5xx).
pub const REASON_UNREACHABLE: &str = "AWSUnreachable";
/// Condition reason for AWS that keeps throttling.
pub const REASON_THROTTLED: &str = "AWSThrottled";

/// The condition reason for a kind of failure (one reason per cause, so that a change of
/// cause is a new Event and a repeat of the same one is not).
pub fn reason(kind: AwsErrorKind) -> &'static str {
    match kind {
        AwsErrorKind::Credentials => REASON_CREDENTIALS,
        AwsErrorKind::AccessDenied => REASON_ACCESS_DENIED,
        AwsErrorKind::Endpoint => REASON_ENDPOINT,
        AwsErrorKind::NotFound => REASON_NOT_FOUND,
        AwsErrorKind::Rejected => REASON_REJECTED,
        AwsErrorKind::Transient => REASON_UNREACHABLE,
        AwsErrorKind::Throttled => REASON_THROTTLED,
    }
}

/// The usual fix for a failure waiting does not fix; None for the ones it does.
pub fn usual_fix(error: &AwsError) -> Option<String> {
    let fix = match error.kind {
        AwsErrorKind::Credentials if error.code.is_none() => {
            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role is \
             available (in a cluster: IRSA or EKS Pod Identity on the controller's service account)"
                .to_owned()
        }
        AwsErrorKind::Credentials => {
            "renew or replace the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/\
             AWS_SESSION_TOKEN, or the role pitstop runs as)"
                .to_owned()
        }
        AwsErrorKind::AccessDenied => format!(
            "allow {} in the IAM policy of the identity pitstop runs as",
            error.iam_action()
        ),
        AwsErrorKind::Endpoint => "check the region in spec.targetGroupArn and any AWS_ENDPOINT_URL setting".to_owned(),
        AwsErrorKind::NotFound if error.operation == "DescribeAutoScalingGroups" => {
            "check the plan's selector.autoScalingGroupName and region".to_owned()
        }
        AwsErrorKind::NotFound => "check the plan's target group ARN, instance IDs and SSM document names".to_owned(),
        AwsErrorKind::Rejected => "check the plan against what AWS accepts".to_owned(),
        AwsErrorKind::Transient | AwsErrorKind::Throttled => return None,
    };
    Some(fix)
}

/// One sentence, on one line: what failed, where, why, and what to do about it.
pub fn describe(error: &AwsError, region: &str) -> String {
    let operation = error.operation;
    let cause = one_line(&error.message);
    let what = match error.kind {
        AwsErrorKind::Credentials if error.code.is_none() => {
            format!("no AWS credentials for {operation} in {region} ({cause})")
        }
        AwsErrorKind::Credentials => format!("AWS refused the credentials for {operation} in {region} ({cause})"),
        AwsErrorKind::AccessDenied => format!("AWS denied {} in {region} ({cause})", error.iam_action()),
        AwsErrorKind::Endpoint => format!("no AWS endpoint for {operation} in region {region} ({cause})"),
        AwsErrorKind::NotFound => format!("{operation} in {region} found nothing to work on ({cause})"),
        AwsErrorKind::Rejected => format!("AWS rejected {operation} in {region} ({cause})"),
        AwsErrorKind::Transient => format!("AWS unreachable: {operation} in {region} failed ({cause}); retrying"),
        AwsErrorKind::Throttled => format!("AWS is throttling {operation} in {region} ({cause}); retrying"),
    };
    match usual_fix(error) {
        Some(fix) => format!("{what}: {fix}"),
        None => what,
    }
}

/// Folds line breaks (AWS messages and error chains sometimes carry them) into spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_the_operation_region_cause_and_fix() {
        let denied = AwsError::new(
            "DeregisterTargets",
            AwsErrorKind::AccessDenied,
            Some("AccessDenied".into()),
            "AccessDenied (HTTP 403): User: arn:aws:iam::1:user/x is not authorized\nto perform it",
        );
        let text = describe(&denied, "eu-west-1");
        assert_eq!(
            text,
            "AWS denied elasticloadbalancing:DeregisterTargets in eu-west-1 (AccessDenied (HTTP 403): User: \
             arn:aws:iam::1:user/x is not authorized to perform it): allow elasticloadbalancing:DeregisterTargets \
             in the IAM policy of the identity pitstop runs as"
        );

        let none = AwsError::new("SendCommand", AwsErrorKind::Credentials, None, "no providers in chain");
        let text = describe(&none, "us-east-1");
        assert!(
            text.starts_with("no AWS credentials for SendCommand in us-east-1"),
            "{text}"
        );
        assert!(
            text.contains("set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
            "{text}"
        );

        let down = AwsError::new(
            "DescribeTargetHealth",
            AwsErrorKind::Transient,
            None,
            "connection refused",
        );
        assert_eq!(
            describe(&down, "eu-west-1"),
            "AWS unreachable: DescribeTargetHealth in eu-west-1 failed (connection refused); retrying"
        );
        assert_eq!(usual_fix(&down), None);
    }

    #[test]
    fn one_reason_per_kind() {
        let kinds = [
            AwsErrorKind::Throttled,
            AwsErrorKind::NotFound,
            AwsErrorKind::Rejected,
            AwsErrorKind::Transient,
            AwsErrorKind::Credentials,
            AwsErrorKind::AccessDenied,
            AwsErrorKind::Endpoint,
        ];
        let reasons: std::collections::BTreeSet<_> = kinds.iter().map(|k| reason(*k)).collect();
        assert_eq!(reasons.len(), kinds.len());
    }
}
