"""The fleet's store: etcd v3 through its JSON gateway, with etcd3gw's client.

etcd3gw gives the HTTP session (TLS with client certificates), the API path and errors.
Reads go through its post() so that the answer's header revision is kept: the agent
reports the revision whose state is in force and watches from the one after. The watch
stream is read here, because etcd3gw's watcher drops the compaction answer, which tells
the agent to read everything again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors

from ..errors import InputError, RuntimeFailure

DEFAULT_PREFIX = "/bpfwall"
REQUEST_TIMEOUT = 5.0  # seconds a request may take before the endpoint counts as down


class Unavailable(RuntimeFailure):
    """No endpoint of the store answered."""


class Compacted(Exception):
    """The watch's start revision has been compacted away: read everything again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted up to {revision}")
        self.revision = revision


@dataclass(frozen=True)
class Tls:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Login:
    """An etcd user, for a cluster with auth enabled. etcd's JSON gateway ignores a client
    certificate's name, so roles there come with a user and password: the password buys a
    token, sent with every request and bought again when etcd no longer knows it."""

    user: str
    password: str

    @classmethod
    def from_file(cls, user: str, password_file: str) -> Login:
        try:
            with open(password_file) as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise InputError(f"--password-file {password_file}: cannot read: {exc.strerror}") from None
        if not password:
            raise InputError(f"--password-file {password_file}: the first line (the password) is empty")
        return cls(user, password)


@dataclass
class Event:
    key: str  # relative to the prefix, such as "policies/web"
    value: bytes | None  # None: deleted
    revision: int


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _range_end(prefix: str) -> str:
    """The first key after every key that starts with prefix."""
    raw = prefix.encode()
    return _b64(raw[:-1] + bytes([raw[-1] + 1]))


def endpoints(urls: str) -> list[tuple[str, str, int]]:
    """(protocol, host, port) of each URL of --etcd (comma-separated)."""
    out = []
    for url in filter(None, (u.strip() for u in urls.split(","))):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"--etcd: '{url}' is not an etcd URL such as http://127.0.0.1:2379")
        out.append((parsed.scheme, parsed.hostname, parsed.port or 2379))
    if not out:
        raise InputError("--etcd: no URL given")
    return out


class Store:
    """The keys under one prefix, on the first endpoint that answers."""

    def __init__(self, urls: str, prefix: str = DEFAULT_PREFIX, tls: Tls | None = None,
                 timeout: float = REQUEST_TIMEOUT, login: Login | None = None) -> None:
        self.prefix = prefix.rstrip("/") + "/"
        tls = tls or Tls()
        if (tls.cert is None) != (tls.key is None):
            raise InputError("--cert and --key go together (the client certificate and its key)")
        self.clients = [
            etcd3gw.Etcd3Client(host=host, port=port, protocol=("https" if tls.cacert or tls.cert else scheme),
                                timeout=timeout, api_path="/v3/", session=_session(tls))
            for scheme, host, port in endpoints(urls)]
        self.current = 0
        self.login = login

    @property
    def where(self) -> str:
        return ", ".join(c.base_url for c in self.clients)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request, tried on each endpoint from the one that answered last."""
        problems = []
        for i in range(len(self.clients)):
            n = (self.current + i) % len(self.clients)
            client = self.clients[n]
            try:
                self._log_in(client)
                try:
                    answer = client.post(client.get_url(path), json=body)
                except etcd_errors.Etcd3Exception as exc:
                    if not (self.login and _error_code(exc) == INVALID_TOKEN):
                        raise
                    # the token lapsed (etcd forgets an idle one after --auth-token-ttl): a new one
                    client.session.headers.pop("Authorization", None)
                    self._log_in(client)
                    answer = client.post(client.get_url(path), json=body)
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError,
                    requests.exceptions.RequestException) as exc:
                problems.append(f"{client.base_url}: {_first_line(exc)}")
                continue
            except etcd_errors.Etcd3Exception as exc:
                raise RuntimeFailure(f"etcd at {client.base_url}: {_refusal(exc, self.login)}") from None
            self.current = n
            return answer
        raise Unavailable("etcd is unreachable: " + "; ".join(problems))

    def _log_in(self, client: etcd3gw.Etcd3Client) -> None:
        """A token for the login on this endpoint's session, unless it has one."""
        if self.login is None or "Authorization" in client.session.headers:
            return
        answer = client.post(client.get_url("/auth/authenticate"),
                             json={"name": self.login.user, "password": self.login.password})
        client.session.headers["Authorization"] = answer["token"]

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def read(self, relative_prefix: str = "") -> tuple[int, dict[str, bytes]]:
        """(revision, {relative key: value}) of every key under prefix + relative_prefix."""
        start = self.prefix + relative_prefix
        answer = self._post("/kv/range", {"key": _b64(start), "range_end": _range_end(start)})
        kvs = {}
        for kv in answer.get("kvs", []):
            kvs[base64.b64decode(kv["key"]).decode()[len(self.prefix):]] = base64.b64decode(kv.get("value", ""))
        return int(answer["header"]["revision"]), kvs

    def newest_change(self, relative_prefix: str) -> int:
        """The revision of the latest put under prefix + relative_prefix (0: none). A delete
        leaves no key to read it from; the agents' revisions still pass it."""
        start = self.prefix + relative_prefix
        answer = self._post("/kv/range", {"key": _b64(start), "range_end": _range_end(start), "limit": 1,
                                          "sort_order": "DESCEND", "sort_target": "MOD", "keys_only": True})
        kvs = answer.get("kvs", [])
        return int(kvs[0]["mod_revision"]) if kvs else 0

    def revision(self) -> int:
        answer = self._post("/kv/range", {"key": _b64(self.prefix), "limit": 1, "keys_only": True})
        return int(answer["header"]["revision"])

    def put(self, relative: str, value: bytes | str, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": _b64(self.key(relative)), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self._post("/kv/put", body)["header"]["revision"])

    def put_many(self, items: dict[str, bytes | str], deletes: Sequence[str] = ()) -> int:
        """Puts and deletes in one transaction: one revision, seen by watchers at once."""
        ops = [{"request_put": {"key": _b64(self.key(k)), "value": _b64(v)}} for k, v in items.items()]
        ops += [{"request_delete_range": {"key": _b64(self.key(k))}} for k in deletes]
        return int(self._post("/kv/txn", {"success": ops})["header"]["revision"])

    def delete(self, relative: str, prefix: bool = False) -> tuple[int, int]:
        """(keys deleted, the revision after)."""
        key = self.key(relative)
        body = {"key": _b64(key), **({"range_end": _range_end(key)} if prefix else {})}
        answer = self._post("/kv/deleterange", body)
        return int(answer.get("deleted", 0)), int(answer["header"]["revision"])

    def grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl})["ID"])

    def revoke(self, lease: int) -> None:
        """The lease ended now, and the keys under it deleted."""
        self._post("/lease/revoke", {"ID": lease})

    def keep_alive(self, lease: int) -> bool:
        """Refreshes the lease; False when it has expired (a new one is needed)."""
        answer = self._post("/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0)) > 0

    def watch(self, start_revision: int, stop: threading.Event) -> Iterator[list[Event]]:
        """Batches of events under the prefix from start_revision on, as etcd sends them,
        until stop is set or the stream breaks (Unavailable). Compacted when start_revision
        is gone."""
        client = self.clients[self.current]
        try:
            self._log_in(client)
        except etcd_errors.Etcd3Exception as exc:
            raise RuntimeFailure(f"etcd at {client.base_url}: {_refusal(exc, self.login)}") from None
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"etcd watch at {client.base_url}: {_first_line(exc)}") from None
        body = {"create_request": {"key": _b64(self.prefix), "range_end": _range_end(self.prefix),
                                   "start_revision": start_revision}}
        try:
            resp = client.session.post(client.get_url("/watch"), json=body, stream=True,
                                       timeout=(REQUEST_TIMEOUT, None))
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"etcd watch at {client.base_url}: {_first_line(exc)}") from None
        threading.Thread(target=_close_when, args=(stop, resp), daemon=True).start()
        try:
            for line in resp.iter_lines():
                if stop.is_set():
                    return
                if not line:
                    continue
                message = json.loads(line)
                if "error" in message:  # such as a token etcd no longer knows: a new one next time
                    if message["error"].get("http_code") == 401 or message["error"].get("grpc_code") == INVALID_TOKEN:
                        client.session.headers.pop("Authorization", None)
                    raise Unavailable(f"etcd watch at {client.base_url}: {message['error'].get('message')}")
                result = message.get("result", {})
                if "compact_revision" in result and int(result["compact_revision"]) >= start_revision:
                    raise Compacted(int(result["compact_revision"]))
                if result.get("canceled"):
                    raise Unavailable(f"etcd cancelled the watch: {result.get('cancel_reason', 'no reason')}")
                events = [Event(base64.b64decode(e["kv"]["key"]).decode()[len(self.prefix):],
                                None if e.get("type") == "DELETE" else base64.b64decode(e["kv"].get("value", "")),
                                int(e["kv"]["mod_revision"]))
                          for e in result.get("events", [])]
                if events:
                    yield events
        except (requests.exceptions.RequestException, AttributeError, ValueError) as exc:
            if stop.is_set():
                return
            raise Unavailable(f"etcd watch at {client.base_url} broke: {_first_line(exc)}") from None
        finally:
            resp.close()
        if not stop.is_set():
            raise Unavailable(f"etcd watch at {client.base_url} ended")


def _session(tls: Tls) -> requests.Session:
    """An HTTP session with the client certificate and the CA given. With a CA given, the
    environment is not consulted: requests lets REQUESTS_CA_BUNDLE override a session's own
    CA, which would verify etcd against the system's authorities instead."""
    session = requests.Session()
    if tls.cacert:
        session.verify = tls.cacert
        session.trust_env = False
    if tls.cert and tls.key:
        session.cert = (tls.cert, tls.key)
    return session


def _close_when(stop: threading.Event, resp: requests.Response) -> None:
    """Ends a watch stream once stop is set. Closing the response does not wake a read
    blocked on an idle stream; shutting its socket down does."""
    stop.wait()
    connection = getattr(resp.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    resp.close()


INVALID_TOKEN = 16  # gRPC's Unauthenticated: etcd's "invalid auth token"


def _error_code(exc: etcd_errors.Etcd3Exception) -> int | None:
    """The gRPC code of etcd's answer (its JSON body), if it has one."""
    try:
        return int(json.loads(exc.detail_text or "")["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _refusal(exc: etcd_errors.Etcd3Exception, login: Login | None) -> str:
    """etcd's reason for refusing a request, and what to do about it."""
    if "CommonName of client" in (exc.detail_text or ""):
        return ("etcd's gateway refuses a client certificate with a Common Name while auth is on: "
                "give this client a certificate without one, and roles through --user (see docs/fleet.md, Roles)")
    try:
        message = str(json.loads(exc.detail_text or "")["message"])
    except (ValueError, KeyError, TypeError):
        return _first_line(exc)
    if "user name is empty" in message:
        return f"{message}: etcd has auth enabled; give --user and --password-file"
    if "permission denied" in message and login:
        return f"{message}: user '{login.user}' has no role that grants this (see docs/fleet.md, Roles)"
    return message


def _first_line(exc: BaseException) -> str:
    # etcd3gw's errors keep their text in detail_text (str() of one is empty)
    text = (str(exc).strip() or str(getattr(exc, "detail_text", "") or "").strip()
            or type(exc).__name__)
    if "Caused by " in text:  # urllib3's retry wrapper: the cause is what says something
        text = text.split("Caused by ", 1)[1].strip("()")
    return text.splitlines()[0][:300]
