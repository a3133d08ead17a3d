"""Talking to the local gpucost agent, with the standard library only.

Changes go over the agent's unix socket (HTTP/1.1 on an ``AF_UNIX`` stream, one request per
connection); reads go to its TCP port, which is read-only. Every call has a short timeout and
raises only :class:`AgentError`, which the public functions turn into a logged warning.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from typing import Any, Dict, Iterator, Optional

#: Where the agent's socket is unless ``GPUCOST_SOCKET`` says otherwise (the agent's default).
DEFAULT_SOCKET = "/run/gpucost/agent.sock"
#: The agent's read-only TCP API unless ``GPUCOST_URL`` says otherwise (its default port).
DEFAULT_URL = "http://127.0.0.1:10119"


class AgentError(Exception):
    """A call that got no answer, or a refusal."""


class Unreachable(AgentError):
    """Nothing answered (no socket, connection refused, timeout, a reset connection)."""


class Refused(AgentError):
    """The agent answered with an error status; ``message`` is its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def socket_path() -> str:
    return os.environ.get("GPUCOST_SOCKET", "").strip() or DEFAULT_SOCKET


def api_url() -> str:
    return os.environ.get("GPUCOST_URL", "").strip() or DEFAULT_URL


def quote_id(job_id: str) -> str:
    """A job id as one path segment: ``ml/train-0`` is ``ml%2Ftrain-0``."""
    return urllib.parse.quote(job_id, safe="")


class _UnixConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket: only how the connection is made differs."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _answer(conn: http.client.HTTPConnection, where: str) -> Dict[str, Any]:
    try:
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise Unreachable(f"{where}: {e or type(e).__name__}") from None
    try:
        body = json.loads(data.decode("utf-8")) if data else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if not 200 <= status < 300:
        raise Refused(status, str(body.get("error") or "no reason given"))
    return body


def post(path: str, body: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """POSTs ``body`` as JSON to ``path`` on the agent's socket; the JSON answer."""
    where = socket_path()
    conn = _UnixConnection(where, timeout)
    try:
        try:
            conn.request(
                "POST",
                path,
                body=json.dumps(body).encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{where}: {e or type(e).__name__}") from None
        return _answer(conn, where)
    finally:
        conn.close()


def _tcp(timeout: float) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(api_url())
    if url.scheme != "http" or not url.hostname:
        raise Unreachable(f"GPUCOST_URL={api_url()!r} is not an http:// address")
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)


def get(path: str, timeout: float) -> Dict[str, Any]:
    """GETs ``path`` from the agent's read-only TCP API; the JSON answer."""
    conn = _tcp(timeout)
    try:
        try:
            conn.request("GET", path)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{api_url()}: {e or type(e).__name__}") from None
        return _answer(conn, api_url())
    finally:
        conn.close()


def get_lines(path: str, prefix: str, timeout: float) -> Iterator[str]:
    """The lines of a text resource (``/metrics``) that start with ``prefix``, read as they
    arrive, so that a large page is never held whole."""
    conn = _tcp(timeout)
    try:
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            if resp.status != 200:
                raise Refused(resp.status, f"GET {path}")
            head = prefix.encode("utf-8")
            for raw in resp:
                if raw.startswith(head):
                    yield raw.decode("utf-8", "replace").rstrip("\n")
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{api_url()}: {e or type(e).__name__}") from None
    finally:
        conn.close()


def job(job_id: str, timeout: float) -> Optional[Dict[str, Any]]:
    """The job's record from the TCP API, or ``None`` when the agent does not know it."""
    try:
        return get(f"/api/v1/jobs/{quote_id(job_id)}", timeout)
    except Refused as e:
        if e.status == 404:
            return None
        raise
