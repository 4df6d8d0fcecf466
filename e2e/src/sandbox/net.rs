//! Loopback ports and a minimal HTTP/1.1 client for probing the fleet.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// Lowest port handed to a backend; below it sit well-known and registered services.
const BACKEND_PORT_FLOOR: u16 = 20000;

/// Ports handed out by this process, so that sandboxes started side by side (parallel tests) never share one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// First port of the kernel's ephemeral range: outgoing connections take their local port from there.
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|low| low.parse().ok()))
        .filter(|low: &u16| *low > BACKEND_PORT_FLOOR + 1000)
        .unwrap_or(32768)
}

/// A loopback port for a backend that must be bindable again after every reboot.
///
/// It comes from below the ephemeral range: a port from that range may be taken by some outgoing connection
/// (HAProxy's own, the load generator's) while the instance is down, and the backend could not come back.
pub(crate) fn pick_backend_port() -> anyhow::Result<u16> {
    let ceiling = ephemeral_floor();
    let mut taken = handed_out()
        .lock()
        .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
    for _ in 0..500 {
        let port = fastrand::u16(BACKEND_PORT_FLOOR..ceiling);
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    bail!("found no free loopback port in {BACKEND_PORT_FLOOR}..{ceiling}")
}

/// A free loopback port chosen by the kernel, for a listener that binds once (HAProxy's frontend).
pub(crate) fn pick_free_port() -> anyhow::Result<u16> {
    let mut taken = handed_out()
        .lock()
        .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
    for _ in 0..50 {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
        let port = listener
            .local_addr()
            .context("local address of a fresh listener")?
            .port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
    bail!("the kernel kept offering ports already handed out")
}

/// Gives ports back once their sandbox is gone.
pub(crate) fn release_ports(ports: &[u16]) {
    if let Ok(mut taken) = handed_out().lock() {
        for port in ports {
            taken.remove(port);
        }
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub(crate) async fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    matches!(
        timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Waits until `127.0.0.1:port` accepts connections, or `limit` has passed.
pub(crate) async fn wait_until_accepting(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if accepts(port).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// A response read by [`http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body as text (lossy UTF-8).
    pub body: String,
}

/// Sends one `GET path` to `addr`; see [`http_request`].
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<SimpleResponse> {
    http_request(addr, "GET", path, None).await
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response; `body` is
/// `(content type, bytes)`.
///
/// Deliberately minimal (no chunked decoding, no keep-alive): enough to probe the frontend, a backend or the admin
/// paths in tests without pulling an HTTP client into the sandbox. Fails after 5 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<SimpleResponse> {
    timeout(Duration::from_secs(5), http_request_inner(addr, method, path, body))
        .await
        .with_context(|| format!("{method} http://{addr}{path} timed out"))?
}

async fn http_request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<SimpleResponse> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((content_type, bytes)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("send request head")?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).await.context("send request body")?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.context("read response")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("response without a header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok(SimpleResponse {
        status,
        body: body.to_owned(),
    })
}
