//! AWS wire formats the SDK expects: Query requests with XML answers (ELBv2) and JSON 1.1 (SSM), and their errors.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// XML namespace of ELBv2 answers.
pub(crate) const ELBV2_NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// An AWS error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiError {
    /// A client error (HTTP 400, Query type `Sender`).
    pub(crate) fn client(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A fault on the sandbox's side (HTTP 500, Query type `Receiver`), which the SDK retries.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalFailure".to_owned(),
            message: message.into(),
        }
    }

    /// Query `ValidationError` for a missing or malformed parameter.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationError", message)
    }

    fn fault_type(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(format!("{err:#}"))
    }
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

/// XML namespace of Auto Scaling answers.
pub(crate) const AUTOSCALING_NAMESPACE: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

/// A successful Query answer of the service whose XML namespace is `namespace`:
/// `<{Action}Response><{Action}Result>…</…Result><ResponseMetadata>…`.
///
/// The SDK insists on the `Result` element even when it is empty.
pub(crate) fn query_response_in(namespace: &str, action: &str, result_xml: &str, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{namespace}\">\
         <{action}Result>{result_xml}</{action}Result>\
         <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    );
    let response = (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    with_request_id(response, request_id)
}

/// A Query error answer: `<ErrorResponse><Error><Type>…<Code>…<Message>…</Error><RequestId>…`.
pub(crate) fn query_error(err: &ApiError, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{ELBV2_NAMESPACE}\"><Error><Type>{}</Type>\
         <Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        err.fault_type(),
        escape(&err.code),
        escape(&err.message)
    );
    let response = (err.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    with_request_id(response, request_id)
}

/// Namespace of the EC2 Query API answers.
const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// A successful EC2 answer: `<{Action}Response><requestId>…</requestId>…` (EC2 has no `Result` element).
pub(crate) fn ec2_response(action: &str, inner_xml: &str, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{EC2_NAMESPACE}\">\
         <requestId>{request_id}</requestId>{inner_xml}</{action}Response>"
    );
    let response = (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    with_request_id(response, request_id)
}

/// An EC2 error answer: `<Response><Errors><Error><Code>…<Message>…</Error></Errors><RequestID>…`.
pub(crate) fn ec2_error(err: &ApiError, request_id: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message>\
         </Error></Errors><RequestID>{request_id}</RequestID></Response>",
        escape(&err.code),
        escape(&err.message)
    );
    let response = (err.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    with_request_id(response, request_id)
}

/// A successful JSON 1.1 answer.
pub(crate) fn json_response(value: &serde_json::Value, request_id: &str) -> Response {
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        value.to_string(),
    )
        .into_response();
    with_request_id(response, request_id)
}

/// A JSON 1.1 error answer: `{"__type": code, "message": …}`.
pub(crate) fn json_error(err: &ApiError, request_id: &str) -> Response {
    let body = serde_json::json!({ "__type": err.code, "message": err.message });
    let response = (
        err.status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    with_request_id(response, request_id)
}

/// The message IAM gives when no policy allows `action` (`elasticloadbalancing:DeregisterTargets`).
pub(crate) fn access_denied_message(action: &str, resource: Option<&str>) -> String {
    let resource = resource.map(|r| format!(" on resource: {r}")).unwrap_or_default();
    format!(
        "User: arn:aws:sts::123456789012:assumed-role/pitstop/sandbox is not authorized to perform: {action}{resource} \
         because no identity-based policy allows the {action} action"
    )
}

/// ELBv2's AccessDenied answer: HTTP 403, Query XML, code `AccessDenied`.
pub(crate) fn query_access_denied(action: &str, resource: Option<&str>, request_id: &str) -> Response {
    let err = ApiError {
        status: StatusCode::FORBIDDEN,
        code: "AccessDenied".to_owned(),
        message: access_denied_message(action, resource),
    };
    query_error(&err, request_id)
}

/// SSM's AccessDenied answer: HTTP 400, JSON 1.1, `__type` `AccessDeniedException`; the
/// authorization layer spells the message key `Message`.
pub(crate) fn json_access_denied(action: &str, resource: Option<&str>, request_id: &str) -> Response {
    let body = serde_json::json!({
        "__type": "AccessDeniedException",
        "Message": access_denied_message(action, resource),
    });
    let response = (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    with_request_id(response, request_id)
}

/// Escapes text for an XML element.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Builds XML element by element, escaping text.
#[derive(Debug, Default)]
pub(crate) struct Xml {
    buf: String,
}

impl Xml {
    /// Opens `tag`.
    pub(crate) fn open(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.buf, "<{tag}>");
        self
    }

    /// Closes `tag`.
    pub(crate) fn close(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.buf, "</{tag}>");
        self
    }

    /// Writes `<tag>text</tag>`.
    pub(crate) fn leaf(&mut self, tag: &str, text: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.buf, "<{tag}>{}</{tag}>", escape(&text.to_string()));
        self
    }

    /// The XML written so far.
    pub(crate) fn finish(self) -> String {
        self.buf
    }
}

/// Parameters of a Query request (`application/x-www-form-urlencoded` body), in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes a form body.
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or a `ValidationError` naming it.
    pub(crate) fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::validation(format!("1 validation error detected: {key} is required")))
    }

    /// Members of the list `prefix` (`prefix.member.N.field`), in `N` order, each as its fields.
    pub(crate) fn members(&self, prefix: &str) -> Vec<Vec<(String, String)>> {
        let head = format!("{prefix}.member.");
        let mut members: std::collections::BTreeMap<u32, Vec<(String, String)>> = Default::default();
        for (key, value) in &self.pairs {
            let Some(rest) = key.strip_prefix(&head) else {
                continue;
            };
            let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
            if let Ok(index) = index.parse::<u32>() {
                members
                    .entry(index)
                    .or_default()
                    .push((field.to_owned(), value.clone()));
            }
        }
        members.into_values().collect()
    }

    /// Every parameter, in request order (for protocols whose lists are `Name.N.Field`, as EC2's).
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Every parameter except `Action` and `Version`, `key=value` joined by `&`, for the call log.
    pub(crate) fn summary(&self) -> String {
        self.pairs
            .iter()
            .filter(|(k, _)| k != "Action" && k != "Version")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_members_keep_their_order_and_fields() {
        let params = QueryParams::parse(
            b"Action=RegisterTargets&Targets.member.2.Id=i-b&Targets.member.1.Id=i-a&Targets.member.1.Port=80",
        );
        let members = params.members("Targets");
        assert_eq!(members.len(), 2);
        assert_eq!(
            members[0],
            vec![
                ("Id".to_owned(), "i-a".to_owned()),
                ("Port".to_owned(), "80".to_owned())
            ]
        );
        assert_eq!(members[1], vec![("Id".to_owned(), "i-b".to_owned())]);
        assert_eq!(params.get("Action"), Some("RegisterTargets"));
        assert!(params.require("TargetGroupArn").is_err());
    }

    #[test]
    fn xml_text_is_escaped() {
        let mut xml = Xml::default();
        xml.open("A").leaf("B", "x<y & \"z\"").close("A");
        assert_eq!(xml.finish(), "<A><B>x&lt;y &amp; &quot;z&quot;</B></A>");
    }
}
