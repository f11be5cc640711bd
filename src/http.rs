//! L5: the operations HTTP endpoint — `/metrics`, `/healthz`, `/readyz`,
//! `/api/registrations`, `/api/calls` (`spec/interface.md`, "HTTP").
//!
//! A hand-written HTTP/1.1 server on tokio rather than a framework: it serves a few
//! fixed GET/HEAD routes with no request bodies, so a bounded request-head reader and a
//! response writer are all it needs, and it adds no dependency (hyper, axum) to a
//! switch whose hot path does not use them.
//!
//! Behaviour:
//! - Request heads are capped at [`MAX_HEAD_BYTES`] (431 and close beyond it) and must
//!   arrive within [`READ_TIMEOUT`] (the connection is closed otherwise, which is also
//!   the idle timeout of a kept-alive connection).
//! - HTTP/1.1 keep-alive is supported, pipelining included; `Connection: close`,
//!   HTTP/1.0, a malformed request or a request that announces a body ends the
//!   connection after the response.
//! - One task per connection, at most [`MAX_CONNECTIONS`] at once: the accept loop
//!   waits for a permit before accepting, so excess clients queue in the kernel backlog
//!   (MR `src/server.rs`).
//! - Unknown paths get 404; methods other than GET and HEAD get 405 with `Allow`.
//! - `/readyz` is 503 while starting, draining, or while CDR writes fail and CDRs wait
//!   for a retry, its body saying which ([`HttpState::not_ready`]); `/metrics` reads the
//!   CDR writer's counters at each scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a connection may take to deliver a complete request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The Content-Type of `/metrics` (Prometheus text exposition format).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the API endpoints report. Implemented by the layer that owns registrations and
/// calls; each method returns a JSON array and must not include passwords or digest
/// material.
pub trait ApiSource: Send + Sync {
    /// `GET /api/registrations`: the current bindings, as a JSON array.
    fn registrations(&self) -> serde_json::Value;
    /// `GET /api/calls`: the current calls, as a serialized JSON array (written directly:
    /// with thousands of calls up, a `serde_json::Value` tree would be megabytes of garbage).
    fn calls(&self) -> Vec<u8>;
}

/// An [`ApiSource`] with nothing to report (two empty arrays).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyApi;

impl ApiSource for EmptyApi {
    fn registrations(&self) -> serde_json::Value {
        serde_json::Value::Array(Vec::new())
    }
    fn calls(&self) -> Vec<u8> {
        b"[]".to_vec()
    }
}

/// What the HTTP server reads; shared with whoever flips the flags.
pub struct HttpState {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set once every SIP listener is bound; `/readyz` is 503 until then.
    pub ready: AtomicBool,
    /// Set when shutdown begins; `/readyz` is 503 from then on.
    pub draining: AtomicBool,
    /// Answers `/api/registrations` and `/api/calls`.
    pub api: Arc<dyn ApiSource + Send + Sync>,
    /// The CDR writer's counters: exported with `/metrics`, and `/readyz` is 503 while
    /// CDRs wait for a retry after a failed write.
    pub billing: Option<Arc<softswitch_actors::billing::BillingCounters>>,
}

impl HttpState {
    /// A state that is neither ready nor draining.
    pub fn new(metrics: PrometheusHandle, api: Arc<dyn ApiSource + Send + Sync>) -> Self {
        HttpState {
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            api,
            billing: None,
        }
    }

    /// The same state, reporting the CDR writer with these counters.
    pub fn with_billing(
        mut self,
        counters: Arc<softswitch_actors::billing::BillingCounters>,
    ) -> Self {
        self.billing = Some(counters);
        self
    }

    /// Marks every listener bound: `/readyz` turns 200 (unless draining).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the start of shutdown: `/readyz` turns 503 for good.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// True when `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why `/readyz` answers 503, as its body says it; `None` when ready. CDRs that
    /// could not be written (a full disk) make the switch unready until they are on disk:
    /// every call attempt's end waits for its CDR meanwhile, so a load balancer should
    /// send new calls elsewhere.
    pub fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining\n".into());
        }
        if !self.ready.load(Ordering::Acquire) {
            return Some("starting\n".into());
        }
        let b = self.billing.as_ref()?;
        b.failing.load(Ordering::Relaxed).then(|| {
            format!(
                "cdr write failing: {} CDRs not on disk yet, retrying (last error: {})\n",
                b.pending.load(Ordering::Relaxed),
                b.last_error().unwrap_or_default()
            )
        })
    }
}

/// Serves HTTP on `listener` until the process ends (or the future is dropped).
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = match permits.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; if it were, serving would be over.
            Err(_) => return,
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &state).await {
                        tracing::debug!(%peer, error = %e, "http connection ended");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `softswitch --healthcheck TARGET` for a container HEALTHCHECK without curl:
/// `TARGET` is `http://host:port/path`, `host:port/path` or `host:port` (path
/// `/healthz`). Sends one GET with a 3 s deadline and returns 0 on a 200, else 1
/// (Docker's "healthy" / "unhealthy").
pub fn healthcheck(target: &str) -> i32 {
    match probe(target) {
        Ok(200) => 0,
        Ok(status) => {
            eprintln!("unhealthy: HTTP {status}");
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            1
        }
    }
}

fn probe(target: &str) -> std::io::Result<u16> {
    use std::io::{Error, ErrorKind};
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/healthz"),
    };
    let addr: SocketAddr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no address"))?;
    let deadline = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, deadline)?;
    s.set_read_timeout(Some(deadline))?;
    s.set_write_timeout(Some(deadline))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    line.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "not an HTTP response"))
}

/// One parsed request head: only what routing needs.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    keep_alive: bool,
    has_body: bool,
}

enum HeadError {
    TooLarge,
    Malformed,
}

async fn connection(mut stream: tokio::net::TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let end = loop {
            if let Some(i) = find_head_end(&buf) {
                break i;
            }
            if buf.len() >= MAX_HEAD_BYTES {
                let r = response(
                    431,
                    "text/plain",
                    b"request head too large\n".to_vec(),
                    false,
                );
                return write(&mut stream, r, true).await;
            }
            let mut chunk = [0u8; 2048];
            let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()), // idle or slow: close
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if end > MAX_HEAD_BYTES {
            let r = response(
                431,
                "text/plain",
                b"request head too large\n".to_vec(),
                false,
            );
            return write(&mut stream, r, true).await;
        }
        let head = parse_head(&buf[..end]);
        buf.drain(..end);
        let (reply, close) = match head {
            Ok(h) => {
                let close = !h.keep_alive || h.has_body;
                (route(&h, state, !close), close)
            }
            Err(HeadError::Malformed) | Err(HeadError::TooLarge) => (
                response(400, "text/plain", b"bad request\n".to_vec(), false),
                true,
            ),
        };
        write(&mut stream, reply, false).await?;
        if close {
            return stream.shutdown().await;
        }
    }
}

async fn write(
    stream: &mut tokio::net::TcpStream,
    bytes: Vec<u8>,
    shutdown: bool,
) -> std::io::Result<()> {
    stream.write_all(&bytes).await?;
    if shutdown {
        stream.shutdown().await?;
    }
    Ok(())
}

/// The offset just past the blank line ending the head, if it is buffered.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(bytes: &[u8]) -> Result<Head, HeadError> {
    if bytes.len() > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HeadError::Malformed),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed);
    }
    let mut has_body = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            has_body = true;
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Head {
        method: method.to_string(),
        path,
        keep_alive,
        has_body,
    })
}

fn route(head: &Head, state: &HttpState, keep_alive: bool) -> Vec<u8> {
    let known = matches!(
        head.path.as_str(),
        "/healthz" | "/readyz" | "/metrics" | "/api/registrations" | "/api/calls"
    );
    if !known {
        return finish(
            head,
            response(404, "text/plain", b"not found\n".to_vec(), keep_alive),
        );
    }
    if head.method != "GET" && head.method != "HEAD" {
        return response(
            405,
            "text/plain",
            b"method not allowed\n".to_vec(),
            keep_alive,
        );
    }
    let r = match head.path.as_str() {
        "/healthz" => response(200, "text/plain", b"ok\n".to_vec(), keep_alive),
        "/readyz" => match state.not_ready() {
            None => response(200, "text/plain", b"ready\n".to_vec(), keep_alive),
            Some(why) => response(503, "text/plain", why.into_bytes(), keep_alive),
        },
        "/metrics" => {
            if let Some(b) = &state.billing {
                crate::metrics::cdr_writer(b);
            }
            response(
                200,
                METRICS_CONTENT_TYPE,
                state.metrics.render().into_bytes(),
                keep_alive,
            )
        }
        "/api/registrations" => json(&state.api.registrations(), keep_alive),
        _ => json_body(state.api.calls(), keep_alive),
    };
    finish(head, r)
}

/// For HEAD, keeps the head (with the GET's Content-Length) and drops the body.
fn finish(head: &Head, mut r: Vec<u8>) -> Vec<u8> {
    if head.method == "HEAD" {
        if let Some(end) = find_head_end(&r) {
            r.truncate(end);
        }
    }
    r
}

fn json(value: &serde_json::Value, keep_alive: bool) -> Vec<u8> {
    json_body(
        serde_json::to_vec(value).unwrap_or_else(|_| b"[]".to_vec()),
        keep_alive,
    )
}

fn json_body(mut body: Vec<u8>, keep_alive: bool) -> Vec<u8> {
    body.push(b'\n');
    response(200, "application/json", body, keep_alive)
}

fn response(status: u16, content_type: &str, body: Vec<u8>, keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(5);

    struct FakeApi;
    impl ApiSource for FakeApi {
        fn registrations(&self) -> serde_json::Value {
            serde_json::json!([{"aor": "sip:alice@example.test", "contact": "sip:alice@127.0.0.1:5062"}])
        }
        fn calls(&self) -> Vec<u8> {
            b"[]".to_vec()
        }
    }

    async fn start() -> (SocketAddr, Arc<HttpState>) {
        let recorder = crate::metrics::builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || crate::metrics::register_all("test"));
        let state = Arc::new(HttpState::new(handle, Arc::new(FakeApi)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(serve(listener, state.clone()));
        (addr, state)
    }

    /// Sends raw bytes and reads until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("server closes in time")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        exchange(
            addr,
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    }

    fn status(resp: &str) -> &str {
        resp.get(9..12).unwrap_or("")
    }

    fn body(resp: &str) -> &str {
        resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let (addr, _) = start().await;
        let r = get(addr, "GET", "/healthz").await;
        assert_eq!(status(&r), "200", "{r}");
        assert_eq!(body(&r), "ok\n");
        assert!(r.contains("Connection: close\r\n"));
    }

    #[tokio::test]
    async fn readyz_follows_ready_and_draining() {
        let (addr, state) = start().await;
        let r = get(addr, "GET", "/readyz").await;
        assert_eq!((status(&r), body(&r)), ("503", "starting\n"));
        state.set_ready();
        assert_eq!(status(&get(addr, "GET", "/readyz").await), "200");
        state.set_draining();
        let r = get(addr, "GET", "/readyz").await;
        assert_eq!((status(&r), body(&r)), ("503", "draining\n"));
    }

    #[tokio::test]
    async fn metrics_renders_prometheus_text() {
        let (addr, _) = start().await;
        let r = get(addr, "GET", "/metrics?x=1").await;
        assert_eq!(status(&r), "200");
        assert!(
            r.contains("Content-Type: text/plain; version=0.0.4\r\n"),
            "{r}"
        );
        assert!(
            body(&r).contains("softswitch_build_info{version=\"test\"} 1"),
            "{r}"
        );
        assert!(
            body(&r).contains("softswitch_call_setup_duration_seconds_bucket"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn api_endpoints_return_json_arrays() {
        let (addr, _) = start().await;
        let r = get(addr, "GET", "/api/registrations").await;
        assert_eq!(status(&r), "200");
        assert!(r.contains("Content-Type: application/json\r\n"));
        let v: serde_json::Value = serde_json::from_str(body(&r)).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(1));
        let r = get(addr, "GET", "/api/calls").await;
        assert_eq!(body(&r), "[]\n");
    }

    #[tokio::test]
    async fn head_has_length_but_no_body() {
        let (addr, _) = start().await;
        let r = get(addr, "HEAD", "/healthz").await;
        assert_eq!(status(&r), "200");
        assert!(r.contains("Content-Length: 3\r\n"), "{r}");
        assert_eq!(body(&r), "");
    }

    #[tokio::test]
    async fn unknown_path_and_method() {
        let (addr, _) = start().await;
        assert_eq!(status(&get(addr, "GET", "/nope").await), "404");
        let r = get(addr, "POST", "/metrics").await;
        assert_eq!(status(&r), "405");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        assert_eq!(status(&get(addr, "DELETE", "/api/calls").await), "405");
    }

    #[tokio::test]
    async fn keep_alive_serves_pipelined_requests() {
        let (addr, _) = start().await;
        let r = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(r.matches("HTTP/1.1 ").count(), 2, "{r}");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Connection: keep-alive\r\n"));
        assert!(r.contains("HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[tokio::test]
    async fn http10_closes_after_one_response() {
        let (addr, _) = start().await;
        let r = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert_eq!(status(&r), "200");
        assert!(r.contains("Connection: close\r\n"));
    }

    #[tokio::test]
    async fn oversized_head_gets_431_and_close() {
        let (addr, _) = start().await;
        let mut req = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        req.resize(req.len() + MAX_HEAD_BYTES + 10, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        let r = exchange(addr, &req).await;
        assert_eq!(status(&r), "431", "{r}");
    }

    #[tokio::test]
    async fn malformed_requests_get_400() {
        let (addr, _) = start().await;
        for req in [
            &b"garbage\r\n\r\n"[..],
            b"GET /healthz HTTP/2.0\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
            b"get /healthz HTTP/1.1\r\n\r\n",
            b"GET  /healthz HTTP/1.1\r\n\r\n",
            b"\xff\xfe /healthz HTTP/1.1\r\n\r\n",
        ] {
            let r = exchange(addr, req).await;
            assert_eq!(status(&r), "400", "{req:?} -> {r}");
        }
    }

    #[tokio::test]
    async fn request_with_body_is_answered_then_closed() {
        let (addr, _) = start().await;
        let r = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(status(&r), "200");
        assert!(r.contains("Connection: close\r\n"));
    }

    #[tokio::test]
    async fn healthcheck_helper_reports_status() {
        let (addr, _) = start().await;
        let target = format!("http://{addr}/healthz");
        let ok = tokio::task::spawn_blocking(move || healthcheck(&target));
        assert_eq!(
            timeout(DEADLINE, ok).await.expect("in time").expect("join"),
            0
        );
        let target = format!("{addr}/readyz");
        let not_ready = tokio::task::spawn_blocking(move || healthcheck(&target));
        assert_eq!(
            timeout(DEADLINE, not_ready)
                .await
                .expect("in time")
                .expect("join"),
            1
        );
        let bare = addr.to_string();
        let default_path = tokio::task::spawn_blocking(move || healthcheck(&bare));
        assert_eq!(
            timeout(DEADLINE, default_path)
                .await
                .expect("in time")
                .expect("join"),
            0
        );
    }

    #[test]
    fn healthcheck_of_closed_port_is_unhealthy() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        assert_eq!(healthcheck(&format!("127.0.0.1:{port}")), 1);
    }
}
