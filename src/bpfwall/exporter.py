"""`bpfwall exporter`: Prometheus metrics, read from the pinned maps at every scrape.

It holds nothing between scrapes, so it keeps working across applies (each
scrape finds the generation in force) and while bpfwall is down (bpfwall_up 0).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import libbpf, netns, owners, stats
from .conntrack import read_table
from .errors import BpfwallError, InputError, RuntimeFailure
from .scope import Scope, namespace_scopes


class BpfwallCollector(Collector):
    """Every scope's metrics with a `netns` label (empty for the host's), the scopes found
    anew at each scrape: one exporter a host, as Prometheus users expect."""

    def __init__(self, namespaces: Callable[[], list[str | None]]) -> None:
        self.namespaces = namespaces

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for ns in self.namespaces():
            for m in _ScopeMetrics(Scope(ns)).collect():
                out = merged.setdefault(m.name, Metric(m.name, m.documentation, m.type))
                for s in m.samples:
                    out.add_sample(s.name, {"netns": ns or "", **s.labels}, s.value)
        yield from merged.values()


def every_scope() -> list[str | None]:
    return [None, *namespace_scopes()]


class _ScopeMetrics:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @staticmethod
    def _owners(state) -> Iterator[Metric]:
        """The egress rules that name a cgroup or user, and whether the cgroup exists now (a
        rule whose cgroup is absent matches nothing until it is made): an alert's join key."""
        info = GaugeMetricFamily("bpfwall_rule_owner_info", "An egress rule by owner: its cgroup and "
                                 "user, and whether the cgroup exists now",
                                 labels=["rule", "cgroup", "user", "cgroup_present"])
        mount = None
        for r in state.rules().direction("egress"):
            if r.cgroup is None and r.user is None:
                continue
            present = ""
            if r.cgroup is not None:
                mount = mount or owners.cgroup2_mount()
                present = "yes" if mount and owners.cgroup_id(r.cgroup, mount) is not None else "no"
            user = owners.user_label(r.user) if r.user is not None else ""
            info.add_metric([r.name, r.cgroup or "", user, present], 1)
        yield info

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bpfwall_up", "1 when a rule set is in force and its maps are readable")
        try:
            state = self.scope.read_state()
        except BpfwallError:  # unreadable (permission; serve() said so at start): not up
            state = None
        if state is None or not state.interfaces:
            up.add_metric([], 0)
            yield up
            return
        try:
            data = stats.per_interface(self.scope)
            metrics = list(self._metrics(state, data))
        except (BpfwallError, libbpf.BpfError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _metrics(self, state, by_interface) -> Iterator[Metric]:
        labels = ["interface", "rule", "direction", "action"]
        packets = CounterMetricFamily("bpfwall_rule_packets", "Packets a rule decided", labels=labels)
        nbytes = CounterMetricFamily("bpfwall_rule_bytes", "Bytes of the packets a rule decided", labels=labels)
        policy = CounterMetricFamily("bpfwall_policy_packets", "Packets no rule matched, by direction",
                                     labels=["interface", "direction", "action"])
        policy_bytes = CounterMetricFamily("bpfwall_policy_bytes", "Bytes of the packets no rule matched",
                                           labels=["interface", "direction", "action"])
        drops = CounterMetricFamily("bpfwall_drops", "Packets dropped, by reason", labels=["interface", "reason"])
        rejects = CounterMetricFamily("bpfwall_rejects_sent", "RSTs and ICMP errors sent by reject rules",
                                      labels=["interface"])
        suppressed = CounterMetricFamily("bpfwall_rejects_suppressed", "Rejects over the answer budget, "
                                         "dropped without an answer", labels=["interface"])
        undelivered = CounterMetricFamily("bpfwall_answers_undelivered", "Answers from XDP (rejects, SYN "
                                          "cookies) the interface failed to deliver, as its driver counts",
                                          labels=["interface"])
        guard = CounterMetricFamily("bpfwall_guard_events", "Bans added by rules and for port scans, "
                                    "SYNs answered with cookies", labels=["interface", "event"])
        # Interfaces of the apply by name; "(other)" for packets of any other one.
        for iface, data in sorted(by_interface.items()):
            for r in data["rules"]:
                packets.add_metric([iface, r["name"], r["direction"], r["action"]], r["packets"])
                nbytes.add_metric([iface, r["name"], r["direction"], r["action"]], r["bytes"])
            for direction, p in data["policy"].items():
                policy.add_metric([iface, direction, p["action"]], p["packets"])
                policy_bytes.add_metric([iface, direction, p["action"]], p["bytes"])
            for reason, n in data["drops"].items():
                drops.add_metric([iface, reason], n)
            rejects.add_metric([iface], data["rejects_sent"])
            suppressed.add_metric([iface], data["rejects_suppressed"])
            if data.get("answers_undelivered") is not None:
                undelivered.add_metric([iface], data["answers_undelivered"])
            for event, n in data["guard"].items():
                guard.add_metric([iface, event], n)
        yield from (packets, nbytes, policy, policy_bytes, drops, rejects, suppressed, undelivered, guard)

        info = GaugeMetricFamily("bpfwall_interface_info", "An interface bpfwall protects",
                                 labels=["interface", "mode", "egress"])
        for name, i in state.interfaces.items():
            info.add_metric([name, i["mode"], "yes" if i.get("egress") else "no"], 1)
        yield info
        generation = GaugeMetricFamily("bpfwall_generation", "The generation in force (one per apply)")
        generation.add_metric([], state.generation)
        yield generation
        yield from self._owners(state)

        sizes = GaugeMetricFamily("bpfwall_set_elements", "Elements of each set", labels=["set", "type"])
        types = {n: m["type"] for n, m in (state.ruleset or {}).get("sets", {}).items()}
        for name, entry in self.scope.set_changes(state).items():
            sizes.add_metric([name, types.get(name, "?")], entry["size"])
        yield sizes

        fds = self.scope.open_ct_maps()
        if fds is not None:
            try:
                entries = GaugeMetricFamily("bpfwall_conntrack_entries", "Entries of the connection table")
                entries.add_metric([], len(read_table(fds["conntrack"])))
                capacity = GaugeMetricFamily("bpfwall_conntrack_max_entries", "Size of the connection table")
                capacity.add_metric([], libbpf.map_info(fds["conntrack"]).max_entries)
                yield entries
                yield capacity
            finally:
                for fd in fds.values():
                    os.close(fd)

        runs = CounterMetricFamily("bpfwall_program_runs", "Runs of each program (kernel.bpf_stats_enabled=1)",
                                   labels=["program", "direction"])
        run_ns = CounterMetricFamily("bpfwall_program_run_seconds", "Time in each program "
                                     "(kernel.bpf_stats_enabled=1)", labels=["program", "direction"])
        for direction in ("ingress", "egress"):
            if self.scope.has_direction(state, direction):
                with self.scope.open_generation(state, direction) as gen:
                    if gen.prog_fd < 0:
                        continue  # a reader without root cannot open programs
                    pi = libbpf.prog_info(gen.prog_fd)
                labels = [pi.name.decode(), direction]
                runs.add_metric(labels, pi.run_cnt)
                run_ns.add_metric(labels, pi.run_time_ns / 1e9)
        yield runs
        yield run_ns


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--listen: '{listen}' is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def url(host: str, port: int) -> str:
    """Where the metrics are, an IPv6 address in brackets as URLs write it."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt: str, *args) -> None:
        pass  # a scrape every few seconds is no news


def _server_class(host: str) -> type[WSGIServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    return Server


def _only_metrics(app):
    """The WSGI app of prometheus_client, at /metrics only: any other path is 404, so that a
    typo in a scrape config fails instead of scraping the same page under another name."""
    def wrapped(environ, start_response):
        if environ.get("PATH_INFO", "") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"bpfwall serves its metrics at /metrics\n"]
        return app(environ, start_response)

    return wrapped


def serve(ns: str | None, listen: str, ready=None) -> None:
    """Serves /metrics until interrupted: the scope of namespace ns, or with ns None every
    scope. ready(host, port) is called once it listens."""
    host, port = parse_listen(listen)
    if ns is not None and not netns.exists(ns):  # fails now, as status does
        raise RuntimeFailure(f"network namespace '{ns}' does not exist")
    Scope(ns).read_state()  # fails now, clearly, for a user who may not read the firewall
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BpfwallCollector(every_scope if ns is None else lambda: [ns]))
    try:
        server = make_server(host, port, _only_metrics(make_wsgi_app(registry)), _server_class(host),
                             _QuietHandler)
    except OSError as exc:
        raise RuntimeFailure(f"cannot listen on {url(host, port)}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if ready:
        ready(host, port)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()
