"""The fleet's commands: `bpfwall agent` and `bpfwall fleet ...`. They parse and print;
the work is in bpfwall.fleet, imported when a command runs (etcd3gw brings requests,
which the other commands need not load)."""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import click

from .cliutil import handle_errors, json_option, netns_option, out

_STORE_PARAMS = ("urls", "prefix", "cacert", "cert", "key", "user", "password_file")


def _store_options(fn: Any) -> Any:
    """etcd's options on a command, which gets them as one StoreSpec (store=)."""

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        kwargs["store"] = StoreSpec(*(kwargs.pop(name) for name in _STORE_PARAMS))
        return fn(**kwargs)

    for option in reversed([
        click.option("--etcd", "urls", required=True, metavar="URL[,URL...]",
                     help="etcd's client URLs (http:// or https://), tried in turn."),
        click.option("--prefix", default="/bpfwall", show_default=True, help="The fleet's key prefix in etcd."),
        click.option("--cacert", metavar="FILE", help="CA certificate that signed etcd's (TLS)."),
        click.option("--cert", metavar="FILE", help="This client's certificate (TLS client auth)."),
        click.option("--key", metavar="FILE", help="This client's private key."),
        click.option("--user", metavar="NAME", help="etcd user, where etcd has auth enabled (roles)."),
        click.option("--password-file", metavar="FILE", help="The --user's password: the file's first line."),
    ]):
        command = option(command)
    return command


@dataclass(frozen=True)
class StoreSpec:
    urls: str
    prefix: str
    cacert: str | None
    cert: str | None
    key: str | None
    user: str | None
    password_file: str | None

    def open(self):
        from .errors import InputError
        from .fleet.store import Login, Store, Tls

        if (self.user is None) != (self.password_file is None):
            raise InputError("--user and --password-file go together (an etcd user and its password)")
        login = Login.from_file(self.user, self.password_file) if self.user and self.password_file else None
        return Store(self.urls, self.prefix, Tls(self.cacert, self.cert, self.key), login=login)


@click.command()
@_store_options
@click.option("--host", required=True, help="This host's name in the fleet (its status/HOST key).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label of this host, which policies select on (repeatable).")
@click.option("-i", "--interface", "interfaces", multiple=True, metavar="IFACE",
              help="Interface to protect (repeatable). Default: the policies' 'interfaces:'.")
@netns_option
@click.option("--mode", type=click.Choice(["native", "generic", "auto"]), default="native", show_default=True,
              help="XDP mode, as for apply.")
@click.option("--state-dir", default="/var/lib/bpfwall/agent", show_default=True, metavar="DIR",
              help="Where the last applied policy is kept, for a start while etcd is away.")
@click.option("--files-dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="The only directory the policies' set files may be read from, by names relative to "
                   "it. Default: none, and a policy that names a set file fails on this host.")
@handle_errors
def agent(store: StoreSpec, host: str, labels: tuple[str, ...], interfaces: tuple[str, ...], ns: str | None,
          mode: str, state_dir: str, files_dir: str | None) -> None:
    """Keep this host's firewall equal to its effective policy in etcd (runs in the foreground).

    The policies under PREFIX/policies/ that select this host's labels are merged and put in
    force as `apply` does; elements under PREFIX/sets/NAME/ change fleet sets live. A policy
    that fails is not applied: the rules in force stay and PREFIX/status/HOST says why. The
    status lives under a lease of 10 s. With etcd away nothing changes; an agent that starts
    then applies the policy it cached in --state-dir. SIGTERM or SIGINT stop it, leaving the
    firewall in force."""
    from .fleet.agent import Agent, AgentConfig, parse_labels

    cfg = AgentConfig(host=host, labels=parse_labels(labels), interfaces=list(interfaces), ns=ns,
                      state_dir=state_dir, mode=mode, files_dir=files_dir)
    etcd = store.open()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def say(message: str) -> None:
        click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {host}: {message}", err=True)

    say(f"watching {etcd.prefix} at {etcd.where} with labels "
        f"{', '.join(f'{k}={v}' for k, v in sorted(cfg.labels.items())) or '(none)'}")
    Agent(etcd, cfg, say).run(stop)
    say("stopped; the rules in force stay")


@click.group()
def fleet() -> None:
    """The fleet's policies, sets and hosts in etcd (see `bpfwall agent`)."""


@fleet.command(name="status")
@_store_options
@json_option
@handle_errors
def fleet_status(store: StoreSpec, as_json: bool) -> None:
    """Every host that reports: its revision, ok or its error, and whether it is behind
    the newest change of a policy or set. Exit 1 when a host reports an error."""
    from rich.table import Table

    from .fleet import control

    data = control.status(store.open())
    failed = [h for h in data["hosts"] if not h.get("ok")]
    if as_json:
        click.echo(json.dumps(data))
    else:
        t = Table("host", "labels", "policies", "revision", "state", "generation", "rules",
                  title=f"{len(data['hosts'])} hosts; newest change at revision {data['newest_change']}")
        for h in data["hosts"]:
            state = ("ok" if h.get("ok") else f"error: {h.get('error')}") + (
                f" (behind by {h['behind']})" if h.get("behind") else "")
            t.add_row(str(h.get("host")), ", ".join(f"{k}={v}" for k, v in sorted((h.get("labels") or {}).items())),
                      ", ".join(h.get("policies") or []), str(h.get("revision")), state,
                      str(h.get("generation") or ""), str(h.get("rules") or ""))
        out.print(t)
    if failed:
        sys.exit(1)


@fleet.command(name="push")
@click.argument("path", metavar="FILE")
@click.option("--name", required=True, help="The policy's name (its key: PREFIX/policies/NAME).")
@click.option("--canary", "canary", multiple=True, metavar="KEY=VALUE",
              help="Try it first on the hosts with this label (repeatable: all must match).")
@click.option("--wait", type=click.FloatRange(0, 86400), default=30.0, show_default=True, metavar="SECS",
              help="With --canary: how long every canary must stay ok and reachable before the rest get it.")
@_store_options
@handle_errors
def fleet_push(path: str, name: str, canary: tuple[str, ...], wait: float, store: StoreSpec) -> None:
    """Check FILE (a rule file, with optional 'select:' and 'order:') and write it as policy
    NAME. Exit 2, writing nothing, when it has errors.

    With --canary, only the hosts with that label get it first; when every canary reports ok
    and is still reachable after --wait seconds, it goes to all. If a canary fails or stops
    reporting, the change is taken back on the canaries and the command exits 1 naming them."""
    from .fleet import control
    from .fleet.agent import parse_labels
    from .inputs import read_regular_file

    text = read_regular_file(path, 16 << 20, "policy file").decode("utf-8")
    etcd = store.open()
    if canary:
        revision = control.push_canary(etcd, name, text, parse_labels(canary), wait,
                                       lambda message: click.echo(message, err=True))
    else:
        revision = control.push(etcd, name, text)
    out.print(f"pushed {path} as {etcd.prefix}policies/{name} at revision {revision}")


@fleet.command(name="rm")
@click.argument("name")
@_store_options
@handle_errors
def fleet_rm(name: str, store: StoreSpec) -> None:
    """Remove policy NAME: the hosts it selected put their other policies in force."""
    from .fleet import control

    etcd = store.open()
    revision = control.remove(etcd, name)
    out.print(f"removed {etcd.prefix}policies/{name} (revision {revision})")


@fleet.group(name="set")
def fleet_set() -> None:
    """Elements of fleet sets (declared {type: cidr, fleet: true}): every host changes them live."""


def _fleet_set_change(name: str, elements: tuple[str, ...], add: bool, store: StoreSpec) -> None:
    from .fleet import control

    texts: list[str] = []
    for value in elements:
        if value == "-":
            texts += [line.split("#", 1)[0].strip() for line in sys.stdin]
        else:
            texts.append(value)
    count, revision = control.set_change(store.open(), name, [t for t in texts if t], add)
    out.print(f"fleet set '{name}': {'added' if add else 'removed'} {count} element"
              f"{'s' if count != 1 else ''} at revision {revision}")


@fleet_set.command(name="add")
@click.argument("name")
@click.argument("elements", nargs=-1, required=True)
@_store_options
@handle_errors
def fleet_set_add(name: str, elements: tuple[str, ...], store: StoreSpec) -> None:
    """Add ELEMENTS (addresses or CIDRs, or '-' for stdin) to fleet set NAME, in one revision."""
    _fleet_set_change(name, elements, True, store)


@fleet_set.command(name="del")
@click.argument("name")
@click.argument("elements", nargs=-1, required=True)
@_store_options
@handle_errors
def fleet_set_del(name: str, elements: tuple[str, ...], store: StoreSpec) -> None:
    """Remove ELEMENTS (or '-' for stdin) from fleet set NAME, in one revision."""
    _fleet_set_change(name, elements, False, store)
