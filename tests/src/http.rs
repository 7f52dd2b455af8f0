//! Blocking HTTP helpers for tests, over `reqwest`'s blocking client: GET and POST to servers
//! on loopback, polling, and reading Prometheus text.
//!
//! The blocking client runs its own runtime thread, so call these from plain threads or
//! `spawn_blocking`, never straight from an async task.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::Client;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status code, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// The one client every helper shares. No connection pool (each request opens and closes its
/// own connection, so servers that count or cap connections see only the test's own), no
/// proxy from the environment, no redirects followed.
fn client() -> io::Result<&'static Client> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // The workspace builds reqwest without a default crypto provider; an error only
            // means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(0)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| error_chain(&e))
        })
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot build the test HTTP client: {e}")))
}

/// An error and its sources, `: `-separated (reqwest's own message names only the URL).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The kind of the innermost I/O error under `e` (`ConnectionRefused` when nothing listens),
/// else `Other`.
fn io_kind(e: &reqwest::Error) -> io::ErrorKind {
    let mut source = std::error::Error::source(e);
    let mut kind = io::ErrorKind::Other;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            kind = io.kind();
        }
        source = s.source();
    }
    kind
}

/// Sends a request to `127.0.0.1:port` and reads the whole response; `Err` if nothing listens,
/// if the request cannot be sent, or if no answer comes within 30 s.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("method {method:?}: {e}"),
        )
    })?;
    let mut builder = client()?.request(method, &url).body(body.to_vec());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let fail = |e: reqwest::Error| io::Error::new(io_kind(&e), error_chain(&e));
    let response = builder.send().map_err(fail)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
            )
        })
        .collect();
    let body = response.bytes().map_err(fail)?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GET `path`; panics if nothing listens.
pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"))
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the first sample whose line starts with `series` (name and labels, exactly).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let v = rest.strip_prefix(' ')?;
        v.trim().parse().ok()
    })
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay as they are).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k1=v1&k2=v2`, values percent-encoded.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// Seconds since the Unix epoch, as a float.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// Serves one request with `answer` and returns what it received: the request line, the
    /// headers (lower-cased names) and the body.
    fn serve_once(
        answer: &'static str,
    ) -> (u16, std::thread::JoinHandle<(String, Vec<String>, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length: ") {
                    length = v.parse().unwrap();
                }
                headers.push(h);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            (&stream).write_all(answer.as_bytes()).unwrap();
            (
                line.trim_end().to_string(),
                headers,
                String::from_utf8(body).unwrap(),
            )
        });
        (port, handle)
    }

    #[test]
    fn request_sends_method_path_headers_and_body_and_reads_the_answer() {
        let (port, server) = serve_once(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Two: a\r\nX-Two: b\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
        );
        let r = request(
            port,
            "POST",
            "/api/v2/alerts?x=1",
            &[
                ("Authorization", "Bearer t"),
                ("Content-Type", "application/json"),
            ],
            b"[1,2]",
        )
        .unwrap();
        let (line, headers, body) = server.join().unwrap();
        assert_eq!(line, "POST /api/v2/alerts?x=1 HTTP/1.1");
        assert!(
            headers.contains(&"authorization: bearer t".to_string()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&format!("host: 127.0.0.1:{port}")),
            "{headers:?}"
        );
        assert_eq!(body, "[1,2]");
        assert_eq!(r.status, 201);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("x-two"), Some("a"));
        assert_eq!(
            r.headers.iter().filter(|(k, _)| k == "x-two").count(),
            2,
            "{:?}",
            r.headers
        );
        assert_eq!(r.json()["ok"], true);
    }

    #[test]
    fn redirects_are_returned_not_followed() {
        let (port, server) =
            serve_once("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n");
        let r = request(port, "GET", "/", &[], b"").unwrap();
        assert_eq!(server.join().unwrap().0, "GET / HTTP/1.1");
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("/elsewhere"));
        assert_eq!(r.body, "");
    }

    #[test]
    fn nothing_listening_is_a_connection_refused_error_naming_the_url() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = request(port, "GET", "/metrics", &[], b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("http://127.0.0.1:{port}/metrics")),
            "{text}"
        );
        assert!(text.contains("onnection refused"), "{text}");
    }

    #[test]
    fn a_bad_method_is_an_invalid_input_error() {
        let err = request(1, "GE T", "/", &[], b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().starts_with("method \"GE T\""), "{err}");
    }
}
