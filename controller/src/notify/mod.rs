//! Webhook notifications (`spec.notify`, `pitstop run --notify-url`): what a round's
//! transitions are worth telling ([`event`]) and getting it there without holding maintenance
//! up ([`delivery`]). The Kubernetes side (the URL's Secret) is in `k8s::notify`.

pub mod delivery;
pub mod event;

pub use delivery::{Delivery, HttpPoster, Notifier, Outcome, PostError, Poster, RetryPolicy, deliver};
pub use event::{Notification, PlanRef, from_transitions};

/// `text` as a webhook URL: an absolute `http://` or `https://` URL with a host. The error
/// never repeats the text, as a webhook URL often carries a token.
pub fn webhook_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let uri: http::Uri = text.parse().map_err(|e| format!("it is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("its scheme is {other}, not http or https")),
        None => return Err("it is not an absolute URL (http://... or https://...)".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("it names no host".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked_without_being_repeated() {
        assert_eq!(
            webhook_url(" https://hooks.slack.com/services/T/B/secret\n").as_deref(),
            Ok("https://hooks.slack.com/services/T/B/secret")
        );
        assert!(webhook_url("http://127.0.0.1:8080/hook").is_ok());
        let error = webhook_url("ftp://example.com/secret-token").unwrap_err();
        assert_eq!(error, "its scheme is ftp, not http or https");
        assert!(webhook_url("/just/a/path").is_err());
        assert!(
            webhook_url("not a url with secret-token")
                .unwrap_err()
                .starts_with("it is not a URL")
        );
        assert!(webhook_url("").is_err());
    }
}
