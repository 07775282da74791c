"""Every ctypes struct of shared.py has the size and member offsets of its C twin in the object's BTF."""

from __future__ import annotations

import json
import subprocess

from bpfwall import shared
from bpfwall.generation import object_path


def test_structs_match_btf():
    dump = subprocess.run(["bpftool", "-j", "btf", "dump", "file", object_path()],
                          capture_output=True, text=True, check=True).stdout
    types = {t["name"]: t for t in json.loads(dump)["types"] if t.get("kind") == "STRUCT"}
    for cname, ctype in shared.STRUCTS.items():
        assert cname in types, f"struct {cname} is not in the object's BTF"
        t = types[cname]
        assert t["size"] == ctypes_size(ctype), cname
        btf_members = [(m["name"], m["bits_offset"] // 8) for m in t["members"]]
        py_members = [(name, getattr(ctype, name).offset) for name, *_ in ctype._fields_]
        assert btf_members == py_members, cname


def ctypes_size(ctype) -> int:
    import ctypes

    return ctypes.sizeof(ctype)


def test_map_registry_is_every_map():
    """maps.py names every map the objects declare, and no other: the pin lists, the
    scope's tables and the group's read access are all derived from it."""
    from bpfwall import dispatcher, libbpf, maps

    with libbpf.BpfObject(object_path()) as obj:
        assert sorted(obj.map_names()) == sorted(m.name for m in maps.BPFWALL_MAPS)
    with libbpf.BpfObject(dispatcher.object_path()) as obj:
        assert sorted(obj.map_names()) == sorted(m.name for m in maps.DISPATCH_MAPS)
    assert len({m.name for m in maps.BPFWALL_MAPS}) == len(maps.BPFWALL_MAPS)
