//! A small client for the agent's unix socket, used by `gpucost run` and `gpucost job`.
//!
//! Plain HTTP/1.1 over a `UnixStream`, one request per connection, with timeouts: the callers
//! are a job launcher and scheduler hooks, which must never hang on a stuck agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a call did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent not reachable at {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("agent at {path} refused ({status}): {message}")]
    Refused {
        path: String,
        status: u16,
        message: String,
    },
    #[error("bad answer from the agent at {path}: {source}")]
    BadAnswer {
        path: String,
        source: std::io::Error,
    },
    /// Connected, but no answer in time (an agent that is hung, or too busy).
    #[error("the agent at {path} did not answer within {} s: timed out", after.as_secs_f64())]
    TimedOut { path: String, after: Duration },
}

impl ClientError {
    /// Whether the agent did not get or did not take the request (so it may be sent again
    /// later): unreachable, or timed out (the agent drops a request whose caller stopped
    /// waiting, rather than apply it late).
    pub fn not_delivered(&self) -> bool {
        // 503: the agent was busy, shutting down, or did not answer in time; it dropped it.
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::TimedOut { .. }
                | ClientError::Refused { status: 503, .. }
        )
    }
}

/// Whether an I/O error is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` expiring reads as
/// `EAGAIN`, std's `WouldBlock`).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// POSTs `body` (JSON) to `url` over the socket and returns the JSON answer.
pub fn post(
    socket: &Path,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let path = socket.display().to_string();
    let unreachable = |source: std::io::Error| {
        if is_timeout(&source) {
            ClientError::TimedOut {
                path: path.clone(),
                after: timeout,
            }
        } else {
            ClientError::Unreachable {
                path: path.clone(),
                source,
            }
        }
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let body = body.to_string();
    let request = format!(
        "POST {url} HTTP/1.1\r\nHost: gpucost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    let bad = |source: std::io::Error| {
        if is_timeout(&source) {
            ClientError::TimedOut {
                path: path.clone(),
                after: timeout,
            }
        } else {
            ClientError::BadAnswer {
                path: path.clone(),
                source,
            }
        }
    };
    s.read_to_end(&mut raw).map_err(bad)?;
    let text = String::from_utf8_lossy(&raw);
    let invalid = |what: &str| {
        bad(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            what.to_string(),
        ))
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP header"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| invalid(&e.to_string()))?;
    if !(200..300).contains(&status) {
        let message = json["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string();
        return Err(ClientError::Refused {
            path,
            status,
            message,
        });
    }
    Ok(json)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
