"""bpfwall's command line: parses arguments, calls the modules, prints.

Exit status: 0 success, 1 runtime failure, 2 bad input. Errors are one line a
problem on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from . import names, netns, owners, shared
from .cliutil import handle_errors, json_option, netns_option, out
from .errors import InputError, RuntimeFailure, clip
from .scope import Scope, State, namespace_scopes

if TYPE_CHECKING:
    from rich.table import Table

    from .compiler import Compiled


def _lazy(name: str) -> Any:
    """A module imported on first use (importlib's LazyLoader): the commands that only read
    (status without root, stats, set list, --help) do not pay for the compiler and loader."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


transaction = _lazy("bpfwall.transaction")
conntrack_mod = _lazy("bpfwall.conntrack")
stats_mod = _lazy("bpfwall.stats")
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bpfwall", prog_name="bpfwall", message="%(prog)s %(version)s")
def main() -> None:
    """bpfwall: an XDP host firewall with an nftables-class rule language.

    Write a rule file (man 5 bpfwall.yaml), check it, apply it to an interface; the
    rules stay in force with no bpfwall process running.
    """


@main.command()
@click.option("-f", "--file", "path", required=True, metavar="FILE", help="The rule file (YAML).")
@click.option("-i", "--interface", "interfaces", multiple=True, metavar="IFACE",
              help="Interface to protect (repeatable). Default: 'interfaces:' of the rule file, "
              "else the interfaces already protected.")
@netns_option
@click.option("--mode", type=click.Choice(["native", "generic", "auto"]), default="native",
              show_default=True, help="XDP mode: native (driver), generic (skb), or native "
              "falling back to generic.")
@click.option("--confirm", metavar="SECS", type=click.IntRange(1, 86400), default=None,
              help="Put the previous rule set back unless 'bpfwall confirm' (or Enter on this "
              "terminal) comes within SECS. The rollback is armed in a process of its own: it "
              "happens even if this command, its terminal or the SSH session dies.")
@click.option("--force", is_flag=True,
              help="Apply even though the rules would drop an SSH session of this host.")
@handle_errors
def apply(path: str, interfaces: tuple[str, ...], ns: str | None, mode: str,
          confirm: int | None, force: bool) -> None:
    """Compile FILE and put it in force on the interfaces, atomically.

    Attaches bpfwall_ingress as an XDP link where it is not yet attached; the
    rule set changes on every interface at once. Idempotent. Refuses rules that
    would cut an SSH session of this host (see --force), and waits for another
    apply that holds the lock.
    """

    t0 = time.monotonic()
    _without_cycle_collection()
    scope = Scope(ns)
    where = f" in netns {ns}" if ns else ""
    if confirm is None:  # the same files, in force already: nothing to load, compile or swap
        same = scope.unchanged(path, list(interfaces), mode)
        if same is not None:
            # click, not rich: an unchanged apply should cost no more than its check
            click.echo(f"unchanged: {path} is in force as generation {same}{where}; nothing to do "
                       f"({time.monotonic() - t0:.2f} s)")
            return
    ruleset = _load(path)
    tables = _compile(ruleset, path)
    scope.on_wait = lambda message: click.echo(f"note: {message}", err=True)
    targets = transaction.target_interfaces(scope, ruleset, interfaces,
                                            "-i IFACE or list 'interfaces:' in the rule file")
    if not force:
        _guard_sessions(scope, ruleset, targets)
    report = transaction.apply(scope, ruleset, targets, mode, tables, confirm=confirm)
    took = time.monotonic() - t0
    for repair in report.repairs:
        click.echo(f"repaired: {repair}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    from . import neighbours  # pyroute2: only where it is needed

    for warning in neighbours.unexempt(ruleset, ns) + owners.absent(ruleset):
        click.echo(f"warning: {warning}", err=True)
    ifaces = ", ".join(
        f"{n} ({'attached' if n in report.attached else 'swapped'}, {i['mode']})"
        for n, i in report.interfaces.items())
    n_rules = len([r for r in ruleset.rules if not r.implicit])
    out.print(f"applied {path}: {n_rules} rules, ingress policy {ruleset.policy['ingress']}; "
              f"{ifaces}{where}; generation {report.generation}"
              f"{' (no new program: the idle one refilled)' if report.reused else ''}; "
              f"{took:.2f} s")
    if confirm is not None:
        gc.enable()
        _await_confirmation(scope, report, confirm)


def _without_cycle_collection() -> None:
    """For a command that reads a rule file and ends: what it builds (100,000s of objects at
    10,000 rules) lives until it ends, and the cycle collector spent a quarter of the parse
    finding that out. Reference counting still frees what is dropped."""
    gc.disable()


def _guard_sessions(scope: Scope, ruleset, targets: list[str]) -> None:
    """Refuses a rule set that would cut an SSH session arriving on the targets."""
    from . import lockout

    lockout.guard_scope(scope, ruleset, targets)


def _await_confirmation(scope: Scope, report, seconds: int) -> None:
    """Waits for Enter on this terminal or `bpfwall confirm`; rolls back at the deadline."""

    import select

    ns_arg = f" --netns {scope.ns}" if scope.ns else ""
    tty = sys.stdin.isatty()
    scope.on_wait = None  # the watchdog holds the lock for a moment when it rolls back
    armed = scope.pending_confirm() or {}
    previous = armed.get("previous", {}).get("generation", 0)

    def enter_pressed(seconds: float) -> bool:
        if not tty:
            time.sleep(seconds)
            return False
        if select.select([sys.stdin], [], [], seconds)[0]:
            sys.stdin.readline()
            return True
        return False

    try:
        out.print(f"keeping generation {report.generation} for {seconds} s: "
                  f"{'press Enter here or ' if tty else ''}run 'bpfwall confirm{ns_arg}' to keep it")
        rolled_back = transaction.await_confirmation(scope, report.confirm_token, enter_pressed)
    except KeyboardInterrupt:
        # The watchdog, in a session of its own, still rolls back at the deadline: say so,
        # or an operator who pressed Ctrl-C believes the new rules stay.
        pending = scope.pending_confirm()
        back_to = f"generation {previous}" if previous else "no firewall"
        if pending is not None and pending.get("token") == report.confirm_token:
            left = max(0, round(pending["deadline"] - time.time()))
            click.echo(f"interrupted: the rollback stays armed: generation {report.generation} goes back to "
                       f"{back_to} in {left} s unless 'bpfwall confirm{ns_arg}' keeps it", err=True)
        else:
            click.echo(f"interrupted: generation {report.generation} awaits no confirmation any more "
                       f"(kept, or rolled back to {back_to}: see 'bpfwall status{ns_arg}')", err=True)
        raise
    if rolled_back:
        raise RuntimeFailure(rolled_back)
    state = scope.read_state()
    if state is not None and state.generation == report.generation:
        out.print(f"confirmed: generation {report.generation} stays")
        return
    raise RuntimeFailure(
        f"generation {report.generation} was not confirmed within {seconds} s: "
        + (f"rolled back to generation {previous}" if previous else "removed (nothing was in force before it)"))


@main.command(name="import")
@click.argument("kind", type=click.Choice(["iptables", "nft"]))
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--ipset", "ipset_file", metavar="FILE",
              help="'ipset save' output: fills the sets that iptables rules reference.")
@click.option("-o", "--output", metavar="FILE", help="Write the rule file to FILE, not stdout.")
@handle_errors
def import_rules(kind: str, files: tuple[str, ...], ipset_file: str | None, output: str | None) -> None:
    """Turn iptables-save / ip6tables-save output (iptables; several files are merged) or
    'nft -j list ruleset' output (nft) into a bpfwall rule file. '-' reads stdin.

    INPUT/input becomes ingress and OUTPUT/output egress, with their policies; jumps to
    user chains are inlined. What bpfwall cannot express is listed at the end of the
    file as comments with the original rule, and counted on stderr. Needs no root.
    """
    from .importer import iptables, nft, render

    texts = [_read_input(path) for path in files]
    if kind == "nft":
        if len(texts) != 1:
            raise InputError("import nft takes one file: the output of 'nft -j list ruleset'")
        try:
            imported = nft.parse(texts[0])
        except ValueError as exc:
            raise InputError(f"{files[0]}:1: {exc}") from None
    else:
        ipsets = iptables.parse_ipset_save(_read_input(ipset_file)) if ipset_file else None
        try:
            imported = iptables.parse(texts, ipsets)
        except ValueError as exc:
            raise InputError(f"{' '.join(files)}: {exc}") from None
    text = render(imported)
    _load_text(text)  # what import writes, apply takes: a failure here is bpfwall's bug
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise InputError(f"-o {output}: cannot write: {exc.strerror}") from None
    else:
        click.echo(text, nl=False)
        sys.stdout.flush()  # the file first, then what is said about it
    for note in imported.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"imported {len(imported.rules)} rules; {len(imported.skipped)} could not be carried"
               + (" (listed as comments at the end)" if imported.skipped else ""), err=True)


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _load_text(text: str):
    from . import config

    try:
        return config.loads(text, "<imported>")
    except InputError as exc:
        raise RuntimeFailure("the imported rule file does not load (a bpfwall bug; please report it):\n"
                             + "\n".join(exc.problems)) from None


@main.command()
@netns_option
@json_option
@click.option("--no-elements", is_flag=True, help="Give each set's size, not its elements.")
@handle_errors
def show(ns: str | None, as_json: bool, no_elements: bool) -> None:
    """The rule set in force, as a rule file that 'apply' takes back to the same rules
    (as 'nft list ruleset' does): sets with their elements as they are now, live
    'set add' and 'set del' included. Port sets appear as the ports they stand for."""
    from . import render

    scope = Scope(ns)
    state = scope.require_state()
    ruleset = state.rules()
    elements = None if no_elements else _live_elements(scope, ruleset)
    if as_json:
        click.echo(json.dumps(render.file_dict(ruleset, elements), indent=2))
        return
    from datetime import datetime

    when = datetime.fromtimestamp(state.applied_at).isoformat(timespec="seconds")
    sizes = {n: c["size"] for n, c in scope.set_changes(state).items()}
    click.echo(render.rule_file(ruleset, elements, header=(
        f"In force{f' in netns {ns}' if ns else ''}: generation {state.generation}, applied {when} "
        f"from {ruleset.source}"), sizes=sizes), nl=False)


@main.command()
@netns_option
@handle_errors
def confirm(ns: str | None) -> None:
    """Keep the rule set of an 'apply --confirm' that awaits confirmation."""

    generation = transaction.confirm(Scope(ns))
    out.print(f"confirmed: generation {generation} stays")


def _load(path: str):
    """The rule file. Imported here: pydantic's models take 0.1 s to import, which
    commands that read no rule file (set, stats, status) should not pay."""
    from . import config

    return config.load(path)


def _compile(ruleset, path: str) -> dict[str, Compiled]:
    """Both directions' tables; a rule set too large for the data plane is bad input."""
    compile_all = transaction.compile_all

    try:
        return compile_all(ruleset)
    except ValueError as exc:
        raise InputError(f"{path}:1: {exc}") from None


@main.command()
@click.option("-f", "--file", "path", required=True, metavar="FILE", help="The rule file (YAML).")
@json_option
@click.option("--diff", "diff", is_flag=True,
              help="Say what applying FILE would change against the rules in force (exit 1 if anything).")
@netns_option
@handle_errors
def check(path: str, as_json: bool, diff: bool, ns: str | None) -> None:
    """Validate and compile FILE; touches nothing, needs no root.

    Exit 0 when it would apply, 2 when it has errors (with --json:
    {"errors": [{"file", "line", "message"}]} on stdout), 1 when it is valid but
    apply would refuse it here (in --netns NS): a group or an interface it names is
    missing, or, as root, the lockout guard would refuse it against the live
    connection table, exactly as apply judges (with --json: "refused"). Without root
    it warns of SSH sessions the rules might cut. With --diff: the rules added,
    removed and changed (by name, with the keys that changed), policies and settings,
    and set elements added and removed, against what is in force; exit 0 when
    equal, 1 when different."""
    _without_cycle_collection()
    try:
        ruleset = _load(path)
        tables = _compile(ruleset, path)
    except InputError as exc:
        if not as_json:
            raise
        click.echo(json.dumps({"errors": [_error_record(p, path) for p in exc.problems]}, indent=2))
        sys.exit(2)
    if diff:
        _check_diff(ruleset, Scope(ns), as_json)
        return
    user_rules = [r for r in ruleset.rules if not r.implicit]
    info = {
        "file": path,
        "rules": len(user_rules),
        "implicit_rules": [f"{r.name} ({r.direction})" for r in ruleset.rules if r.implicit],
        "policy": ruleset.policy,
        "sets": ruleset.sets,
        "connection_tracking": ruleset.uses_ct(),
        "directions": {
            d: {"rules": len([r for r in user_rules if r.direction == d]), "classes": c.n_classes,
                "fields": sorted(_FIELD_NAMES[f] for f in c.fields_used)}
            for d, c in tables.items()
        },
    }
    from . import neighbours

    refused, session_warnings = _apply_refusals(ruleset, Scope(ns))
    warnings = session_warnings + neighbours.unexempt(ruleset, ns) + owners.absent(ruleset)
    info["warnings"] = warnings
    info["refused"] = refused
    from . import kfeatures

    info["features"] = kfeatures.report()  # None without root: the probes load programs
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in refused:
        click.echo(clip(f"bpfwall: apply would refuse it: {line}"), err=True)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        if refused:
            sys.exit(1)
        return
    if refused:
        sys.exit(1)
    out.print(f"{path}: OK: {info['rules']} rules, policy ingress {ruleset.policy['ingress']} egress "
              f"{ruleset.policy['egress']}, {len(ruleset.sets)} sets, connection tracking "
              f"{'on' if ruleset.uses_ct() else 'off'}")
    for d, x in info["directions"].items():
        out.print(f"  {d}: {x['rules']} rules, {x['classes']} classes over {', '.join(x['fields']) or 'no field'}")
    if "egress" not in tables:
        out.print("  egress: nothing to do (no egress rules, accept policy, no tracking): no program")
    for name in info["implicit_rules"]:
        out.print(f"  implicit rule {name}: accepts ICMPv6 neighbour discovery and packet-too-big "
                  "before the drop policy")
    for line in kfeatures.missing(info["features"]):
        out.print(f"  kernel: {line}")


def _file_elements(ruleset) -> dict[str, list[str]]:
    from .cidrset import format_element

    return {n: [format_element(e) for e in sorted(s)] for n, s in ruleset.cidr_sets.items()}


def _live_elements(scope: Scope, ruleset) -> dict[str, list[str]]:
    from .cidrset import format_element

    return {n: [format_element(e) for e in scope.set_elements(n)]
            for n, m in ruleset.sets.items() if m.get("type") == "cidr"}


def _check_diff(ruleset, scope: Scope, as_json: bool) -> None:
    from . import diff as diff_mod

    state = scope.read_state()
    if state is None or not state.interfaces:
        # Not "differs" (exit 1), which a script takes as "apply would change something":
        # there is nothing to compare with, which is the request's fault (exit 2).
        where = f" in network namespace '{scope.ns}'" if scope.ns else ""
        problem = (f"nothing is applied{where}, so there is nothing to compare {ruleset.source} with "
                   f"('bpfwall apply{scope.ns_arg()}' puts it in force)")
        if as_json:
            click.echo(json.dumps({"errors": [{"file": ruleset.source, "line": None, "message": problem}]},
                                  indent=2))
            sys.exit(2)
        raise InputError(f"bpfwall: {problem}")
    live = state.rules()
    changes = diff_mod.compare(live, ruleset, _live_elements(scope, live), _file_elements(ruleset))
    different = diff_mod.differs(changes)
    if as_json:
        click.echo(json.dumps({"differs": different, "in_force": live.source, **changes}, indent=2))
    elif not different:
        out.print(f"no change: {ruleset.source} is what is in force (generation {state.generation})")
    else:
        for line in diff_mod.lines(changes):
            click.echo(line)
    if different:
        sys.exit(1)


def _error_record(problem: str, path: str) -> dict[str, Any]:
    """FILE:LINE: message, as a record; a problem without a line is the file's."""
    import re

    m = re.match(r"^(?P<file>.*?):(?P<line>\d+): (?P<message>.*)$", problem, re.S)
    if m:
        return {"file": m["file"], "line": int(m["line"]), "message": clip(m["message"])}
    return {"file": path, "line": None, "message": clip(problem)}


def _apply_refusals(ruleset, scope: Scope) -> tuple[list[str], list[str]]:
    """What apply would refuse in scope that the file itself does not say, and warnings.
    As root: the group, the file's interfaces in the scope's namespace, and the lockout
    guard as apply runs it (the live connection table, the sessions of that namespace).
    Without root the namespace cannot be entered: the sessions are only warned of, and
    only for the host."""
    from . import access, lockout

    refused: list[str] = []
    try:
        access.group_id(ruleset.group)
    except RuntimeFailure as exc:
        refused.append(str(exc))
    if os.geteuid() != 0:
        if scope.ns:
            return refused, [f"the SSH sessions of network namespace '{scope.ns}' are looked for as root only: "
                             "apply will judge them"]
        return refused, lockout.check_warnings(ruleset)
    missing = []
    with netns.enter(scope.ns):  # (sysfs shows the host's interfaces whatever namespace asks)
        for name in ruleset.interfaces:
            try:
                netns.ifindex(name)
            except RuntimeFailure:
                missing.append(name)
    where = f" in network namespace '{scope.ns}'" if scope.ns else ""
    refused += [f"interface '{i}' (interfaces:) does not exist{where}" for i in missing]
    state = scope.read_state()
    targets = [i for i in ruleset.interfaces if i not in missing] or (state.interfaces if state else None)
    try:
        lockout.guard_scope(scope, ruleset, targets, "apply with --force to go ahead without the guard")
    except RuntimeFailure as exc:
        refused.append(str(exc).replace("\n", "; "))
    return refused, []


_FIELD_NAMES = {shared.F_IFACE: "interface", shared.F_PROTO: "protocol", shared.F_SRC: "src",
                shared.F_DST: "dst", shared.F_SPORT: "sport", shared.F_DPORT: "dport",
                shared.F_TCPFLAGS: "tcp_flags", shared.F_ICMP: "icmp", shared.F_CT: "ct",
                shared.F_CGROUP: "cgroup", shared.F_USER: "user"}


@main.command()
@netns_option
@json_option
@handle_errors
def status(ns: str | None, as_json: bool) -> None:
    """What is applied, where, and whether each link is alive; whether the rule file on disk
    still says what is in force. Without --netns, also which network namespaces have a
    bpfwall of their own."""

    scope = Scope(ns)
    scope.on_wait = lambda message: click.echo(f"note: {message}", err=True)
    st = transaction.status(scope)
    for repair in st["repairs"]:
        click.echo(f"repaired: {repair}", err=True)
    if st["running"]:
        st["rules_file_differs"] = _file_differs(scope)
    if ns is None:
        st["namespaces"] = namespace_scopes()
    from . import kfeatures

    st["features"] = kfeatures.report()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    for line in kfeatures.missing(st["features"]):
        out.print(f"kernel: {line}")
    others = (f"bpfwall runs in network namespaces {', '.join(st['namespaces'])}: "
              "see 'bpfwall status --netns NS'") if st.get("namespaces") else ""
    if not st["running"]:
        out.print(f"bpfwall is not running{f' in netns {ns}' if ns else ' on the host'}")
        if others:
            click.echo(others)
        return
    out.print(f"rules: {st['rules_file']} ({st['rules']} rules, policy ingress "
              f"{st['policy']['ingress']}), generation {st['generation']}, applied {st['applied_at']}")
    if st["rules_file_differs"]:
        click.echo(f"{st['rules_file']}: {st['rules_file_differs']}")  # unwrapped: a path, a command
    if st["sets"]:
        out.print("sets: " + ", ".join(f"{n} ({m['type']}, {m['size']} elements)" for n, m in st["sets"].items()))
    if st.get("awaiting_confirm"):
        a = st["awaiting_confirm"]
        out.print(f"[yellow]generation {a['generation']} awaits 'bpfwall confirm': back to generation "
                  f"{a['rollback_to']} in {a['seconds_left']} s[/yellow]")
    if st.get("notice"):
        out.print(f"[yellow]{st['notice']}[/yellow]")
    if "at_connect" in st:
        out.print("egress rules with owners: judged at connect() and sendmsg(), and by the egress program"
                  if st["at_connect"] else
                  f"egress rules with owners: judged by the egress program only ({st['at_connect_why_not']})")
    from rich.table import Table

    t = Table("interface", "mode", "program", "egress (tcx)", "state")
    for i in st["interfaces"]:
        state = ("attached" if i["attached"] else f"[red]DOWN: {i.get('problem')}[/red]"
                 if i["attached"] is not None else f"unknown ({i.get('problem')})")
        t.add_row(i["name"], i["mode"], str(i.get("program_id", "-")), "yes" if i["egress"] else "no", state)
    out.print(t)
    for i in st["interfaces"]:
        if i.get("generic_why"):
            out.print(f"{i['name']}: generic mode: {i['generic_why']}")
        if i.get("answers"):
            out.print(f"[yellow]{i['name']}: {i['answers']}[/yellow]")
    if others:
        click.echo(others)
    if any(i["attached"] is False for i in st["interfaces"]):
        sys.exit(1)


def _file_differs(scope: Scope) -> str | None:
    """Why the rule file that was applied no longer says what is in force, or None."""
    from . import config
    from . import diff as diff_mod

    live = scope.require_state().rules()
    if not os.path.exists(live.source):
        return "no longer exists"
    with contextlib.suppress(OSError):  # the same bytes: no need to load them again
        raw = config.read_regular_file(live.source, config.RULE_FILE_MAX_BYTES, "rule file")
        if config.digest(raw) == live.inputs.get(live.source):
            return None
    try:
        on_disk = _load(live.source)
    except InputError:
        return "changed on disk, and does not load now ('bpfwall check -f' says why)"
    changes = diff_mod.compare(live, on_disk)
    if diff_mod.differs(changes):
        return f"differs from what is in force (see 'bpfwall check -f {live.source} --diff{scope.ns_arg()}')"
    return None


@main.command()
@netns_option
@click.option("-i", "--interface", "iface", metavar="IFACE",
              help="Only the packets of IFACE (default: every interface).")
@json_option
@click.option("--watch", is_flag=True, help="Refresh a table with rates until interrupted.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@handle_errors
def stats(ns: str | None, iface: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Packets and bytes per rule and policy, and drops by reason."""
    scope = Scope(ns)
    if ns is None and not (scope.read_state() or State(None)).interfaces and namespace_scopes():
        raise RuntimeFailure("bpfwall is not running on the host; it runs in network namespaces "
                             f"{', '.join(namespace_scopes())}: give --netns NS")
    data = stats_mod.collect(scope, iface)
    if as_json and not watch:
        click.echo(json.dumps(data, indent=2))
        return
    if not watch:
        out.print(_stats_table(data, None, 0))
        return
    from rich.live import Live

    with Live(_stats_table(data, None, 0), console=out.console, auto_refresh=False) as live:
        prev, t_prev = data, time.monotonic()
        while True:
            time.sleep(interval)
            data = stats_mod.collect(scope, iface)
            now = time.monotonic()
            live.update(_stats_table(data, prev, now - t_prev), refresh=True)
            prev, t_prev = data, now


def _stats_table(data: dict[str, Any], prev: dict[str, Any] | None, dt: float) -> Table:
    from rich.table import Table

    t = Table("rule", "dir", "action", "packets", "bytes", *(["pps"] if prev else []),
              title=f"bpfwall on {', '.join(data['interfaces'])} (generation {data['generation']})")
    old = {(r["name"], r["direction"]): r["packets"] for r in prev["rules"]} if prev else {}
    for r in data["rules"]:
        before = old.get((r["name"], r["direction"]), 0)
        rate = [f"{(r['packets'] - before) / dt:,.0f}"] if prev and dt else []
        t.add_row(r["name"], r["direction"], r["action"], f"{r['packets']:,}", f"{r['bytes']:,}", *rate)
    for direction in ("ingress", "egress"):
        pol = data["policy"][direction]
        rate = []
        if prev and dt:
            rate = [f"{(pol['packets'] - prev['policy'][direction]['packets']) / dt:,.0f}"]
        t.add_row("(policy)", direction, pol["action"], f"{pol['packets']:,}", f"{pol['bytes']:,}", *rate,
                  end_section=direction == "egress")
    d = data["drops"]
    g = data["guard"]
    t.caption = (f"drops: {d['rule']:,} by rules, {d['policy']:,} by policy, {d['malformed']:,} "
                 f"malformed, {d['banned']:,} from banned sources; {data['rejects_sent']:,} rejects "
                 f"answered{_undelivered(data)}, {data['rejects_suppressed']:,} over the answer budget; "
                 f"{data['passed_not_ip']:,} non-IP passed; bans: {g['bans_added']:,} by rules, "
                 f"{g['scan_bans']:,} for port scans; {g['syncookies_sent']:,} SYNs answered with cookies")
    return t


def _undelivered(data: dict[str, Any]) -> str:
    n = data.get("answers_undelivered")
    return f" ({n:,} answers the interface could not deliver)" if n else ""


@main.command()
@netns_option
@click.option("-i", "--interface", "iface", metavar="IFACE",
              help="The interface the packet arrives on, or leaves by (required unless --file).")
@click.option("--direction", type=click.Choice(["ingress", "egress"]), default=None,
              help="The packet arrives (ingress, the default) or leaves (egress; implied by --cgroup "
                   "and --user).")
@click.option("--cgroup", metavar="PATH", default=None,
              help="Egress: the sending socket's cgroup, relative to the cgroup2 mount (with --user "
                   "alone: the root cgroup).")
@click.option("--user", "user", metavar="NAME|UID", default=None,
              help="Egress: the sending socket's user (with --cgroup alone: root). Neither: a packet "
                   "without a socket, as a forwarded one.")
@click.option("-f", "--file", "path", metavar="FILE",
              help="Judge by this rule file with the reference model alone: no kernel, no root.")
@click.option("--proto", required=True, help="tcp, udp, sctp, icmp, icmpv6 or a number.")
@click.option("--src", required=True, help="Source address.")
@click.option("--dst", required=True, help="Destination address.")
@click.option("--sport", type=click.IntRange(0, 65535), default=40000, show_default=True)
@click.option("--dport", type=click.IntRange(0, 65535), default=0)
@click.option("--flags", default="syn", show_default=True, help="TCP flags set, e.g. syn or syn,ack.")
@click.option("--icmp-type", default=None, metavar="TYPE",
              help="ICMP type, a name as rule files take it (echo-request) or a number (default echo request).")
@click.option("--icmp-code", default="0", show_default=True, metavar="CODE", help="ICMP code, a name or a number.")
@json_option
@handle_errors
def explain(ns: str | None, iface: str | None, direction: str | None, cgroup: str | None, user: str | None,
            path: str | None, proto: str, src: str, dst: str, sport: int, dport: int, flags: str,
            icmp_type: str | None, icmp_code: str, as_json: bool) -> None:
    """Run one packet through the loaded program and say which rule decides it.

    The packet goes through the running bpfwall_ingress (or, with --direction
    egress, bpfwall_egress) with BPF_PROG_TEST_RUN (nothing is sent on the
    wire, nothing counted); the reference model's answer is shown beside it,
    and a disagreement is an error. An egress packet with --cgroup is run by a
    short-lived child process in a cgroup of its own just below that one. With
    --file, the reference model judges the packet by that rule file (as a
    first packet: no connection is tracked yet), which needs no root.
    """
    from . import explain as explain_mod

    direction = direction or ("egress" if cgroup is not None or user is not None else "ingress")
    if direction == "ingress" and (cgroup is not None or user is not None):
        raise InputError("--cgroup and --user name the socket an egress packet leaves from: "
                         "use them with --direction egress")
    uid = None
    if user is not None:
        uid, err = owners.resolve_user(user)
        if err:
            raise InputError(f"--user: {err}")
    if cgroup is not None:
        cgroup, err = owners.normalise_cgroup(cgroup)
        if err:
            raise InputError(f"--cgroup: {err}")
    owner = explain_mod.owner_of(direction, cgroup, uid)
    frame = explain_mod.frame(proto, src, dst, sport, dport, flags, icmp_type, icmp_code)
    if path is not None:
        if ns is not None:
            raise InputError("--netns: explain -f judges by the file alone, in no namespace; leave one out")
        ruleset = _load(path)
        _compile(ruleset, path)  # what apply would refuse, explain refuses too
        result = explain_mod.by_file(ruleset, frame, iface, path, direction, owner)
    elif iface is None:
        raise InputError("-i IFACE is required (or --file FILE to judge by a rule file)")
    else:
        result = explain_mod.live(Scope(ns), frame, iface, src, direction, owner)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        by = f"rule '{result['rule']}'" if result["rule"] else result["decided_by"]
        where = f" (line {result['line']} of {result['file']})" if result["line"] else ""
        if "reference" not in result:
            out.print(f"{result['verdict'].upper()} ({result['action']}) by {by}{where}  "
                      "(reference model, no kernel)")
            _print_at_connect(result.get("at_connect"))
            return
        out.print(f"{result['verdict'].upper()} ({result['action']}) by {by}{where}")
        ref = result["reference"]
        ref_by = f"rule '{ref['rule']}'" if ref["rule"] else ref["decided_by"]
        out.print(f"reference model: {ref['verdict'].upper()} by {ref_by}"
                  f"{'' if result['agree'] else '  [red]DISAGREES[/red]'}")
        _print_at_connect(result.get("at_connect"))
    if "agree" in result and not result["agree"]:
        sys.exit(1)


def _print_at_connect(call: dict | None) -> None:
    """explain's line on the connect() or sendmsg() call that would send the packet (None:
    the hooks have no say)."""
    if call is None:
        return
    if not call["judged"]:
        out.print(f"at connect(): not judged ({call['why']}); the packet decides")
    elif call["outcome"] == "go":
        out.print("at connect(): goes on, and its packets are judged (reference model)")
    else:
        by = f"rule '{call['rule']}'" if call["rule"] else "the egress policy"
        out.print(f"at connect(): refused with {call['errno']} by {by}, before any packet (reference model)")


@main.command()
@netns_option
@json_option
@handle_errors
def conntrack(ns: str | None, as_json: bool) -> None:
    """The tracked connections: opener first, state, age, idle time, packets each way."""
    data = conntrack_mod.flows(Scope(ns))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["tracking"]:
        out.print("connection tracking is off: no rule of the applied file matches 'ct'")
        return
    ends = [(names.endpoint(f["src"], f["sport"], f["family"]), names.endpoint(f["dst"], f["dport"], f["family"]))
            for f in data["flows"]]
    # An address is never cut or folded: its columns are as wide as the widest one, and
    # the table may run past the terminal (or a pipe's 80 columns) rather than lose it.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    wide = Console(highlight=False, width=max(out.width, 40 + sum(max((len(e[i]) for e in ends), default=4)
                                                                    for i in (0, 1)) + 60))
    t = Table("proto", "from", "to", "state", "age s", "idle s", "packets", "bytes",
              title=f"{data['live']} live flows ({data['entries']} entries of {data['max_entries']})")
    for col in (t.columns[1], t.columns[2]):
        col.no_wrap, col.overflow = True, "ignore"
    for f, (src, dst) in zip(data["flows"], ends, strict=True):
        t.add_row(f["proto"], Text(src), Text(dst), f["state"],
                  f"{f['age']:.0f}", f"{f['idle']:.0f}", "{} / {}".format(*f["packets"]),
                  "{} / {}".format(*f["bytes"]))
    t.caption = (f"created {data['created']}, evicted when full {data['evicted']}, "
                 f"invalid packets {data['invalid_packets']}; packets and bytes: opener / replies")
    wide.print(t)


@main.command()
@netns_option
@json_option
@handle_errors
def bans(ns: str | None, as_json: bool) -> None:
    """The banned sources: by which rule (or port scan), for how long yet.

    IPv4 sources are banned per address, IPv6 ones per /64.
    """
    from . import bans as bans_mod

    data = bans_mod.listing(Scope(ns))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    t = Table("source", "reason", "rule", "banned s", "expires in s", title=f"{len(data)} banned sources")
    for b in data:
        t.add_row(b["source"], b["reason"], b["rule"] or "-", f"{b['banned_for']:.0f}", f"{b['expires_in']:.0f}")
    out.print(t)


@main.command()
@click.argument("address")
@netns_option
@handle_errors
def unban(address: str, ns: str | None) -> None:
    """Lift the ban on ADDRESS (IPv4, or any IPv6 address of the banned /64)."""
    from . import bans as bans_mod

    out.print(f"unbanned {bans_mod.unban(Scope(ns), address)}")


@main.command()
@netns_option
@click.option("-i", "--interface", "interfaces", multiple=True, metavar="IFACE",
              help="Detach only from IFACE (repeatable). Default: everything.")
@handle_errors
def down(ns: str | None, interfaces: tuple[str, ...]) -> None:
    """Detach bpfwall; with no -i, remove every link, pin and map it left (nothing there:
    exit 0). An interface named with -i that bpfwall does not protect is exit 1, after the
    others named are detached: a typo must not pass for a detach."""
    ApplyReport = transaction.ApplyReport  # noqa: N806

    scope = Scope(ns)
    scope.on_wait = lambda message: click.echo(f"note: {message}", err=True)
    report = ApplyReport()
    removed = transaction.down(scope, list(interfaces) or None, report)
    for repair in report.repairs:
        click.echo(f"repaired: {repair}", err=True)
    if removed or not interfaces:
        out.print(f"detached from {', '.join(removed)}" if removed else "nothing was attached")
    unprotected = [name for name in interfaces if name not in removed]
    if unprotected:
        where = f" in network namespace '{ns}'" if ns else ""
        raise RuntimeFailure(f"{', '.join(unprotected)}: not protected by bpfwall{where} "
                             "('bpfwall status' lists what is)")


@main.group(name="set")
def set_group() -> None:
    """Change or list a CIDR set of the rule set in force, without re-applying.

    A command's changes reach the data plane all at once: a packet sees the set
    either as it was before the command or as it is after. Elements are
    addresses or CIDRs, IPv4 and IPv6 mixed; '-' reads them from stdin, one a
    line, '#' comments allowed (FireHOL netset format). A later 'apply' loads
    the sets as the rule file has them.
    """


def _read_elements(values: tuple[str, ...]) -> list:
    from .cidrset import parse_element

    texts: list[tuple[str, str]] = []
    for v in values:
        if v == "-":
            for n, line in enumerate(sys.stdin, 1):
                text = line.split("#", 1)[0].strip()
                if text:
                    texts.append((text, f"<stdin>:{n}"))
        else:
            texts.append((v, "argument"))
    problems, elements = [], []
    for text, where in texts:
        e, err = parse_element(text)
        if err:
            problems.append(f"{where}: {err}")
        else:
            elements.append(e)
    if problems:
        raise InputError(problems)
    if not elements:
        raise InputError("no elements given (pass them as arguments, or '-' to read stdin)")
    return elements


def _set_change(name: str, values: tuple[str, ...], ns: str | None, add: bool, force: bool) -> None:

    scope = Scope(ns)
    with netns.enter(ns):
        scope.cidr_set_slot(name)  # a missing or port set is the first thing to say
    elements = _read_elements(values)
    t0 = time.monotonic()
    changed, unchanged = transaction.set_change(scope, name, elements, add, guard=not force)
    ms = (time.monotonic() - t0) * 1000
    verb = "added" if add else "removed"
    extra = f" ({unchanged} already there)" if add and unchanged else ""
    out.print(f"set '{name}': {verb} {changed} element{'s' if changed != 1 else ''}{extra} in {ms:.1f} ms")


_set_force = click.option("--force", is_flag=True,
                          help="Skip the lockout guard, which refuses a change that would cut an SSH session "
                               "of this host.")


@set_group.command(name="add")
@click.argument("name")
@click.argument("elements", nargs=-1, required=True)
@netns_option
@_set_force
@handle_errors
def set_add(name: str, elements: tuple[str, ...], ns: str | None, force: bool) -> None:
    """Add ELEMENTS (addresses or CIDRs, or '-' for stdin) to set NAME. Refused, as apply
    is, when the set would then cut one of this host's SSH sessions (--force: go ahead)."""
    _set_change(name, elements, ns, add=True, force=force)


@set_group.command(name="del")
@click.argument("name")
@click.argument("elements", nargs=-1, required=True)
@netns_option
@_set_force
@handle_errors
def set_del(name: str, elements: tuple[str, ...], ns: str | None, force: bool) -> None:
    """Remove ELEMENTS from set NAME; every one must be in it, or nothing changes. Refused
    when an SSH session of this host would then be cut (an allow list), as for add."""
    _set_change(name, elements, ns, add=False, force=force)


@set_group.command(name="list")
@click.argument("name")
@netns_option
@json_option
@handle_errors
def set_list(name: str, ns: str | None, as_json: bool) -> None:
    """Print the elements of set NAME, one a line (sorted: IPv4, then IPv6)."""
    from .cidrset import format_element

    elements = Scope(ns).set_elements(name)
    if as_json:
        click.echo(json.dumps({"name": name, "size": len(elements),
                               "elements": [format_element(e) for e in elements]}))
        return
    for e in elements:
        click.echo(format_element(e))


@main.command()
@netns_option
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many refreshes.")
@handle_errors
def top(ns: str | None, interval: float, count: int | None) -> None:
    """A live view: the busiest rules, the top dropped sources and ports, and rates.

    While it runs, the data plane counts drops by port and samples them by source
    (one drop in 16); that stops by itself within a few seconds of top's end, however
    it ends."""
    from . import top as top_mod

    scope = Scope(ns)
    lease = top_mod.lease_seconds(interval)
    prev = top_mod.snapshot(scope, lease)
    from rich.live import Live

    with Live(top_mod.render(prev, None), console=out.console, auto_refresh=False) as live:
        n = 0
        while count is None or n < count:
            time.sleep(interval)
            cur = top_mod.snapshot(scope, lease)
            live.update(top_mod.render(cur, prev), refresh=True)
            prev, n = cur, n + 1


@main.command(name="log")
@netns_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they come, until interrupted.")
@json_option
@click.option("--output", metavar="FILE|journal",
              help="Append the records to FILE as JSON lines, or send them to the systemd journal "
                   "(with -f: a log daemon).")
@handle_errors
def log_cmd(ns: str | None, follow: bool, as_json: bool, output: str | None) -> None:
    """Print the records of packets decided by rules with `log`: time, interface, direction,
    rule, verdict, addresses, ports, protocol, TCP flags, length. Each rule's limit is
    enforced in the data plane (default 10 a second); `stats --json` counts what it held
    back. Reading consumes the records."""
    from . import logs

    scope = Scope(ns)
    journal = logs.Journal() if output == "journal" else None
    sink = None
    if output and not journal:
        state = scope.read_state()
        sink = logs.open_log_file(output, state.group if state else None)

    def emit(d: dict) -> None:
        if journal:
            journal.send(d)
        elif sink:
            sink.write(json.dumps(d) + "\n")
        elif as_json:
            click.echo(json.dumps(d))
        else:
            click.echo(logs.text(d))

    try:
        logs.read(scope, follow, emit)
    finally:
        for s in (sink, journal):
            if s:
                s.close()
        if journal and journal.undelivered:
            click.echo(f"bpfwall: {journal.undelivered} records could not be delivered to the journal",
                       err=True)


@main.command()
@click.option("--listen", default="127.0.0.1:9101", show_default=True, metavar="HOST:PORT",
              help="Where to serve /metrics. Loopback unless you say otherwise.")
@netns_option
@handle_errors
def exporter(listen: str, ns: str | None) -> None:
    """Serve Prometheus metrics of every scope (the host's and each network namespace's,
    label netns, empty for the host), or with --netns of that one: per-rule packets and bytes,
    policies, drops by reason, set sizes, connection table use, program runs and run time
    (the kernel counts those when sysctl kernel.bpf_stats_enabled=1). Runs until
    interrupted and follows every apply."""
    from .exporter import serve
    from .exporter import url as exporter_url

    serve(ns, listen, lambda host, port: click.echo(
        f"serving {exporter_url(host, port)} for {f'netns {ns}' if ns else 'every scope'}", err=True))


@main.command()
@click.option("--quick", is_flag=True, help="Smaller sizes and shorter runs: under two minutes.")
@click.option("--out", "out_dir", default="bench-results", show_default=True, metavar="DIR",
              help="Where bench.json and the PNG charts go.")
@click.option("--only", type=click.Choice(["packet", "flood", "stream", "latency"]), multiple=True,
              help="Run only this part (repeatable). Default: all four.")
@handle_errors
def bench(quick: bool, out_dir: str, only: tuple[str, ...]) -> None:
    """Benchmark per-packet cost, floods on real traffic, a TCP stream and control-plane
    latency, as ratios to a trivial XDP program, a reference blocklist program, nftables,
    iptables with ipset and xdp-filter measured in the same run. A part that cannot run here
    (a peer missing, a kernel feature absent) is reported as skipped with its reason; exit 0
    when anything was measured. Needs root; builds its own namespaces and removes them."""
    from . import bench as bench_mod
    from .bench import table

    plan = bench_mod.Plan.quick() if quick else bench_mod.Plan.full()
    if only:
        plan.parts = list(only)
    results = bench_mod.run(plan, out_dir, lambda msg: click.echo(f"... {msg}", err=True))
    table.show(results, out)
    if not bench_mod.measured(results):
        raise RuntimeFailure("nothing could be measured: " + "; ".join(results["skipped"].values()))


@main.command()
@handle_errors
def demo() -> None:
    """Build a lab of two namespaces, apply the example rules, send traffic, show results."""
    from .demo import run_demo

    sys.exit(run_demo(out))


# The fleet's commands live in their own module, which uses the helpers above.
from .fleet_cli import agent, fleet  # noqa: E402

main.add_command(agent)
main.add_command(fleet)

if __name__ == "__main__":
    main()
