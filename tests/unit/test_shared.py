"""The Python constants of shared.py equal those of bpf/shared.h."""

from __future__ import annotations

import os
import re

from bpfwall import shared

HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "bpf", "shared.h")


def header_constants() -> dict[str, int]:
    text = re.sub(r"/\*.*?\*/", "", open(HEADER).read(), flags=re.S)
    values: dict[str, int] = {}

    def ev(expr: str) -> int:
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]\b", r"\1", expr)
        return eval(expr, {}, dict(values))  # the header's own arithmetic, nothing else

    for name, expr in re.findall(r"#define[ \t]+(BPFWALL_\w+)[ \t]+(.+)", text):
        values[name] = ev(expr.strip())
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\};", text, flags=re.S):
        nxt = 0
        for item in filter(None, (x.strip() for x in body.split(","))):
            name, _, expr = (p.strip() for p in item.partition("="))
            nxt = ev(expr) if expr else nxt
            values[name] = nxt
            nxt += 1
    return values


def test_constants_match_header():
    """Every BPFWALL_* constant and enumerator of shared.h has its namesake in shared.py
    (the prefix dropped), with the same value: the list comes from the header itself."""
    h = header_constants()
    names = [n for n in h if n.startswith("BPFWALL_")]
    assert len(names) > 90  # the parse found the header's constants
    missing = [n for n in names if not hasattr(shared, n.removeprefix("BPFWALL_"))]
    assert not missing, f"shared.py lacks {missing}"
    wrong = {n: (h[n], getattr(shared, n.removeprefix("BPFWALL_"))) for n in names
             if h[n] != getattr(shared, n.removeprefix("BPFWALL_"))}
    assert not wrong, f"header vs shared.py: {wrong}"
