//! AWS client settings shared by `pitstop controller` and `pitstop run`.

use std::time::Duration;

use crate::aws::sdk::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPT_TIMEOUT, SdkSettings};

/// How pitstop's AWS clients retry and time out. Credentials, region and endpoint come from
/// the SDK's usual sources (`AWS_PROFILE`, IRSA, `AWS_ENDPOINT_URL`...).
#[derive(clap::Args, Debug, Clone)]
pub struct AwsArgs {
    /// Limit for one attempt of an AWS call. At most 60s: SendCommand is never retried
    /// blindly, and a SendCommand whose answer never came is looked for by its tag for 90s
    /// from the attempt before it is sent again, which must cover the attempt itself.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_attempt_timeout, env = "PITSTOP_AWS_ATTEMPT_TIMEOUT")]
    pub aws_attempt_timeout: Duration,

    /// Attempts per AWS call inside the SDK, the first included (1 to 10). Applies to the
    /// reads and the idempotent writes; SendCommand always gets one attempt.
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=10), env = "PITSTOP_AWS_MAX_ATTEMPTS")]
    pub aws_max_attempts: u32,
}

impl AwsArgs {
    /// The SDK settings these arguments ask for.
    pub fn sdk_settings(&self) -> SdkSettings {
        SdkSettings {
            max_attempts: self.aws_max_attempts,
            attempt_timeout: Some(self.aws_attempt_timeout),
            ..SdkSettings::default()
        }
    }
}

impl Default for AwsArgs {
    fn default() -> Self {
        Self {
            aws_attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            aws_max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

fn parse_attempt_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if timeout.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    if timeout > MAX_ATTEMPT_TIMEOUT {
        return Err(format!(
            "{} is longer than the {}s allowed (a lost SendCommand answer is looked for 90s from the attempt)",
            humantime::format_duration(timeout),
            MAX_ATTEMPT_TIMEOUT.as_secs()
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_timeouts_outside_the_range_are_refused() {
        assert_eq!(parse_attempt_timeout("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_attempt_timeout("0s").is_err());
        assert!(parse_attempt_timeout("61s").unwrap_err().contains("60s allowed"));
        assert!(parse_attempt_timeout("soon").is_err());
    }

    #[test]
    fn the_lookup_grace_outlasts_the_longest_attempt() {
        assert!(crate::machine::SEND_LOOKUP_GRACE > MAX_ATTEMPT_TIMEOUT);
    }
}
