"""`cgroup:` and `user:` in the rule file: what is accepted, what is refused and why, how
check reports owners the host does not have, and what check --diff sees change."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bpfwall import config, diff, owners
from bpfwall.cli import main
from bpfwall.errors import InputError


def rules(*lines: str) -> str:
    return "version: 1\nrules:\n" + "".join(f"  - {line}\n" for line in lines)


def test_egress_rules_take_a_cgroup_path_and_a_user_by_name_or_uid():
    rs = config.loads(rules(
        "{name: a, direction: egress, cgroup: /system.slice/backup.service/, user: root, action: accept}",
        "{name: b, direction: egress, user: 4242, action: accept}",
        '{name: c, direction: egress, user: "1000", action: accept}'), "r.yaml")
    assert [(r.cgroup, r.user) for r in rs.rules] == [("system.slice/backup.service", 0), (None, 4242), (None, 1000)]


@pytest.mark.parametrize("line, says", [
    ("{name: x, cgroup: system.slice, action: accept}", "cgroup needs an egress rule"),
    ("{name: x, user: root, action: accept}", "user needs an egress rule"),
    ("{name: x, direction: egress, cgroup: /, action: accept}", "the root cgroup holds every process"),
    ("{name: x, direction: egress, cgroup: ../etc, action: accept}", "not a plain path"),
    ("{name: x, direction: egress, cgroup: a//b, action: accept}", "not a plain path"),
    ("{name: x, direction: egress, cgroup: [a], action: accept}", "a cgroup is a path"),
    ("{name: x, direction: egress, user: no-such-user-here, action: accept}", "no user 'no-such-user-here'"),
    ("{name: x, direction: egress, user: 4294967295, action: accept}", "out of range"),
    ("{name: x, direction: egress, user: true, action: accept}", "a user is a name or a uid"),
])
def test_bad_owners_are_one_line_errors(line: str, says: str):
    with pytest.raises(InputError) as err:
        config.loads(rules(line), "r.yaml")
    assert says in str(err.value) and "r.yaml:3" in str(err.value)


def test_a_cgroup_path_longer_than_the_data_plane_key_is_refused():
    assert owners.normalise_cgroup("a" * 254)[1] is None
    assert "at most 254 bytes" in owners.normalise_cgroup("a" * 255)[1]
    assert "levels deep" in owners.normalise_cgroup("/".join("a" * 32))[1]


def test_cgroups_cover_themselves_and_what_is_below():
    assert owners.cgroup_covers("a/b", "a/b") and owners.cgroup_covers("a/b", "a/b/c")
    assert not owners.cgroup_covers("a/b", "a/bc") and not owners.cgroup_covers("a/b", "a")


def test_check_says_which_named_owners_this_host_lacks(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(rules("{name: x, direction: egress, cgroup: bpfwall-no-such/unit.service, action: accept}",
                          "{name: y, direction: egress, user: 4242999, action: accept}"))
    res = CliRunner().invoke(main, ["check", "-f", str(path)])
    assert res.exit_code == 0, res.output
    assert "4242999 has no user on this host" in res.stderr
    mount = owners.cgroup2_mount()
    if mount is None:
        assert "no cgroup v2 mount" in res.stderr
    else:
        assert "cgroup bpfwall-no-such/unit.service does not exist now" in res.stderr
        assert "from the moment it is made" in res.stderr


def test_diff_sees_a_changed_owner():
    old = config.loads(rules("{name: x, direction: egress, cgroup: a, action: accept}"), "old.yaml")
    new = config.loads(rules("{name: x, direction: egress, cgroup: b, user: 0, action: accept}"), "new.yaml")
    assert diff.differs(diff.compare(old, new, {}, {}))
    assert not diff.differs(diff.compare(old, old, {}, {}))
