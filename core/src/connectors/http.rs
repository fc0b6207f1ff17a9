//! The HTTP destination: one request per record, body = the record, header
//! `Idempotency-Key: {job_id}:{record_seq}`.
//!
//! Every HTTP destination shares one [`reqwest::Client`], hence one connection pool.
//! Redirects are not followed (a 3xx is a permanent failure), no proxy from the
//! environment is used (it would bypass the SSRF guard), and when private destinations are
//! not allowed, names resolve through [`SsrfResolver`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use entity::JobId;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream};
use reqwest::{
    Method, StatusCode,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
    redirect::Policy,
};
use url::Url;

use super::{
    Connector, INTERRUPTED, Outcome, RecordResult, RecordToDeliver, Stop,
    resolver::{self, SsrfResolver},
};
use crate::domain::destination::{
    HttpDestination, HttpMethod, REDACTED, redact_url, url_secret_parts,
};

/// Requests of one batch in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// How long opening a connection may take (the request's own timeout also applies).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many characters of an error response's body an outcome quotes.
const BODY_EXCERPT_CHARS: usize = 200;
/// How much of a response body is read: enough to quote an error and to drain a small
/// success body so that the connection goes back to the pool.
const BODY_READ_LIMIT: usize = 16 * 1024;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The HTTP client shared by every HTTP destination of a worker.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    allow_private: bool,
    concurrency: usize,
}

impl HttpClient {
    pub fn new(allow_private: bool) -> Self {
        let mut builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(DEFAULT_CONCURRENCY * 2)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("freight/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(SsrfResolver));
        }
        let client = builder
            .build()
            .expect("the HTTP client configuration is static and valid");
        Self {
            client,
            allow_private,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Sets how many requests of one batch may be in flight at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The connector for one destination. Cheap: it shares this client's pool.
    pub fn connector(&self, spec: HttpDestination) -> HttpConnector {
        let prepared = prepare(&spec, self.allow_private);
        HttpConnector {
            client: self.client.clone(),
            concurrency: self.concurrency,
            spec,
            prepared: Arc::new(prepared),
        }
    }
}

/// Delivers records to one HTTP destination.
#[derive(Clone)]
pub struct HttpConnector {
    client: reqwest::Client,
    concurrency: usize,
    spec: HttpDestination,
    prepared: Arc<Result<Prepared, String>>,
}

/// What every request of the destination shares, built once.
struct Prepared {
    url: Url,
    method: Method,
    headers: HeaderMap,
    timeout: Duration,
    /// Strings that must never appear in an outcome: header values and the URL password.
    secrets: Vec<String>,
}

/// Parses the spec once. An error is a permanent failure for every record.
fn prepare(spec: &HttpDestination, allow_private: bool) -> Result<Prepared, String> {
    let url = Url::parse(&spec.url)
        .map_err(|e| format!("invalid destination URL {}: {e}", redact_url(&spec.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "destination URL scheme `{}` is not http or https",
            url.scheme()
        ));
    }
    if !allow_private {
        resolver::check_url_host(&url).map_err(|forbidden| forbidden.to_string())?;
    }
    let mut headers = HeaderMap::with_capacity(spec.headers.len() + 2);
    let mut secrets = Vec::new();
    for (name, value) in &spec.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header `{name}` is not a valid header name"))?;
        let mut header_value = HeaderValue::from_str(value)
            .map_err(|_| format!("header `{name}` has an invalid value"))?;
        header_value.set_sensitive(true);
        headers.append(header_name, header_value);
        secrets.push(value.clone());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(password) = url.password() {
        secrets.push(password.to_owned());
    }
    // Everything responses redact of the URL (its password, query values, opaque path
    // segments), as sent and decoded.
    secrets.extend(url_secret_parts(&url));
    // Short values would garble messages; they are not worth hiding from a body excerpt.
    secrets.retain(|s| s.len() >= 4);
    let method = match spec.method {
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
    };
    Ok(Prepared {
        url,
        method,
        headers,
        timeout: Duration::from_millis(spec.timeout_ms.max(1)),
        secrets,
    })
}

impl Connector for HttpConnector {
    fn deliver<'a>(
        &'a self,
        job_id: JobId,
        records: &'a [RecordToDeliver],
        stop: &'a Stop,
    ) -> BoxFuture<'a, Vec<RecordResult>> {
        async move {
            let prepared = match self.prepared.as_ref() {
                Ok(prepared) => prepared,
                Err(message) => {
                    return records
                        .iter()
                        .map(|r| RecordResult {
                            seq: r.seq,
                            outcome: Outcome::Permanent(message.clone()),
                            duration_ms: 0,
                        })
                        .collect();
                }
            };
            // Indices, not references: a closure over `&RecordToDeliver` trips the
            // higher-ranked `Send` check of the boxed future.
            let requests =
                (0..records.len()).map(|i| self.deliver_one(prepared, job_id, &records[i], stop));
            stream::iter(requests)
                .buffered(self.concurrency)
                .collect()
                .await
        }
        .boxed()
    }
}

impl HttpConnector {
    /// The destination this connector delivers to.
    pub fn spec(&self) -> &HttpDestination {
        &self.spec
    }

    async fn deliver_one(
        &self,
        prepared: &Prepared,
        job_id: JobId,
        record: &RecordToDeliver,
        stop: &Stop,
    ) -> RecordResult {
        // Checked when the request would start (when `buffered` first polls this future),
        // so nothing starts once the batch is cancelled.
        if stop.cancel.is_cancelled() {
            return RecordResult {
                seq: record.seq,
                outcome: Outcome::NotAttempted,
                duration_ms: 0,
            };
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            outcome = self.send(prepared, job_id, record) => outcome,
            _ = stop.interrupt.cancelled() => Outcome::Transient(INTERRUPTED.into()),
        };
        RecordResult {
            seq: record.seq,
            outcome,
            duration_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
        }
    }

    async fn send(&self, prepared: &Prepared, job_id: JobId, record: &RecordToDeliver) -> Outcome {
        // The record's text as the tenant sent it.
        let body = record.payload.clone();
        let idempotency_key = HeaderValue::from_str(&format!("{job_id}:{}", record.seq))
            .expect("a UUID and an integer are a valid header value");
        let request = self
            .client
            .request(prepared.method.clone(), prepared.url.clone())
            .headers(prepared.headers.clone())
            .header(IDEMPOTENCY_KEY, idempotency_key)
            .timeout(prepared.timeout)
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return classify_error(e, prepared),
        };
        let status = response.status();
        if status.is_success() {
            // Drain a small body so that the connection can be reused; a failure to read
            // it does not undo the destination's answer.
            let _ = read_prefix(&mut response, BODY_READ_LIMIT).await;
            return Outcome::Succeeded;
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| format!(" to {}", excerpt(&redact_url_lossy(l), prepared)))
                .unwrap_or_default();
            return Outcome::Permanent(format!(
                "destination answered with a redirect ({}){location}; redirects are not followed",
                status_text(status)
            ));
        }
        let body = read_prefix(&mut response, BODY_READ_LIMIT)
            .await
            .unwrap_or_default();
        let body = excerpt(&String::from_utf8_lossy(&body), prepared);
        let message = if body.is_empty() {
            format!("HTTP {}", status_text(status))
        } else {
            format!("HTTP {}: {body}", status_text(status))
        };
        if is_transient_status(status) {
            Outcome::Transient(message)
        } else {
            Outcome::Permanent(message)
        }
    }
}

/// 408, 429 and 5xx are worth retrying; other statuses that are not 2xx are not.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match response.chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    buf.truncate(limit);
    Ok(buf)
}

/// One line of at most [`BODY_EXCERPT_CHARS`] characters, with the destination's secrets
/// removed (a destination may echo a header back).
fn excerpt(text: &str, prepared: &Prepared) -> String {
    let mut text = text.to_owned();
    for secret in &prepared.secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = trimmed.chars();
    let mut out: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn redact_url_lossy(raw: &str) -> String {
    if Url::parse(raw).is_ok() {
        redact_url(raw)
    } else {
        raw.to_owned()
    }
}

/// A short message for a failed request, never with the URL (it may hold a password).
fn classify_error(err: reqwest::Error, prepared: &Prepared) -> Outcome {
    let err = err.without_url();
    if let Some(forbidden) = resolver::find_forbidden(&err) {
        return Outcome::Permanent(forbidden.to_string());
    }
    if err.is_timeout() {
        // The connect timeout fires first only when the request's own timeout is longer.
        if err.is_connect() && prepared.timeout > CONNECT_TIMEOUT {
            return Outcome::Transient(format!(
                "connection timed out after {} ms",
                CONNECT_TIMEOUT.as_millis()
            ));
        }
        return Outcome::Transient(format!(
            "timed out after {} ms",
            prepared.timeout.as_millis()
        ));
    }
    if err.is_builder() {
        return Outcome::Permanent(format!("invalid request: {}", root_cause(&err)));
    }
    let io_kind = io_error_kind(&err);
    let message = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => {
            "connection reset by the destination".to_owned()
        }
        Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_owned(),
        _ if err.is_connect() => format!("could not connect: {}", root_cause(&err)),
        _ => format!("request failed: {}", root_cause(&err)),
    };
    Outcome::Transient(excerpt(&message, prepared))
}

fn io_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// The innermost error's message (reqwest's own wording adds nothing past the first level).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{body_partial_json, method, path},
    };

    use super::*;

    fn spec(url: String) -> HttpDestination {
        HttpDestination {
            url,
            url_redacted: None,
            method: HttpMethod::Post,
            headers: BTreeMap::from([("X-Api-Key".to_owned(), "s3cr3t-token".to_owned())]),
            timeout_ms: 2_000,
        }
    }

    fn records(payloads: impl IntoIterator<Item = Value>) -> Vec<RecordToDeliver> {
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| RecordToDeliver {
                seq: 100 + i as i64,
                payload: payload.to_string(),
            })
            .collect()
    }

    async fn deliver(
        connector: &HttpConnector,
        job_id: JobId,
        records: &[RecordToDeliver],
    ) -> Vec<RecordResult> {
        connector.deliver(job_id, records, &Stop::default()).await
    }

    #[tokio::test]
    async fn delivers_each_record_with_its_idempotency_key_and_headers() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/import"))
            .respond_with(ResponseTemplate::new(201))
            .mount(&server)
            .await;
        let mut spec = spec(format!("{}/import", server.uri()));
        spec.method = HttpMethod::Put;
        let connector = HttpClient::new(true).connector(spec);
        let job_id = JobId::new();
        let batch = records((0..5).map(|i| json!({"id": i, "email": format!("{i}@example.com")})));

        let results = deliver(&connector, job_id, &batch).await;

        assert_eq!(results.len(), 5);
        for (result, record) in results.iter().zip(&batch) {
            assert_eq!(result.seq, record.seq);
            assert_eq!(result.outcome, Outcome::Succeeded);
        }
        let received = server.received_requests().await.unwrap();
        assert_eq!(received.len(), 5);
        let mut keys: Vec<String> = received
            .iter()
            .map(|r| {
                assert_eq!(r.headers["x-api-key"], "s3cr3t-token");
                assert_eq!(r.headers["content-type"], "application/json");
                let key = r.headers["idempotency-key"].to_str().unwrap().to_owned();
                let seq: i64 = key.rsplit(':').next().unwrap().parse().unwrap();
                assert_eq!(
                    r.body,
                    batch[(seq - 100) as usize].payload.as_bytes(),
                    "body of {key}"
                );
                key
            })
            .collect();
        keys.sort();
        let expected: Vec<String> = (100..105).map(|s| format!("{job_id}:{s}")).collect();
        assert_eq!(keys, expected);
    }

    #[tokio::test]
    async fn classifies_statuses_and_keeps_input_order() {
        let server = MockServer::start().await;
        // Earlier records answer later, so completion order differs from input order.
        for (want, template) in [
            (
                200,
                ResponseTemplate::new(200).set_delay(Duration::from_millis(300)),
            ),
            (
                422,
                ResponseTemplate::new(422)
                    .set_body_string("{\"error\": \"email is invalid\"}")
                    .set_delay(Duration::from_millis(250)),
            ),
            (
                503,
                ResponseTemplate::new(503)
                    .set_body_string("down for maintenance; your key s3cr3t-token")
                    .set_delay(Duration::from_millis(200)),
            ),
            (
                429,
                ResponseTemplate::new(429).set_delay(Duration::from_millis(150)),
            ),
            (408, ResponseTemplate::new(408)),
            (
                302,
                ResponseTemplate::new(302)
                    .insert_header("Location", format!("{}/elsewhere", server.uri())),
            ),
            (404, ResponseTemplate::new(404)),
            (204, ResponseTemplate::new(204)),
            (
                500,
                ResponseTemplate::new(500).set_body_string("x".repeat(1000)),
            ),
        ] {
            Mock::given(method("POST"))
                .and(path("/import"))
                .and(body_partial_json(json!({ "want": want })))
                .respond_with(template)
                .mount(&server)
                .await;
        }
        Mock::given(path("/elsewhere"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&server)
            .await;
        let connector = HttpClient::new(true).connector(spec(format!("{}/import", server.uri())));
        let wants = [200, 422, 503, 429, 408, 302, 404, 204, 500, 200];
        let batch = records(wants.iter().map(|w| json!({ "want": w })));

        let results = deliver(&connector, JobId::new(), &batch).await;

        let seqs: Vec<i64> = results.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (100..110).collect::<Vec<_>>());
        let o = |i: usize| &results[i].outcome;
        assert_eq!(o(0), &Outcome::Succeeded);
        assert_eq!(
            o(1),
            &Outcome::Permanent(
                "HTTP 422 Unprocessable Entity: {\"error\": \"email is invalid\"}".into()
            )
        );
        assert_eq!(
            o(2),
            &Outcome::Transient(
                "HTTP 503 Service Unavailable: down for maintenance; your key [redacted]".into()
            )
        );
        assert!(
            matches!(o(3), Outcome::Transient(m) if m.starts_with("HTTP 429")),
            "{:?}",
            o(3)
        );
        assert!(
            matches!(o(4), Outcome::Transient(m) if m.starts_with("HTTP 408")),
            "{:?}",
            o(4)
        );
        assert!(
            matches!(o(5), Outcome::Permanent(m) if m.starts_with("destination answered with a redirect (302 Found)")),
            "{:?}",
            o(5)
        );
        assert!(
            matches!(o(6), Outcome::Permanent(m) if m == "HTTP 404 Not Found"),
            "{:?}",
            o(6)
        );
        assert_eq!(o(7), &Outcome::Succeeded);
        match o(8) {
            Outcome::Transient(m) => {
                assert!(m.starts_with("HTTP 500 Internal Server Error: xxx"));
                assert!(m.chars().count() < 250, "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(o(9), &Outcome::Succeeded);
        assert!(results[0].duration_ms >= 250, "{:?}", results[0]);
        // The redirect was not followed (`expect(0)` is verified when the server drops).
    }

    #[tokio::test]
    async fn a_slow_destination_times_out_as_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(&server)
            .await;
        let mut spec = spec(format!("{}/slow", server.uri()));
        spec.timeout_ms = 200;
        let connector = HttpClient::new(true).connector(spec);
        let started = Instant::now();
        let results = deliver(&connector, JobId::new(), &records([json!({"id": 1})])).await;
        assert_eq!(
            results[0].outcome,
            Outcome::Transient("timed out after 200 ms".into())
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn network_errors_are_transient_and_never_show_the_password() {
        // Port 1 on loopback: nothing listens.
        let mut spec = spec("http://user:hunter22@127.0.0.1:1/import".into());
        spec.timeout_ms = 1_000;
        let connector = HttpClient::new(true).connector(spec);
        let results = deliver(&connector, JobId::new(), &records([json!({"id": 1})])).await;
        assert_eq!(
            results[0].outcome,
            Outcome::Transient("connection refused".into())
        );
    }

    #[tokio::test]
    async fn cancelled_before_delivery_sends_nothing() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let connector = HttpClient::new(true).connector(spec(server.uri()));
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel.cancel();
        let batch = records((0..5).map(|i| json!({ "id": i })));
        let stop = Stop {
            cancel: cancel.clone(),
            ..Stop::default()
        };
        let results = connector.deliver(JobId::new(), &batch, &stop).await;
        assert!(results.iter().all(|r| r.outcome == Outcome::NotAttempted));
        assert_eq!(
            results.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (100..105).collect::<Vec<_>>()
        );
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn cancelling_mid_batch_starts_no_new_request() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
            .mount(&server)
            .await;
        let connector = HttpClient::new(true).connector(spec(server.uri()));
        let batch = records((0..200).map(|i| json!({ "id": i })));
        let cancel = tokio_util::sync::CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(450)).await;
                cancel.cancel();
            })
        };
        let started = Instant::now();
        let stop = Stop {
            cancel: cancel.clone(),
            ..Stop::default()
        };
        let results = connector.deliver(JobId::new(), &batch, &stop).await;
        let took = started.elapsed();
        canceller.await.unwrap();

        assert!(took < Duration::from_millis(1_200), "took {took:?}");
        let attempted = results
            .iter()
            .take_while(|r| r.outcome != Outcome::NotAttempted)
            .count();
        assert!(
            results[attempted..]
                .iter()
                .all(|r| r.outcome == Outcome::NotAttempted),
            "not attempted records must be the tail"
        );
        assert!((16..200).contains(&attempted), "attempted {attempted}");
        assert!(
            results[..attempted]
                .iter()
                .all(|r| r.outcome == Outcome::Succeeded)
        );
        let received = server.received_requests().await.unwrap().len();
        assert_eq!(received, attempted);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(server.received_requests().await.unwrap().len(), attempted);
    }

    #[tokio::test]
    async fn private_destinations_are_refused_at_connect_time() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let port = server.address().port();
        let client = HttpClient::new(false);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://localhost:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
        ] {
            let connector = client.connector(spec(url.clone()));
            let results = deliver(&connector, JobId::new(), &records([json!({"id": 1})])).await;
            match &results[0].outcome {
                Outcome::Permanent(m) => {
                    assert!(m.contains("private"), "{url}: {m}");
                    if url.contains("localhost") {
                        // Refused by the resolver, on the address the name resolves to,
                        // which the message does not quote.
                        assert!(m.starts_with("`localhost` is a private destination"), "{m}");
                        assert!(!m.contains("127.0.0.1") && !m.contains("::1"), "{m}");
                    } else {
                        assert!(m.contains("loopback"), "{url}: {m}");
                    }
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(server.received_requests().await.unwrap().is_empty());
    }
}
