"""bpfwall(8), generated from the CLI itself: python -m bpfwall.manpage > bpfwall.8

One page for the whole command (click-man would write a page per subcommand, and the
commands are short enough to read together), so the options and help texts never
drift from what `bpfwall COMMAND --help` says.
"""

from __future__ import annotations

import datetime
import inspect
import re
import sys

import click

from . import cli


def _roff(text: str) -> str:
    """Escapes text for roff: backslashes, and a leading dot or quote on a line."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _help(text: str | None) -> str:
    """A docstring as roff paragraphs (roff fills the lines itself)."""
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return "\n.PP\n".join(_roff(" ".join(p.split())) for p in paragraphs if p.strip())


def _options(ctx: click.Context, command: click.Command) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text or "")]
    return out


def render() -> str:
    group = cli.main
    ctx = click.Context(group, info_name="bpfwall")
    date = datetime.date.today().isoformat()
    out = [f'.TH BPFWALL 8 "{date}" "bpfwall" "System Administration"', ".SH NAME",
           "bpfwall \\- an XDP host firewall with an nftables-class rule language", ".SH SYNOPSIS",
           "\\fBbpfwall\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]", ".SH DESCRIPTION", _help(group.help),
           ".SH COMMANDS"]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        out += [".SS " + _roff(f"bpfwall {name} {' '.join(command.collect_usage_pieces(sub))}"),
                _help(command.help), *(_options(sub, command))]
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(sub):
                leaf = command.get_command(sub, sub_name)
                leaf_ctx = click.Context(leaf, info_name=sub_name, parent=sub)
                out += [".SS " + _roff(f"bpfwall {name} {sub_name} {' '.join(leaf.collect_usage_pieces(leaf_ctx))}"),
                        _help(leaf.help), *_options(leaf_ctx, leaf)]
    out += [".SH FILES", ".TP", "/etc/bpfwall/bpfwall.yaml", "the rule file the bpfwall service applies at boot",
            ".TP", "/sys/fs/bpf/bpfwall/", "pinned links, programs and maps (root's)",
            ".TP", "/run/bpfwall/", "what was applied, the journal of an apply, the lock",
            ".SH EXIT STATUS", "0 success, 1 runtime failure, 2 bad input (rule file, arguments).",
            ".SH SEE ALSO", "\\fBbpfwall.yaml\\fR(5), \\fBnft\\fR(8), \\fBiptables\\fR(8), \\fBbpftool\\fR(8);",
            "the documentation in /usr/local/share/doc/bpfwall"]
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** as roff fonts; links as their text."""
    text = _roff(text)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    return re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)


def rule_language(markdown: str) -> str:
    """bpfwall.yaml(5) from docs/rule-language.md: one source for the page and the docs.
    Handles what that page uses: headings, paragraphs, lists, code blocks, tables."""
    out = [".TH BPFWALL.YAML 5", ".SH NAME", "bpfwall.yaml \\- the rule file of bpfwall", ".SH DESCRIPTION"]
    code = False
    for line in markdown.splitlines()[1:]:
        if line.startswith("```"):
            out.append(".EE" if code else ".EX")
            code = not code
        elif code:
            out.append(_roff(line) or " ")
        elif line.startswith("#"):
            out.append((".SH " if line.startswith("## ") else ".SS ") + _roff(line.lstrip("# ")).upper())
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            if cells[0] == "key":
                continue
            out += [".TP", _inline(cells[0]), _inline(" \u2014 ".join(cells[1:]))]
        elif line.startswith(("- ", "* ")):
            out += [".IP \\(bu 2", _inline(line[2:])]
        elif not line.strip():
            out.append(".PP")
        else:
            out.append(_inline(line.strip()))
    out += [".SH SEE ALSO", "\\fBbpfwall\\fR(8), \\fBnft\\fR(8)"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rule-language":
        with open(sys.argv[2], encoding="utf-8") as f:
            sys.stdout.write(rule_language(f.read()))
    else:
        sys.stdout.write(render())
