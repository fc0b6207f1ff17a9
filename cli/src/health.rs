//! `freight health`: asks this host's own api (or, with `--worker`, worker) whether it
//! serves, for Docker's HEALTHCHECK, compose healthchecks and Kubernetes exec probes. The
//! runtime image has no curl, so this is a plain HTTP/1.1 `GET /health` over TCP.
//!
//! Exit status 0 when the answer is 200, 1 otherwise (no answer within the timeout, no
//! connection, any other status), with one line saying which. Never 2: Docker reserves it.
//! It reads only `HTTP_ADDR` or `WORKER_METRICS_ADDR`, never the rest of the settings, so
//! a probe cannot fail on configuration it does not use.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The api's listen address when `HTTP_ADDR` is unset (as in `Settings`).
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// The most of a response read: /health answers a few dozen bytes.
const MAX_RESPONSE: usize = 16 * 1024;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct HealthArgs {
    /// Ask the worker: GET /health on WORKER_METRICS_ADDR (default: the api, HTTP_ADDR).
    #[arg(long)]
    pub worker: bool,
    /// Ask this URL instead (http:// only), e.g. http://127.0.0.1:9091/health.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Seconds to wait for an answer, connecting included.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub timeout: f64,
}

/// `freight health`: probes, prints one line, and says healthy (0) or not (1).
pub async fn run(args: &HealthArgs) -> ExitCode {
    let probe = Target::from_args(args, |var| std::env::var(var).ok()).and_then(|target| {
        Duration::try_from_secs_f64(args.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .map(|timeout| (target, timeout))
            .ok_or_else(|| {
                format!(
                    "--timeout {}: not a positive number of seconds",
                    args.timeout
                )
            })
    });
    let outcome = match probe {
        Ok((target, timeout)) => check(&target, timeout).await,
        Err(message) => Outcome {
            healthy: false,
            message,
        },
    };
    if outcome.healthy {
        println!("freight health: {}", outcome.message);
    } else {
        eprintln!("freight health: {}", outcome.message);
    }
    outcome.exit_code()
}

/// What to connect to and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to; also the Host header.
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

impl Target {
    /// `--url` if given; else `/health` on `WORKER_METRICS_ADDR` (`--worker`) or on
    /// `HTTP_ADDR`, read with `env` (unset and blank are the same, as in `Settings`).
    pub fn from_args(
        args: &HealthArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, String> {
        if let Some(url) = &args.url {
            return Target::from_url(url);
        }
        let var = if args.worker {
            "WORKER_METRICS_ADDR"
        } else {
            "HTTP_ADDR"
        };
        let raw = env(var).filter(|v| !v.trim().is_empty());
        let raw = match (raw, args.worker) {
            (Some(raw), _) => raw,
            (None, false) => DEFAULT_HTTP_ADDR.to_owned(),
            (None, true) => {
                return Err(
                    "WORKER_METRICS_ADDR is not set, so this worker serves no /health \
                     (set it, e.g. 0.0.0.0:9091)"
                        .to_owned(),
                );
            }
        };
        let listen: SocketAddr = raw
            .trim()
            .parse()
            .map_err(|e| format!("{var} `{raw}`: {e}"))?;
        Ok(Target {
            authority: connect_addr(listen).to_string(),
            path: "/health".to_owned(),
        })
    }

    /// An `http://host[:port][/path]` URL. No TLS, no credentials: this is for the local
    /// process.
    fn from_url(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("--url `{url}`: {why}");
        let rest = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or("");
        if authority.contains('@') {
            return Err(bad("credentials are not supported"));
        }
        // Host, then an optional port; IPv6 addresses in brackets.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
            _ => (authority, ""),
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        if host.contains(['[', ']']) && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("malformed IPv6 address"));
        }
        let port: u16 = match port {
            "" => 80,
            p => p.parse().map_err(|_| bad("the port is not a number"))?,
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('/') => p.to_owned(),
            p => format!("/{p}"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("the path has spaces or control characters"));
        }
        Ok(Target {
            authority: format!("{host}:{port}"),
            path,
        })
    }
}

/// Where to connect to reach a process listening on `listen`: a wildcard listen address
/// (0.0.0.0, [::]) means "every interface", so ask on loopback.
fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The verdict, and the line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub healthy: bool,
    pub message: String,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        if self.healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// GETs `target` and judges the answer: healthy only on a 200 within `timeout`.
pub async fn check(target: &Target, timeout: Duration) -> Outcome {
    match get_status(target, Instant::now() + timeout).await {
        Ok((200, _)) => Outcome {
            healthy: true,
            message: format!("{target} answered 200"),
        },
        Ok((code, reason)) => Outcome {
            healthy: false,
            message: format!("{target} answered {code} {reason}")
                .trim_end()
                .to_owned(),
        },
        Err(why) => Outcome {
            healthy: false,
            message: format!("{target}: {why}"),
        },
    }
}

/// The status code and reason phrase of `GET target`, all before `deadline`.
async fn get_status(target: &Target, deadline: Instant) -> Result<(u16, String), String> {
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    let started = Instant::now();
    let late = || format!("no answer within {}", secs(deadline - started));
    let mut stream = timeout_at(deadline, TcpStream::connect(target.authority.as_str()))
        .await
        .map_err(|_| late())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: freight-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
    );
    timeout_at(deadline, stream.write_all(request.as_bytes()))
        .await
        .map_err(|_| late())?
        .map_err(|e| format!("cannot send the request: {e}"))?;

    // Read the whole (small) response, so closing the connection resets nothing the
    // server is still writing; the status line alone decides.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    let mut status = None;
    loop {
        if status.is_none() {
            status = parse_status_line(&buf)?;
        }
        if buf.len() >= MAX_RESPONSE || status.is_some() && response_complete(&buf) {
            break;
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) if status.is_some() => break,
            Err(_) => return Err(late()),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) if status.is_some() => break,
            Ok(Err(e)) => return Err(format!("the connection failed: {e}")),
        }
    }
    match status.or(parse_status_line(&buf)?) {
        Some(status) => Ok(status),
        None if buf.is_empty() => Err("the connection closed without an answer".to_owned()),
        None => Err("the answer is not HTTP".to_owned()),
    }
}

/// `HTTP/1.x NNN reason` once the first line is in; `None` while it is not.
fn parse_status_line(buf: &[u8]) -> Result<Option<(u16, String)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_RESPONSE {
            Err("the answer is not HTTP".to_owned())
        } else {
            Ok(None)
        };
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let reason = parts.next().unwrap_or("").trim().to_owned();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("the answer is not HTTP: {:?}", truncate(&line, 80)));
    }
    let code = code
        .parse()
        .map_err(|_| format!("the answer is not HTTP: {:?}", truncate(&line, 80)))?;
    Ok(Some((code, reason)))
}

/// Headers in, and the body too when a Content-Length says how long it is.
fn response_complete(buf: &[u8]) -> bool {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let length = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(length) => buf.len() >= head_end + 4 + length,
        // Chunked or close-delimited: read on until the server closes (or the deadline).
        None => false,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokio::net::TcpListener;

    fn args(worker: bool, url: Option<&str>) -> HealthArgs {
        HealthArgs {
            worker,
            url: url.map(str::to_owned),
            timeout: 3.0,
        }
    }

    fn target(args: &HealthArgs, vars: &[(&str, &str)]) -> Result<Target, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target::from_args(args, |var| vars.get(var).cloned())
    }

    fn local(port: u16) -> Target {
        Target {
            authority: format!("127.0.0.1:{port}"),
            path: "/health".to_owned(),
        }
    }

    /// A one-connection server: reads the request, sends it back on the channel, then
    /// answers `response` (or, with `None`, holds the connection open in silence).
    async fn serve_once(
        response: Option<&'static str>,
    ) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
            match response {
                Some(response) => {
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                }
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn a_200_is_healthy_and_exits_0() {
        let (port, request) = serve_once(Some(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
        ))
        .await;
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(outcome.healthy, "{outcome:?}");
        assert_eq!(outcome.exit_code(), ExitCode::SUCCESS);
        assert_eq!(
            outcome.message,
            format!("http://127.0.0.1:{port}/health answered 200")
        );
        let request = request.await.unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_200_without_content_length_is_healthy_too() {
        // The worker's /health: "ok" as plain text; here close-delimited.
        let (port, _request) = serve_once(Some("HTTP/1.1 200 OK\r\n\r\nok")).await;
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(outcome.healthy, "{outcome:?}");
    }

    #[tokio::test]
    async fn a_503_is_unhealthy_and_exits_1() {
        let (port, _request) = serve_once(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        ))
        .await;
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(!outcome.healthy);
        assert_eq!(outcome.exit_code(), ExitCode::FAILURE);
        assert_eq!(
            outcome.message,
            format!("http://127.0.0.1:{port}/health answered 503 Service Unavailable")
        );
    }

    #[tokio::test]
    async fn other_statuses_are_unhealthy() {
        for response in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 301 Moved Permanently\r\nlocation: /\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ] {
            let (port, _request) = serve_once(Some(response)).await;
            let outcome = check(&local(port), Duration::from_secs(3)).await;
            assert!(!outcome.healthy, "{response:?}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn silence_is_unhealthy_within_the_timeout() {
        let (port, _request) = serve_once(None).await;
        let started = std::time::Instant::now();
        let outcome = check(&local(port), Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(!outcome.healthy);
        assert_eq!(outcome.exit_code(), ExitCode::FAILURE);
        assert!(
            outcome.message.ends_with("no answer within 0.3s"),
            "{outcome:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[tokio::test]
    async fn a_closed_connection_or_garbage_is_unhealthy() {
        let (port, _request) = serve_once(Some("")).await;
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(!outcome.healthy);
        assert!(
            outcome.message.ends_with("closed without an answer"),
            "{outcome:?}"
        );

        let (port, _request) = serve_once(Some("SSH-2.0-OpenSSH_9.2\r\n")).await;
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(!outcome.healthy);
        assert!(outcome.message.contains("not HTTP"), "{outcome:?}");
    }

    #[tokio::test]
    async fn nobody_listening_is_unhealthy() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let outcome = check(&local(port), Duration::from_secs(3)).await;
        assert!(!outcome.healthy);
        assert_eq!(outcome.exit_code(), ExitCode::FAILURE);
        assert!(outcome.message.contains("cannot connect"), "{outcome:?}");
    }

    #[test]
    fn the_api_by_default_on_loopback_for_a_wildcard_address() {
        let api = args(false, None);
        assert_eq!(
            target(&api, &[]).unwrap().to_string(),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            target(&api, &[("HTTP_ADDR", "  ")]).unwrap().to_string(),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            target(&api, &[("HTTP_ADDR", "0.0.0.0:8080")])
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            target(&api, &[("HTTP_ADDR", "[::]:8081")])
                .unwrap()
                .to_string(),
            "http://[::1]:8081/health"
        );
        assert_eq!(
            target(&api, &[("HTTP_ADDR", "10.1.2.3:80")])
                .unwrap()
                .to_string(),
            "http://10.1.2.3:80/health"
        );
        let err = target(&api, &[("HTTP_ADDR", "nowhere")]).unwrap_err();
        assert!(err.starts_with("HTTP_ADDR `nowhere`"), "{err}");
        // The worker's variable is not the api's.
        assert_eq!(
            target(&api, &[("WORKER_METRICS_ADDR", "0.0.0.0:9091")])
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/health"
        );
    }

    #[test]
    fn the_worker_on_its_metrics_address() {
        let worker = args(true, None);
        assert_eq!(
            target(
                &worker,
                &[
                    ("WORKER_METRICS_ADDR", "0.0.0.0:9091"),
                    ("HTTP_ADDR", "0.0.0.0:8080")
                ]
            )
            .unwrap()
            .to_string(),
            "http://127.0.0.1:9091/health"
        );
        let err = target(&worker, &[("HTTP_ADDR", "0.0.0.0:8080")]).unwrap_err();
        assert!(err.starts_with("WORKER_METRICS_ADDR is not set"), "{err}");
        let err = target(&worker, &[("WORKER_METRICS_ADDR", "9091")]).unwrap_err();
        assert!(err.starts_with("WORKER_METRICS_ADDR `9091`"), "{err}");
    }

    #[test]
    fn a_url_overrides_the_environment() {
        let vars = [
            ("HTTP_ADDR", "0.0.0.0:1"),
            ("WORKER_METRICS_ADDR", "0.0.0.0:2"),
        ];
        for (url, want) in [
            (
                "http://127.0.0.1:9091/health",
                "http://127.0.0.1:9091/health",
            ),
            (
                "HTTP://localhost:8080/ready?x=1#top",
                "http://localhost:8080/ready?x=1",
            ),
            ("http://localhost", "http://localhost:80/"),
            ("http://[::1]:8080/health", "http://[::1]:8080/health"),
            ("http://[::1]/health", "http://[::1]:80/health"),
        ] {
            for worker in [false, true] {
                let got = target(&args(worker, Some(url)), &vars).unwrap();
                assert_eq!(got.to_string(), want, "{url}");
            }
        }
        for url in [
            "https://127.0.0.1/health",
            "127.0.0.1:8080/health",
            "http://",
            "http://:8080/",
            "http://u:p@127.0.0.1/",
            "http://127.0.0.1:http/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1/a b",
        ] {
            assert!(target(&args(false, Some(url)), &vars).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_bad_timeout_or_address_exits_1_not_2() {
        // Docker reserves exit status 2; configuration errors are plain failures.
        let bad_timeout = HealthArgs {
            timeout: 0.0,
            ..args(false, Some("http://127.0.0.1:1/"))
        };
        assert_eq!(run(&bad_timeout).await, ExitCode::FAILURE);
        let bad_url = args(false, Some("ftp://127.0.0.1/"));
        assert_eq!(run(&bad_url).await, ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn run_exits_0_on_a_200() {
        let (port, _request) =
            serve_once(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(run(&args(true, Some(&url))).await, ExitCode::SUCCESS);
    }
}
