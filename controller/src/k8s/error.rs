//! Why a reconcile failed, one variant per step, each with a category that the error
//! policy (when to retry) and the logs and metrics use.

use crate::aws::{AwsError, AwsErrorKind};
use crate::engine::StepError;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks something every stored object has; it cannot be worked on until
    /// it changes.
    #[error("the MaintenancePlan has no {0}")]
    MissingMetadata(&'static str),

    /// A round of the engine failed (reading AWS, writing the status, or the AWS action).
    #[error(transparent)]
    Step(#[from] StepError<kube::Error>),

    /// Writing the status of a plan whose spec is invalid failed.
    #[error("could not record the status: {0}")]
    RecordInvalid(#[source] kube::Error),

    /// Adding the finalizer failed.
    #[error("could not add the finalizer: {0}")]
    AddFinalizer(#[source] kube::Error),

    /// Reading or writing a target group's Lease failed; nothing was taken out.
    #[error("target group lease: {0}")]
    TargetGroupLock(#[source] kube::Error),

    /// Removing the finalizer after the clean-up failed.
    #[error("could not remove the finalizer: {0}")]
    RemoveFinalizer(#[source] kube::Error),

    /// An AWS call of the clean-up on delete failed; the finalizer stays.
    #[error("could not put {instance_id} back before releasing the plan: {source}")]
    Cleanup {
        /// The instance being put back.
        instance_id: String,
        /// The failed call.
        #[source]
        source: AwsError,
    },

    /// Reading the tags a MaintenancePolicy asks of the plan's target groups or instances
    /// failed; nothing was taken out.
    #[error("could not read the tags the MaintenancePolicy asks for: {0}")]
    PolicyTags(#[source] AwsError),

    /// The finalizer helper refused the object (no name, a bad finalizer path).
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What kind of failure, for the error policy and as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object itself is unusable: wait for it to change.
    InvalidSpec,
    /// AWS or the apiserver asked us to slow down: retry soon, without backing off far.
    Throttled,
    /// Someone else changed the object in between: retry right away with the new version.
    Conflict,
    /// The apiserver failed otherwise: back off.
    Kube,
    /// AWS failed otherwise (network, 5xx, a refused call): back off.
    Aws,
    /// AWS cannot be used as set up (credentials, IAM policy, region or endpoint) or the plan
    /// names something that does not exist: back off long, nothing here fixes it.
    AwsPermanent,
}

impl ErrorKind {
    /// Lower-case name, as used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "invalid_spec",
            Self::Throttled => "throttled",
            Self::Conflict => "conflict",
            Self::Kube => "kube",
            Self::Aws => "aws",
            Self::AwsPermanent => "aws_permanent",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The category of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MissingMetadata(_) | Self::Finalizer(_) => ErrorKind::InvalidSpec,
            Self::Step(StepError::Store(e))
            | Self::RecordInvalid(e)
            | Self::TargetGroupLock(e)
            | Self::AddFinalizer(e)
            | Self::RemoveFinalizer(e) => kube_kind(e),
            Self::Step(step) => step.aws().map_or(ErrorKind::Aws, aws_kind),
            Self::Cleanup { source, .. } | Self::PolicyTags(source) => aws_kind(source),
        }
    }
}

fn aws_kind(error: &AwsError) -> ErrorKind {
    match error.kind {
        AwsErrorKind::Throttled => ErrorKind::Throttled,
        AwsErrorKind::Transient => ErrorKind::Aws,
        kind if kind.is_permanent() => ErrorKind::AwsPermanent,
        _ => ErrorKind::Aws,
    }
}

fn kube_kind(error: &kube::Error) -> ErrorKind {
    match error {
        kube::Error::Api(status) if status.code == 409 => ErrorKind::Conflict,
        kube::Error::Api(status) if status.code == 429 => ErrorKind::Throttled,
        _ => ErrorKind::Kube,
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match error {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(e) => Self::AddFinalizer(e),
            F::RemoveFinalizer(e) => Self::RemoveFinalizer(e),
            other @ (F::UnnamedObject | F::InvalidFinalizer) => Self::Finalizer(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ObserveError;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("test", "Test").with_code(code)))
    }

    fn aws(kind: AwsErrorKind) -> AwsError {
        AwsError::new("DescribeTargetHealth", kind, None, "test")
    }

    #[test]
    fn categories() {
        assert_eq!(Error::MissingMetadata("uid").kind(), ErrorKind::InvalidSpec);
        assert_eq!(
            Error::Step(StepError::Observe(ObserveError(aws(AwsErrorKind::Throttled)))).kind(),
            ErrorKind::Throttled
        );
        assert_eq!(
            Error::Step(StepError::Act {
                error: aws(AwsErrorKind::Transient),
                status: Box::default(),
                transitions: Vec::new(),
            })
            .kind(),
            ErrorKind::Aws
        );
        assert_eq!(
            Error::Step(StepError::Store(api_error(409))).kind(),
            ErrorKind::Conflict
        );
        assert_eq!(Error::AddFinalizer(api_error(429)).kind(), ErrorKind::Throttled);
        assert_eq!(Error::RemoveFinalizer(api_error(500)).kind(), ErrorKind::Kube);
        let cleanup = Error::Cleanup {
            instance_id: "i-0123456789abcdef0".into(),
            source: aws(AwsErrorKind::Throttled),
        };
        assert_eq!(cleanup.kind(), ErrorKind::Throttled);
        assert!(cleanup.to_string().contains("i-0123456789abcdef0"), "{cleanup}");
    }
}
