"""A host's effective rule file, merged from the fleet's policies (no etcd needed)."""

from __future__ import annotations

import pytest

from bpfwall import config
from bpfwall.errors import InputError
from bpfwall.fleet import policy

BASE = """\
version: 1
policy: {ingress: drop}
sets:
  blocked: {type: cidr, elements: [192.0.2.0/24]}
rules:
  - {name: no-blocked, src: "@blocked", action: drop}
  - {name: ssh, proto: tcp, dport: 22, action: accept}
"""

WEB = """\
version: 1
select: {role: web}
order: 10
policy: {ingress: accept}
sets:
  blocked: {type: cidr, elements: [198.51.100.0/24]}
rules:
  - {name: http, proto: tcp, dport: [80, 443], action: accept}
"""


def both() -> list[policy.Policy]:
    return [policy.parse("web", WEB), policy.parse("base", BASE)]


def test_hosts_get_the_policies_that_select_them_in_order():
    web = policy.effective(both(), {"role": "web"}, {}).ruleset
    assert [r.name for r in web.rules] == ["no-blocked", "ssh", "http"]
    assert web.policy["ingress"] == "accept"  # the later policy (order 10) sets it last
    assert {str(e) for e in web.cidr_sets["blocked"].elements} == {
        str(e) for e in policy.store_elements(["192.0.2.0/24", "198.51.100.0/24"])[0]}
    db = policy.effective(both(), {"role": "db"}, {}).ruleset
    assert [r.name for r in db.rules if not r.implicit] == ["no-blocked", "ssh"]
    assert db.policy["ingress"] == "drop" and len(db.cidr_sets["blocked"].elements) == 1
    assert web.rules[2].line == 8  # lines are the policy's own


def test_a_rule_name_used_twice_names_both_policies():
    clash = WEB.replace("name: http", "name: ssh")
    with pytest.raises(InputError) as exc:
        policy.effective([policy.parse("web", clash), policy.parse("base", BASE)], {"role": "web"}, {})
    (problem,) = exc.value.problems
    assert problem.startswith("policies/web:8: rules[2].name: duplicate rule name 'ssh'")
    assert "first at policies/base:7" in problem


def test_problems_name_the_policy_and_line():
    with pytest.raises(InputError) as exc:
        policy.parse("broken", "version: 1\nrules:\n  - {name: a, action: drop\n")
    assert exc.value.problems[0].startswith("policies/broken:")
    missing_set = WEB.replace("rules:\n", "rules:\n  - {name: x, dst: '@nowhere', action: drop}\n")
    with pytest.raises(InputError) as exc:
        policy.effective([policy.parse("web", missing_set)], {"role": "web"}, {})
    assert exc.value.problems[0].startswith("policies/web:8: rules[0].dst: unknown set 'nowhere'")
    with pytest.raises(InputError, match="policies/p:2: select: must be a mapping"):
        policy.parse("p", "version: 1\nselect: [web]\n")
    with pytest.raises(InputError, match="policies/p:2: order: must be an integer"):
        policy.parse("p", "version: 1\norder: first\n")
    with pytest.raises(InputError, match="no policy selects this host"):
        policy.effective([policy.parse("web", WEB)], {"role": "db"}, {})


def test_a_fleet_set_takes_the_stores_elements():
    fleet = BASE.replace("blocked: {type: cidr, elements: [192.0.2.0/24]}",
                         "blocked: {type: cidr, fleet: true, elements: [192.0.2.0/24]}")
    result = policy.effective([policy.parse("base", fleet)], {},
                              {"blocked": {"203.0.113.7", "2001:db8::/32", "not-an-address"}})
    assert len(result.ruleset.cidr_sets["blocked"].elements) == 3
    assert len(result.warnings) == 1 and result.warnings[0].startswith("sets/blocked/not-an-address: ")
    # the policy's own element is what a delete in the store must not take away
    assert result.fleet_static == {"blocked": {(4, 0xC0000200, 24)}}


def test_sets_of_one_name_must_agree_on_type():
    ports = WEB.replace("blocked: {type: cidr, elements: [198.51.100.0/24]}", "blocked: {type: port, elements: [1]}")
    with pytest.raises(InputError, match="policies/web:6: sets.blocked: type 'port' cannot be united"):
        policy.effective([policy.parse("web", ports), policy.parse("base", BASE)], {"role": "web"}, {})


def test_the_digest_follows_the_selected_texts():
    a = policy.digest(both(), {"role": "web"})
    assert a == policy.digest(list(reversed(both())), {"role": "web"})
    assert a != policy.digest(both(), {"role": "db"})


def _with_file(name: str) -> list[policy.Policy]:
    return [policy.parse("p", f"version: 1\nsets:\n  s: {{type: cidr, files: ['{name}']}}\n"
                              "rules:\n  - {name: d, src: '@s', action: drop}\n")]


def _problems(name: str, fence: config.FileFence) -> str:
    with pytest.raises(InputError) as exc:
        policy.effective(_with_file(name), {}, {}, fence)
    return "\n".join(exc.value.problems)


def test_fleet_set_files_come_only_from_the_files_dir(tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("root:x:0:0\n")
    files = tmp_path / "files"
    files.mkdir()
    (files / "ok.netset").write_text("192.0.2.1\n")
    (files / "bad.netset").write_text("hunter2-password\n")
    (files / "link.netset").symlink_to(outside)
    fence = config.FileFence(str(files))
    got = policy.effective(_with_file("ok.netset"), {}, {}, fence).ruleset
    assert len(got.cidr_sets["s"].elements) == 1
    assert "given no --files-dir" in _problems("ok.netset", config.FileFence(None))
    assert "given no --files-dir" in _problems("ok.netset", policy.NO_FILES)
    assert "relative to the agent's --files-dir" in _problems(str(outside), fence)
    assert "without '..'" in _problems("../secret", fence)
    assert "leads out of the agent's --files-dir" in _problems("link.netset", fence)
    bad = _problems("bad.netset", fence)
    assert "not shown" in bad and "hunter2" not in bad
    # checked before a push, where the hosts' files are not: names only
    policy.effective(_with_file("not-here.netset"), {}, {}, config.FileFence(None, read=False))
    assert "without '..'" in _problems("a/../../x", config.FileFence(None, read=False))
