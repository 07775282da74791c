"""A real etcd (Debian's etcd-server) for the fleet tests: on loopback, in a temporary
directory, on free ports; stopped, killed and started again by the tests."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    def __init__(self, tls: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        """tls: {"cert", "key", "ca", "client_cert", "client_key"}: serve https and ask clients
        for certificates signed by ca. args: more of etcd's options."""
        self.dir = tempfile.mkdtemp(prefix="bpfwall-etcd-")
        self.client_port, self.peer_port = _free_port(), _free_port()
        self.tls = tls
        self.args = args
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(self.dir, "etcd.log")

    def start(self, wait: float = 20.0) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = ["etcd", "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"t={peer}", "--logger", "zap", "--log-outputs", self.log]
        if self.tls:
            cmd += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                    "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        cmd += self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {open(self.log).read()[-2000:]}")
            if self._answers():
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not start")

    def _answers(self) -> bool:
        if self.tls:  # the port open is enough: a TLS health check needs the client certificate
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.client_port)) == 0
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request to etcd's JSON gateway (as root, before auth is enabled)."""
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"verify": self.tls["ca"], "cert": (self.tls["client_cert"], self.tls["client_key"])}
        answer = requests.post(f"{self.url}/v3/{path}", json=body, timeout=5, **tls)
        answer.raise_for_status()
        return answer.json()

    def enable_auth(self, users: dict[str, tuple[str, list[tuple[str, str]]]]) -> None:
        """Users {name: (password, [(READ|WRITE|READWRITE, key prefix)])}, each with a role of
        its own name, then auth enabled (with a root user, which etcd requires first)."""
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        for name, (password, grants) in {"root": ("root-pw", []), **users}.items():
            self.call("auth/user/add", {"name": name, "password": password})
            role = "root" if name == "root" else name
            if role != "root":
                self.call("auth/role/add", {"name": role})
            for perm, key in grants:
                end = key[:-1] + chr(ord(key[-1]) + 1)
                self.call("auth/role/grant", {"name": role, "perm": {"permType": perm, "key": b64(key),
                                                                      "range_end": b64(end)}})
            self.call("auth/user/grant", {"user": name, "role": role})
        self.call("auth/enable", {})

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Etcd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
