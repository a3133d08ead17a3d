//! Telling systemd how the agent is doing (`sd_notify`), without libsystemd: readiness, a status
//! line, the watchdog keep-alive and the start of shutdown, as datagrams to `$NOTIFY_SOCKET`.
//!
//! Every function is a no-op returning `Ok(())` when the agent was not started by systemd with
//! `Type=notify` (no `$NOTIFY_SOCKET`), and callers ignore errors: a lost notification must
//! never stop the agent. The protocol is the one in `sd_notify(3)`: newline-separated
//! `KEY=VALUE` assignments in one datagram to a unix socket given by path, or by abstract name
//! when it starts with `@`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The variable systemd sets to the socket it listens on.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the agent is up (listening on its ports), with a status line for
/// `systemctl status`. Call once, after the TCP listener and the job socket are bound.
pub fn ready(status_line: &str) -> io::Result<()> {
    notify(&format!("READY=1\nSTATUS={}", one_line(status_line)))
}

/// Replaces the status line `systemctl status` shows.
pub fn status(status_line: &str) -> io::Result<()> {
    notify(&format!("STATUS={}", one_line(status_line)))
}

/// Tells systemd the agent is shutting down (so `systemctl status` says "deactivating" while the
/// ledger is flushed).
pub fn stopping() -> io::Result<()> {
    notify("STOPPING=1\nSTATUS=shutting down")
}

/// Keeps the watchdog from firing. Call every [`watchdog_interval`], and only while the agent
/// is healthy (its sampler publishes fresh snapshots): if the pings stop for `WatchdogSec`,
/// systemd kills and restarts the agent.
pub fn watchdog() -> io::Result<()> {
    notify("WATCHDOG=1")
}

/// How often to call [`watchdog`]: half of the unit's `WatchdogSec`, or `None` when systemd
/// expects no pings (no watchdog configured, or it is meant for another process).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] over given variable values, for tests (the environment is
/// process-global, so tests do not set it).
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    // WATCHDOG_PID, when set, names the process the watchdog is for; a child that inherited the
    // variables must not ping on its parent's behalf.
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `message` to `$NOTIFY_SOCKET`, if it is set.
fn notify(message: &str) -> io::Result<()> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => send(&socket.to_string_lossy(), message),
        None => Ok(()),
    }
}

/// Sends one datagram to the notification socket `socket`: a filesystem path, or an abstract
/// socket name when it starts with `@`.
fn send(socket: &str, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
    } else if socket.starts_with('/') {
        sock.send_to(message.as_bytes(), socket)?;
    } else {
        // sd_notify(3) accepts only absolute paths and abstract names (and vsock, which the
        // agent does not need); anything else is a misconfiguration, not ours to guess at.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={socket:?} is neither an absolute path nor @abstract"),
        ));
    }
    Ok(())
}

/// A status line is one assignment: a newline would start another.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let path = path.to_str().unwrap();

        send(path, "READY=1\nSTATUS=listening").unwrap();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=listening");
        send(path, "WATCHDOG=1").unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("gpucost-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();

        send(&format!("@{name}"), "STOPPING=1").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn a_missing_or_odd_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nobody-listens.sock");
        assert!(send(gone.to_str().unwrap(), "READY=1").is_err());
        assert!(send("relative/path.sock", "READY=1").is_err());
    }

    #[test]
    fn status_lines_stay_one_assignment() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        let check = |usec, pid, expected: Option<Duration>| {
            assert_eq!(
                watchdog_interval_from(usec, pid, 42),
                expected,
                "WATCHDOG_USEC={usec:?} WATCHDOG_PID={pid:?}"
            );
        };
        check(Some("30000000"), None, Some(Duration::from_secs(15)));
        check(Some("30000000"), Some("42"), Some(Duration::from_secs(15)));
        check(Some("1000"), Some("42"), Some(Duration::from_micros(500)));
        // For another process, not configured, disabled or garbled: no pings.
        check(Some("30000000"), Some("43"), None);
        check(Some("30000000"), Some("x"), None);
        check(None, None, None);
        check(None, Some("42"), None);
        check(Some("0"), None, None);
        check(Some("soon"), None, None);
    }
}
