//! The management HTTP API client: builds `/api/...` URLs from path
//! segments (each percent-encoded, so vhost `/` is `%2F`), sends requests
//! with basic auth, and turns every failure into an [`Error`] that says
//! what went wrong in the server's own words (`error` / `reason`).

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Everything a command can fail with; decides the exit code.
#[derive(Debug)]
pub enum Error {
    /// The server could not be reached (refused, DNS, timeout): exit code 2.
    Connect { url: String, cause: String },
    /// The server answered with a non-2xx status.
    Api(ApiError),
    /// The command line or a local file is wrong.
    Usage(String),
}

/// A non-2xx answer, with RabbitMQ's `{"error": ..., "reason": ...}` body when there is one.
#[derive(Debug)]
pub struct ApiError {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    /// `error` of the body (e.g. `Object Not Found`), or the body's first bytes if not JSON.
    pub error: Option<String>,
    /// `reason` of the body (e.g. `Not Found`, `Login failed`).
    pub reason: Option<String>,
}

impl Error {
    /// Process exit code: 2 when the server could not be reached, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Connect { .. } => 2,
            Error::Api(_) | Error::Usage(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { url, cause } => write!(f, "cannot connect to {url}: {cause}"),
            Error::Usage(msg) => f.write_str(msg),
            Error::Api(e) => e.fmt(f),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → {}", self.method, self.path, self.status)?;
        match (&self.error, &self.reason) {
            (Some(error), Some(reason)) if error != reason => write!(f, ": {error}: {reason}")?,
            (_, Some(text)) | (Some(text), None) => write!(f, ": {text}")?,
            (None, None) => {}
        }
        if self.status == StatusCode::UNAUTHORIZED {
            f.write_str(" (check --user / --password)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Result of a command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A management API endpoint with credentials.
#[derive(Debug)]
pub struct Client {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:15673`.
    base: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (`http://host:port`, optionally with a path prefix).
    pub fn new(base: &str, user: &str, password: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base)
            .map_err(|e| Error::Usage(format!("invalid --url {base:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base,
            user: user.to_owned(),
            password: password.to_owned(),
            http,
        })
    }

    /// `GET`; the JSON body.
    pub async fn get(&self, path: &ApiPath) -> Result<Value> {
        Ok(self
            .send(Method::GET, path, None)
            .await?
            .unwrap_or(Value::Null))
    }

    /// `PUT` with a JSON body.
    pub async fn put(&self, path: &ApiPath, body: &Value) -> Result<Option<Value>> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `POST` with a JSON body; the JSON answer, if any.
    pub async fn post(&self, path: &ApiPath, body: &Value) -> Result<Option<Value>> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &ApiPath) -> Result<()> {
        self.send(Method::DELETE, path, None).await.map(drop)
    }

    /// `DELETE` with RabbitMQ's `X-Reason` header (closing a connection).
    pub async fn delete_with_reason(&self, path: &ApiPath, reason: &str) -> Result<()> {
        let request = self
            .request(Method::DELETE, path)
            .header("X-Reason", reason);
        self.execute(Method::DELETE, path, request).await.map(drop)
    }

    fn request(&self, method: Method, path: &ApiPath) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, path.0);
        self.http
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
    }

    async fn send(
        &self,
        method: Method,
        path: &ApiPath,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.execute(method, path, request).await
    }

    async fn execute(
        &self,
        method: Method,
        path: &ApiPath,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>> {
        let connect_error = |e: reqwest::Error| Error::Connect {
            url: self.base.clone(),
            cause: cause_chain(&e),
        };
        let response = request.send().await.map_err(connect_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(connect_error)?;
        if !status.is_success() {
            let (error, reason) = error_fields(&bytes);
            return Err(Error::Api(ApiError {
                method,
                path: path.0.clone(),
                status,
                error,
                reason,
            }));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Usage(format!(
                "{method} {} → {status}, but the body is not JSON ({e}); is {} a management API?",
                path.0, self.base
            ))
        })
    }
}

/// `error` and `reason` of a RabbitMQ error body; the text itself if it is not JSON.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let field = |k: &str| match map.get(k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            };
            (field("error"), field("reason"))
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                (None, None)
            } else {
                (Some(text.chars().take(200).collect()), None)
            }
        }
    }
}

/// The error and its sources, e.g. `error sending request: tcp connect error: Connection refused`.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// An `/api/...` path built from segments, each percent-encoded.
#[derive(Debug, Clone)]
pub struct ApiPath(String);

impl ApiPath {
    /// `/api/<segments...>`. Refuses `.` and `..`: HTTP clients and servers
    /// normalise them away, so such a name would address another resource.
    pub fn new<I, S>(segments: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut path = String::from("/api");
        for segment in segments {
            let segment = segment.as_ref();
            if segment == "." || segment == ".." {
                return Err(Error::Usage(format!(
                    "the name {segment:?} cannot be addressed through the HTTP API"
                )));
            }
            path.push('/');
            encode_segment(segment, &mut path);
        }
        Ok(Self(path))
    }

    /// The path with a query string (`if-empty=true`), already encoded.
    pub fn with_query(mut self, query: &str) -> Self {
        self.0.push('?');
        self.0.push_str(query);
        self
    }

    /// The path as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Percent-encodes all but RFC 3986 unreserved characters (so `/` → `%2F`, `+` → `%2B`).
fn encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        let path = ApiPath::new(["queues", "/", "a b+c/ä"]).unwrap();
        assert_eq!(path.as_str(), "/api/queues/%2F/a%20b%2Bc%2F%C3%A4");
    }

    #[test]
    fn dot_segments_are_refused() {
        assert!(matches!(
            ApiPath::new(["queues", ".."]),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn error_body_fields_are_read() {
        let (error, reason) = error_fields(br#"{"error":"Object Not Found","reason":"Not Found"}"#);
        assert_eq!(error.as_deref(), Some("Object Not Found"));
        assert_eq!(reason.as_deref(), Some("Not Found"));
        let (error, reason) = error_fields(b"<html>nope</html>");
        assert_eq!(error.as_deref(), Some("<html>nope</html>"));
        assert_eq!(reason, None);
    }
}
