//! The TCP port's own series: open connections, the connections the agent closed and why, failed
//! accepts, and requests answered "busy". Rendered for each scrape (a few lines), after the
//! snapshot's cached text.

use super::Families;

/// What the HTTP server counted, as plain numbers.
#[derive(Debug, Clone, Default)]
pub struct HttpStats {
    pub connections: u64,
    /// By reason: header_timeout, idle_timeout, evicted, refused.
    pub closed: Vec<(&'static str, u64)>,
    /// By kind of accept(2) error.
    pub accept_errors: Vec<(&'static str, u64)>,
    /// 503 "busy" answers, by path.
    pub busy: Vec<(&'static str, u64)>,
}

/// The text of the HTTP server's series.
pub fn render_http(stats: &HttpStats, simulated: bool) -> String {
    let mut f = Families {
        list: Vec::new(),
        simulated,
    };
    f.gauge(
        "gpucost_http_connections",
        "TCP connections open on the HTTP port.",
        &[],
        stats.connections as f64,
    );
    for (reason, n) in &stats.closed {
        f.counter(
            "gpucost_http_connections_closed_total",
            "Connections the agent closed: header_timeout (headers too slow), idle_timeout \
             (silent), evicted (the quietest, to make room at http.max_connections), refused \
             (new, at http.max_connections with every connection being answered).",
            &[("reason", reason)],
            *n as f64,
        );
    }
    for (error, n) in &stats.accept_errors {
        f.counter(
            "gpucost_http_accept_errors_total",
            "Failed accepts on the HTTP port, by errno (EMFILE: out of open files).",
            &[("error", error)],
            *n as f64,
        );
    }
    for (path, n) in &stats.busy {
        f.counter(
            "gpucost_http_busy_responses_total",
            "Requests answered 503 because too many large renderings were under way.",
            &[("path", path)],
            *n as f64,
        );
    }
    super::encode(&f.list)
}
