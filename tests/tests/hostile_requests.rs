//! Requests that would cost the server far more than they cost the sender: one long
//! NDJSON line in tiny chunks, bodies of empty objects, made-up HTTP methods that would
//! each add a metric series, slow bodies and never-ending connections.

use bytes::Bytes;
use freight_tests::TestApp;
use futures::stream;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::intake_support::{NDJSON, error_fields, expect_problem};

async fn upload_job(app: &TestApp, key: &str) -> String {
    let job = app
        .create_job(
            key,
            &json!({"source": {"type": "upload"},
                    "destination": {"type": "http", "url": "http://127.0.0.1:9/x"}}),
        )
        .await;
    job["id"].as_str().unwrap().to_owned()
}

/// A body sent as many small chunks (each its own frame at the server).
fn chunked(bytes: Vec<u8>, size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(stream::iter(chunks))
}

/// One NDJSON line far longer than a record may be, sent 512 bytes at a time: refused as
/// a 422 naming its line once the record limit is passed, and nothing of the upload is
/// kept. (Before, the decoder rescanned the unfinished line for every chunk: quadratic.)
#[tokio::test]
async fn a_long_ndjson_line_is_refused_at_the_record_limit() {
    let app = TestApp::spawn_with(|s| s.http.max_record_bytes = 64 << 10).await;
    let (_, key) = app.tenant_with_key("mallory").await;
    let id = upload_job(&app, &key).await;
    let mut body = b"{\"id\": 1}\n{\"blob\": \"".to_vec();
    body.resize(2 << 20, b'x');
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", NDJSON)
        .body(chunked(body, 512))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "long line").await;
    assert_eq!(error_fields(&problem), ["records[1]"]);
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 2: ") && message.contains("65536"),
        "{message}"
    );
    let job = app.job(&key, &id).await;
    assert_eq!(job["progress"]["total"], 0, "{job}");

    // A record of exactly the limit is fine.
    let mut line = b"{\"blob\": \"".to_vec();
    line.resize((64 << 10) - 2, b'x');
    line.extend_from_slice(b"\"}\n");
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", NDJSON)
        .body(chunked(line, 512))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

/// A JSON array upload is read as a stream, element by element: many empty objects are
/// accepted without building a value per element, and a bad element is named by index.
#[tokio::test]
async fn json_array_uploads_are_streamed_and_name_the_bad_element() {
    let app = TestApp::spawn_with(|s| s.http.max_record_bytes = 1024).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let id = upload_job(&app, &key).await;
    let n = 60_000;
    let mut body = b"[".to_vec();
    for i in 0..n {
        body.extend_from_slice(if i == 0 { b"{}" } else { b",{}" });
    }
    body.push(b']');
    let res = app
        .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", "application/json")
        .body(chunked(body, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["accepted"], n);

    let big = format!(r#"[{{"a": 1}}, {{"blob": "{}"}}]"#, "x".repeat(2000));
    for (body, status, field) in [
        (
            r#"[{"a": 1}, 5, {"b": 2}]"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "records[1]",
        ),
        (big, StatusCode::UNPROCESSABLE_ENTITY, "records[1]"),
        (
            r#"[{"a": 1}, {"b": }]"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[1]",
        ),
        (
            r#"[{"a": 1}, {"b": 2}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[1]",
        ),
        (
            r#"{"a": 1}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "records[0]",
        ),
    ] {
        let res = app
            .tenant(&key, Method::POST, &format!("/api/v1/jobs/{id}/records"))
            .header("content-type", "application/json")
            .body(chunked(body.clone().into_bytes(), 7))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, status, &body).await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
    }
    let job = app.job(&key, &id).await;
    assert_eq!(
        job["progress"]["total"], n,
        "refused uploads add nothing: {job}"
    );
}

/// Made-up HTTP methods are counted under one `OTHER` label: a client cannot add metric
/// series without end (each label value was a new series for ever).
#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let app = TestApp::spawn().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("M{i:06}").as_bytes()).unwrap();
        let res = app.request(method, "/health").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        let _ = app
            .request(Method::GET, &format!("/no/such/route/{i}"))
            .send()
            .await
            .unwrap();
    }
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("M000001"),
        "a made-up method became a label"
    );
    assert!(
        !metrics.contains("/no/such/route"),
        "a raw path became a label"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("freight_http_requests_total") && l.contains("method=\"OTHER\"")),
        "{metrics}"
    );
    // Every series names a method of the fixed set (the recorder is the test process's,
    // shared with the other tests: count labels, not series).
    const METHODS: [&str; 8] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
    ];
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("freight_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        assert!(method.is_some_and(|m| METHODS.contains(&m)), "{line}");
    }
}

/// A body that sends one NDJSON line a second, forever.
fn trickle() -> reqwest::Body {
    let lines = futures::stream::unfold(0u64, |n| async move {
        if n > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("{{\"id\": {n}}}\n"))),
            n + 1,
        ))
    });
    reqwest::Body::wrap_stream(lines)
}

/// Tenant A trickles five uploads (a line every half second): two run at a time (its
/// share; the others wait their turn, then give up with a 429), and each that runs is cut
/// off with a 408 once a window passes below the minimum rate. Meanwhile tenant B's
/// upload goes straight through. (Before, A's tricklers held every upload slot and a
/// transaction each until the request timeout.)
#[tokio::test]
async fn a_trickling_tenant_does_not_hold_the_uploads_of_others() {
    use std::time::{Duration, Instant};
    let app = TestApp::spawn_with(|s| {
        s.http.min_body_rate_window = Duration::from_secs(2);
        s.http.tenant_max_uploads = 2;
    })
    .await;
    let (_, a) = app.tenant_with_key("trickler").await;
    let (_, b) = app.tenant_with_key("neighbour").await;
    let started = Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..5 {
        let id = upload_job(&app, &a).await;
        let req = app
            .tenant(&a, Method::POST, &format!("/api/v1/jobs/{id}/records"))
            .header("content-type", NDJSON)
            .body(trickle());
        tricklers.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            (res.status(), Instant::now())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B's upload, while A's are running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = upload_job(&app, &b).await;
    let records: String = (0..1000).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    let res = app
        .tenant(&b, Method::POST, &format!("/api/v1/jobs/{id}/records"))
        .header("content-type", NDJSON)
        .body(records)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let b_done = Instant::now();
    let mut cut = 0;
    for t in tricklers {
        let (status, at) = t.await.unwrap();
        match status {
            StatusCode::REQUEST_TIMEOUT => {
                assert!(
                    at > b_done,
                    "B's upload finished only after A's were cut off"
                );
                cut += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a trickling upload ended {other}"),
        }
    }
    assert!(cut >= 2, "{cut} tricklers cut off");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "cut off well before the request timeout"
    );
}

/// Opens the job's event stream as `key`; the response, headers read.
async fn events(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.tenant(key, Method::GET, &format!("/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
}

/// Reads a response to its end; false if it is still open after `limit`.
async fn ends_within(res: reqwest::Response, limit: std::time::Duration) -> bool {
    tokio::time::timeout(limit, res.bytes()).await.is_ok()
}

/// Event streams are capped per tenant (429 beyond), end after their maximum lifetime,
/// and end within seconds of their key's revocation or their tenant's suspension: a
/// stream is authorised when it opens, and without this it outlived both.
#[tokio::test]
async fn event_streams_are_capped_and_end_with_their_key() {
    use std::time::Duration;
    let app = TestApp::spawn_with(|s| s.http.tenant_max_streams = 2).await;
    let tenant = app.create_tenant("acme").await;
    let (key_id, key) = app.create_key(tenant, json!({})).await;
    let (_, other_key) = app.create_key(tenant, json!({})).await;
    // Jobs awaiting upload: their streams would never end by themselves.
    let job = upload_job(&app, &key).await;
    let first = events(&app, &key, &job).await;
    let second = events(&app, &other_key, &job).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = events(&app, &key, &job).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));

    app.revoke_key(key_id).await;
    assert!(
        ends_within(first, Duration::from_secs(5)).await,
        "the revoked key's stream goes on"
    );
    // The other key's stream is unaffected, until the tenant is suspended.
    app.patch_tenant(tenant, json!({"status": "suspended"}))
        .await;
    assert!(
        ends_within(second, Duration::from_secs(5)).await,
        "the suspended tenant's stream goes on"
    );
    app.patch_tenant(tenant, json!({"status": "active"})).await;

    // A stream ends after its lifetime; the client resumes with Last-Event-ID.
    let app = TestApp::spawn_with(|s| s.http.stream_max_lifetime = Duration::from_secs(1)).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let job = upload_job(&app, &key).await;
    let res = events(&app, &key, &job).await;
    let body = tokio::time::timeout(Duration::from_secs(5), res.text()).await;
    let body = body.expect("the stream outlived its lifetime").unwrap();
    let id = body
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .expect("an event")
        .trim()
        .to_owned();
    let res = app
        .tenant(&key, Method::GET, &format!("/api/v1/jobs/{job}/events"))
        .header("last-event-id", &id)
        .send()
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), res.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !again.contains("event: progress"),
        "nothing new since the resumed id: {again}"
    );
}

/// Slowloris: a client that sends its request head a byte at a time is disconnected once
/// `HTTP_HEADER_READ_TIMEOUT` passes (before, the connection stayed open for as long as
/// the client cared to keep it), and past `HTTP_MAX_CONNECTIONS` a new connection is not
/// served until an open one closes.
#[tokio::test]
async fn slow_heads_are_cut_off_and_connections_are_capped() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let app = TestApp::spawn_with(|s| {
        s.http.header_read_timeout = Duration::from_secs(1);
        s.http.max_connections = 3;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if slow.write_all(b"a").await.is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                // Whatever the server answered (a 408), it then closes.
                Ok(Ok(_)) | Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a slow head kept its connection for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Three connections that send nothing hold every slot...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), fourth.read_to_end(&mut answer)).await;
    assert!(
        early.is_err() && answer.is_empty(),
        "served past the connection limit"
    );
    // ...until one closes (or the server drops them, idle past the header timeout).
    drop(idle.pop());
    tokio::time::timeout(Duration::from_secs(5), fourth.read_to_end(&mut answer))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
