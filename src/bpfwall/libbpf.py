"""ctypes binding of the system libbpf (libbpf1 1.1): the calls bpfwall uses, nothing more.

Every wrapper raises BpfError with the failing call and errno, so callers
never inspect return codes. libbpf's own log (the verifier's included) is
captured and attached to load errors instead of being printed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
    sizeof,
)

BPF_XDP = 37
BPF_TCX_EGRESS = 47
# enum bpf_attach_type: the cgroup hooks of connect() and of unconnected UDP sendmsg().
BPF_CGROUP_INET4_CONNECT = 10
BPF_CGROUP_INET6_CONNECT = 11
BPF_CGROUP_UDP4_SENDMSG = 14
BPF_CGROUP_UDP6_SENDMSG = 15
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


class BpfError(OSError):
    """A libbpf call failed; .errno holds the error number."""

    def __init__(self, call: str, err: int, log: str = "") -> None:
        err = abs(err)
        msg = f"{call}: {os.strerror(err)}"
        super().__init__(err, msg)
        self.call = call
        self.log = log

    def __str__(self) -> str:
        return self.strerror


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise ImportError(f"cannot load libbpf ({name}): install the libbpf1 package") from exc


_lib = _load_library()
_libc = ctypes.CDLL(None, use_errno=True)

# --- libbpf's print callback: capture, do not print -------------------------------------

_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_log_lines: list[str] = []


def _capture(level: int, fmt: bytes, va_list: int) -> int:
    buf = ctypes.create_string_buffer(1 << 20)
    _libc.vsnprintf(buf, len(buf), fmt, c_void_p(va_list))
    _log_lines.append(buf.value.decode(errors="replace"))
    del _log_lines[:-400]  # the verifier's tail is what explains a failure
    return 0


_print_cb = _PRINT_FN(_capture)
_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print.restype = c_void_p
_lib.libbpf_set_print(_print_cb)


def take_log() -> str:
    text = "".join(_log_lines)
    _log_lines.clear()
    return text


# --- option structs (layouts of libbpf 1.1's headers) ------------------------------------


class TestRunOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class LinkCreateOpts(Structure):
    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("_pad", c_uint32), ("_union", c_uint64 * 4)]


class LinkUpdateOpts(Structure):
    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("old_prog_fd", c_uint32)]


class MapBatchOpts(Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class XdpMd(Structure):
    """struct xdp_md as BPF_PROG_TEST_RUN takes it for ctx_in."""

    _fields_ = [
        ("data", c_uint32),
        ("data_end", c_uint32),
        ("data_meta", c_uint32),
        ("ingress_ifindex", c_uint32),
        ("rx_queue_index", c_uint32),
        ("egress_ifindex", c_uint32),
    ]


class LinkInfo(Structure):
    """The head of struct bpf_link_info; for XDP and tcx links the union starts with ifindex."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("ifindex", c_uint32),
        ("attach_type", c_uint32),
        ("_rest", c_uint64 * 6),
    ]


def _fn(name: str, restype, argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


_open_file = _fn("bpf_object__open_file", c_void_p, [c_char_p, c_void_p])
_obj_load = _fn("bpf_object__load", c_int, [c_void_p])
_obj_close = _fn("bpf_object__close", None, [c_void_p])
_find_map = _fn("bpf_object__find_map_by_name", c_void_p, [c_void_p, c_char_p])
_next_map = _fn("bpf_object__next_map", c_void_p, [c_void_p, c_void_p])
_map_name = _fn("bpf_map__name", c_char_p, [c_void_p])
_find_prog = _fn("bpf_object__find_program_by_name", c_void_p, [c_void_p, c_char_p])
_map_set_max_entries = _fn("bpf_map__set_max_entries", c_int, [c_void_p, c_uint32])
_map_set_value_size = _fn("bpf_map__set_value_size", c_int, [c_void_p, c_uint32])
_map_set_initial_value = _fn("bpf_map__set_initial_value", c_int, [c_void_p, c_void_p, c_size_t])
_map_initial_value = _fn("bpf_map__initial_value", c_void_p, [c_void_p, POINTER(c_size_t)])
_obj_btf = _fn("bpf_object__btf", c_void_p, [c_void_p])
_btf_find_by_name_kind = _fn("btf__find_by_name_kind", c_int, [c_void_p, c_char_p, c_uint32])
_btf_type_by_id = _fn("btf__type_by_id", c_void_p, [c_void_p, c_uint32])
_btf_name_by_offset = _fn("btf__name_by_offset", c_char_p, [c_void_p, c_uint32])
_map_fd = _fn("bpf_map__fd", c_int, [c_void_p])
_map_reuse_fd = _fn("bpf_map__reuse_fd", c_int, [c_void_p, c_int])
_prog_set_autoload = _fn("bpf_program__set_autoload", c_int, [c_void_p, ctypes.c_bool])
_prog_fd = _fn("bpf_program__fd", c_int, [c_void_p])
_prog_flags = _fn("bpf_program__flags", c_uint32, [c_void_p])
_prog_set_flags = _fn("bpf_program__set_flags", c_int, [c_void_p, c_uint32])
_obj_pin = _fn("bpf_obj_pin", c_int, [c_int, c_char_p])
_obj_get = _fn("bpf_obj_get", c_int, [c_char_p])
_obj_get_opts = _fn("bpf_obj_get_opts", c_int, [c_char_p, c_void_p])
_xdp_query_id = _fn("bpf_xdp_query_id", c_int, [c_int, c_int, POINTER(c_uint32)])
_update_elem = _fn("bpf_map_update_elem", c_int, [c_int, c_void_p, c_void_p, c_uint64])
_lookup_elem = _fn("bpf_map_lookup_elem", c_int, [c_int, c_void_p, c_void_p])
_delete_elem = _fn("bpf_map_delete_elem", c_int, [c_int, c_void_p])
_get_next_key = _fn("bpf_map_get_next_key", c_int, [c_int, c_void_p, c_void_p])
_update_batch = _fn(
    "bpf_map_update_batch", c_int, [c_int, c_void_p, c_void_p, POINTER(c_uint32), c_void_p]
)
_lookup_batch = _fn(
    "bpf_map_lookup_batch",
    c_int,
    [c_int, c_void_p, c_void_p, c_void_p, c_void_p, POINTER(c_uint32), c_void_p],
)
_link_create = _fn("bpf_link_create", c_int, [c_int, c_int, c_int, c_void_p])
_link_update = _fn("bpf_link_update", c_int, [c_int, c_int, c_void_p])
_link_detach = _fn("bpf_link_detach", c_int, [c_int])
_raw_tp_open = _fn("bpf_raw_tracepoint_open", c_int, [c_char_p, c_int])
_RB_SAMPLE = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_rb_new = _fn("ring_buffer__new", c_void_p, [c_int, _RB_SAMPLE, c_void_p, c_void_p])
_rb_poll = _fn("ring_buffer__poll", c_int, [c_void_p, c_int])
_rb_consume = _fn("ring_buffer__consume", c_int, [c_void_p])
_rb_free = _fn("ring_buffer__free", None, [c_void_p])
_test_run = _fn("bpf_prog_test_run_opts", c_int, [c_int, c_void_p])
_get_info = _fn("bpf_obj_get_info_by_fd", c_int, [c_int, c_void_p, POINTER(c_uint32)])
_num_cpus = _fn("libbpf_num_possible_cpus", c_int, [])
_probe_prog_type = _fn("libbpf_probe_bpf_prog_type", c_int, [c_int, c_void_p])
_probe_map_type = _fn("libbpf_probe_bpf_map_type", c_int, [c_int, c_void_p])
_enable_stats = _fn("bpf_enable_stats", c_int, [c_int])
_prog_load = _fn("bpf_prog_load", c_int, [c_int, c_char_p, c_char_p, c_void_p, c_size_t, c_void_p])
_prog_get_fd_by_id = _fn("bpf_prog_get_fd_by_id", c_int, [c_uint32])


def _check(call: str, ret: int) -> int:
    if ret < 0:
        raise BpfError(call, ctypes.get_errno() or -ret)
    return ret


def num_possible_cpus() -> int:
    return _check("libbpf_num_possible_cpus", _num_cpus())


BTF_KIND_DATASEC = 15


class BtfType(Structure):
    """struct btf_type: name_off, info (vlen in the low 16 bits), size or type."""

    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size", c_uint32)]


class BtfVarSecinfo(Structure):
    """struct btf_var_secinfo: what follows a DATASEC's btf_type, one a variable."""

    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


class BpfObject:
    """An opened BPF object file: size its maps, set .rodata, then load() it."""

    def __init__(self, path: str) -> None:
        take_log()
        ptr = _open_file(path.encode(), None)
        if not ptr:
            raise BpfError(f"open {path}", ctypes.get_errno() or errno.EINVAL, take_log())
        self._ptr: int | None = ptr

    def _map(self, name: str) -> int:
        m = _find_map(self._ptr, name.encode())
        if not m:
            raise KeyError(f"BPF object has no map {name!r}")
        return m

    def map_names(self) -> list[str]:
        """The maps the object declares, without libbpf's own for global data (.rodata and the like)."""
        out, m = [], _next_map(self._ptr, None)
        while m:
            name = (_map_name(m) or b"").decode()
            if "." not in name:
                out.append(name)
            m = _next_map(self._ptr, m)
        return out

    def set_max_entries(self, name: str, n: int) -> None:
        _check(f"set max_entries of {name}", _map_set_max_entries(self._map(name), n))

    def set_value_size(self, name: str, n: int) -> None:
        _check(f"set value_size of {name}", _map_set_value_size(self._map(name), n))

    def set_initial_value(self, name: str, data: bytes) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        _check(f"set initial value of {name}", _map_set_initial_value(self._map(name), buf, len(data)))

    def set_variable(self, section: str, var: str, data: bytes) -> None:
        """Sets the initial value of global variable `var` in `section` (.rodata), where the
        object's BTF says it lies. A section may hold more than the variable: which constants
        a compiler puts beside it there differs from one clang to the next."""
        m = self._map(section)
        size = c_size_t()
        ptr = _map_initial_value(m, ctypes.byref(size))
        if not ptr:
            raise BpfError(f"initial value of {section}", errno.ENOENT)
        offset, var_size = self._datasec_var(section, var)
        if var_size != len(data) or offset + var_size > size.value:
            raise BpfError(f"{var} in {section}: {var_size} bytes at {offset} in the object, "
                           f"{len(data)} given (is the object from this version of bpfwall?)", errno.EINVAL)
        image = bytearray(ctypes.string_at(ptr, size.value))
        image[offset:offset + var_size] = data
        self.set_initial_value(section, bytes(image))

    def _datasec_var(self, section: str, var: str) -> tuple[int, int]:
        """(offset, size) of var in the BTF data section `section`."""
        btf = _obj_btf(self._ptr)
        if not btf:
            raise BpfError(f"{var}: the object has no BTF", errno.ENOENT)
        type_id = _btf_find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if type_id < 0:
            raise BpfError(f"{var}: no {section} section in the object's BTF", -type_id)
        sec = BtfType.from_address(_btf_type_by_id(btf, type_id))
        infos = (BtfVarSecinfo * (sec.info & 0xFFFF)).from_address(
            _btf_type_by_id(btf, type_id) + ctypes.sizeof(BtfType))
        for info in infos:
            t = BtfType.from_address(_btf_type_by_id(btf, info.type))
            if (_btf_name_by_offset(btf, t.name_off) or b"").decode() == var:
                return info.offset, info.size
        raise BpfError(f"no variable {var} in {section}", errno.ENOENT)

    def reuse_map(self, name: str, fd: int) -> None:
        """Makes the object use an existing map (a pinned one) instead of creating its own."""
        _check(f"reuse map {name}", _map_reuse_fd(self._map(name), fd))

    def set_autoload(self, prog: str, load: bool) -> None:
        p = _find_prog(self._ptr, prog.encode())
        if not p:
            raise KeyError(f"BPF object has no program {prog!r}")
        _check(f"set autoload of {prog}", _prog_set_autoload(p, load))

    def clear_prog_flags(self, prog: str, flags: int) -> None:
        """Takes load flags off a program before load (BPF_F_XDP_HAS_FRAGS, say)."""
        p = _find_prog(self._ptr, prog.encode())
        if not p:
            raise KeyError(f"BPF object has no program {prog!r}")
        _check(f"set flags of {prog}", _prog_set_flags(p, _prog_flags(p) & ~flags))

    def load(self) -> None:
        ret = _obj_load(self._ptr)
        if ret < 0:
            raise BpfError("load BPF object", -ret, take_log())
        take_log()

    def map_fd(self, name: str) -> int:
        return _check(f"fd of map {name}", _map_fd(self._map(name)))

    def prog_fd(self, name: str) -> int:
        p = _find_prog(self._ptr, name.encode())
        if not p:
            raise KeyError(f"BPF object has no program {name!r}")
        return _check(f"fd of program {name}", _prog_fd(p))

    def close(self) -> None:
        """Closes the object's fds; pinned objects and links live on."""
        if self._ptr:
            _obj_close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def obj_pin(fd: int, path: str) -> None:
    _check(f"pin {path}", _obj_pin(fd, path.encode()))


class ObjGetOpts(Structure):
    _fields_ = [("sz", c_size_t), ("file_flags", c_uint32), ("path_fd", c_int)]


BPF_F_RDONLY = 1 << 3
BPF_F_MMAPABLE = 1 << 10  # an array map whose values user space may map and write directly


def obj_get(path: str, read_only: bool = False) -> int:
    """An fd of a pinned object. read_only asks only for read access to the pin
    (a map opened so can be read, not written), which is what a non-root reader
    that the pin's group lets read gets."""
    if not read_only:
        return _check(f"open pin {path}", _obj_get(path.encode()))
    opts = ObjGetOpts(sizeof(ObjGetOpts), BPF_F_RDONLY, 0)
    return _check(f"open pin {path}", _obj_get_opts(path.encode(), byref(opts)))


def xdp_prog_id(ifindex: int) -> int:
    """The id of the XDP program attached to ifindex (0: none), read over netlink:
    needs no privilege, unlike opening a link."""
    prog_id = c_uint32()
    _check("xdp query", _xdp_query_id(ifindex, 0, byref(prog_id)))
    return prog_id.value


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = 0) -> None:
    _check("map update", _update_elem(fd, byref(key), byref(value), flags))


def map_lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fills value; False if the key is absent."""
    ret = _lookup_elem(fd, byref(key), byref(value))
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return False
        raise BpfError("map lookup", err)
    return True


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """False if the key was absent."""
    if _delete_elem(fd, byref(key)) < 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return False
        raise BpfError("map delete", err)
    return True


def map_next_key(fd: int, key: ctypes._CData | None, next_key: ctypes._CData) -> bool:
    """Fills next_key with the key after key (None: the first); False at the end."""
    if _get_next_key(fd, byref(key) if key is not None else None, byref(next_key)) < 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return False
        raise BpfError("map get_next_key", err)
    return True


def map_update_batch(fd: int, keys: ctypes.Array, values: ctypes.Array, count: int) -> None:
    """One syscall for count elements (array and hash maps)."""
    map_update_batch_raw(fd, keys, values, sizeof(keys._type_), sizeof(values) // len(values), count)


def map_update_batch_raw(fd: int, keys, values, key_size: int, value_size: int, count: int) -> None:
    """map_update_batch over packed buffers of count keys and values."""
    opts = MapBatchOpts(sz=sizeof(MapBatchOpts))
    done = 0
    while done < count:
        n = c_uint32(count - done)
        ks = ctypes.byref(keys, done * key_size)
        vs = ctypes.byref(values, done * value_size)
        ret = _update_batch(fd, ks, vs, byref(n), byref(opts))
        done += n.value
        if ret < 0:
            raise BpfError("map update_batch", ctypes.get_errno())


def map_lookup_batch(fd: int, in_batch, out_batch, keys: ctypes.Array, values: ctypes.Array,
                          count: int) -> int:
    """One step of a batched walk of a hash map: up to count elements after in_batch
    (None: from the start); out_batch receives the position to continue from."""
    opts = MapBatchOpts(sz=sizeof(MapBatchOpts))
    n = c_uint32(count)
    ret = _lookup_batch(fd, in_batch, out_batch, keys, values, byref(n), byref(opts))
    if ret < 0 and ctypes.get_errno() != errno.ENOENT:
        raise BpfError("map lookup_batch", ctypes.get_errno())
    return n.value


class RingBuffer:
    """A reader of a BPF ring buffer: on_record(bytes) for each record, in order.

    An exception in on_record cannot cross the C callback (ctypes would print it and carry
    on): it stops the read and is raised again by poll() or consume()."""

    def __init__(self, fd: int, on_record) -> None:
        self._failure: BaseException | None = None

        def sample(_ctx, data, size):
            try:
                on_record(ctypes.string_at(data, size))
            except BaseException as exc:  # noqa: BLE001 (raised again outside the callback)
                self._failure = exc
                return -1
            return 0

        self._cb = _RB_SAMPLE(sample)  # kept alive as long as the ring
        self._rb = _rb_new(fd, self._cb, None, None)
        if not self._rb:
            raise BpfError("ring_buffer__new", ctypes.get_errno())

    def poll(self, timeout_ms: int) -> int:
        """Waits up to timeout_ms for records; returns how many were handled."""
        n = _rb_poll(self._rb, timeout_ms)
        self._raise_failure()
        if n < 0 and -n != errno.EINTR:
            raise BpfError("ring_buffer__poll", -n)
        return max(n, 0)

    def consume(self) -> int:
        """Handles every record there is, without waiting."""
        n = _rb_consume(self._rb)
        self._raise_failure()
        if n < 0:
            raise BpfError("ring_buffer__consume", -n)
        return n

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self._rb:
            _rb_free(self._rb)
            self._rb = None


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    opts = LinkCreateOpts(sz=sizeof(LinkCreateOpts), flags=flags)
    return _check("bpf_link_create", _link_create(prog_fd, target, attach_type, byref(opts)))


def link_update(link_fd: int, prog_fd: int) -> None:
    """Atomically points an existing link at another program."""
    opts = LinkUpdateOpts(sz=sizeof(LinkUpdateOpts))
    _check("bpf_link_update", _link_update(link_fd, prog_fd, byref(opts)))


def raw_tracepoint_open(prog_fd: int, name: str | None = None) -> int:
    """Attaches a tp_btf program to the tracepoint it was loaded for, or a raw_tracepoint
    program to tracepoint `name`; the link's fd."""
    return _check("bpf_raw_tracepoint_open", _raw_tp_open(name.encode() if name else None, prog_fd))


def link_detach(link_fd: int) -> None:
    _check("bpf_link_detach", _link_detach(link_fd))


def link_info(fd: int) -> LinkInfo:
    info = LinkInfo()
    n = c_uint32(sizeof(info))
    _check("link info", _get_info(fd, byref(info), byref(n)))
    return info


class ProgInfo(Structure):
    """The head of struct bpf_prog_info, up to the run statistics."""

    _fields_ = [
        ("type", c_uint32), ("id", c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", c_uint32), ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64), ("xlated_prog_insns", c_uint64), ("load_time", c_uint64),
        ("created_by_uid", c_uint32), ("nr_map_ids", c_uint32), ("map_ids", c_uint64),
        ("name", c_char * 16), ("ifindex", c_uint32), ("gpl_compatible", c_uint32),
        ("netns_dev", c_uint64), ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32), ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64), ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32), ("func_info_rec_size", c_uint32), ("func_info", c_uint64),
        ("nr_func_info", c_uint32), ("nr_line_info", c_uint32), ("line_info", c_uint64),
        ("jited_line_info", c_uint64), ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32), ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32), ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64), ("run_cnt", c_uint64),
    ]


def prog_info(fd: int) -> ProgInfo:
    """Name, id and, when kernel.bpf_stats_enabled is 1, run count and time of a program."""
    info = ProgInfo()
    n = c_uint32(sizeof(info))
    _check("prog info", _get_info(fd, byref(info), byref(n)))
    return info


class MapInfo(Structure):
    """The head of struct bpf_map_info."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
    ]


BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    n = c_uint32(sizeof(info))
    _check("map info", _get_info(fd, byref(info), byref(n)))
    return info


def _test_run_opts(data: bytes, repeat: int) -> tuple[TestRunOpts, ctypes.Array, ctypes.Array]:
    """Options for data in and room for it (and a grown reply) out; the buffers must outlive the run."""
    data_in = ctypes.create_string_buffer(data, len(data))
    out = ctypes.create_string_buffer(len(data) + 512)
    opts = TestRunOpts(
        sz=sizeof(TestRunOpts),
        data_in=ctypes.cast(data_in, c_void_p),
        data_size_in=len(data),
        data_out=ctypes.cast(out, c_void_p),
        data_size_out=len(out),
        repeat=repeat,
    )
    return opts, data_in, out


def test_run_xdp(
    prog_fd: int, packet: bytes, ifindex: int = 0, repeat: int = 1, meta: bytes = b""
) -> tuple[int, bytes, bytes, int]:
    """BPF_PROG_TEST_RUN of an XDP program.

    meta (a multiple of 4 bytes) goes in front of the frame as XDP metadata.
    Returns (verdict, metadata out, frame out, mean ns per run).
    """
    opts, data_in, out = _test_run_opts(meta + packet, repeat)
    ctx = XdpMd(data=len(meta), data_end=len(meta) + len(packet), ingress_ifindex=ifindex)
    if ifindex or meta:
        opts.ctx_in = ctypes.cast(byref(ctx), c_void_p)
        opts.ctx_size_in = sizeof(ctx)
    _check("BPF_PROG_TEST_RUN", _test_run(prog_fd, byref(opts)))
    raw = out.raw[: opts.data_size_out]
    return opts.retval, raw[: len(meta)], raw[len(meta) :], opts.duration


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def test_run_xdp_live(prog_fd: int, packet: bytes, ifindex: int, repeat: int, batch_size: int = 64) -> None:
    """Runs an XDP program on `repeat` copies of packet as if received on ifindex, acting on
    its verdicts for real (XDP_TX sends the frame out): the lab's packet generator."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    ctx = XdpMd(data=0, data_end=len(packet), ingress_ifindex=ifindex)
    opts = TestRunOpts(sz=sizeof(TestRunOpts), data_in=ctypes.cast(data_in, c_void_p),
                       data_size_in=len(packet), ctx_in=ctypes.cast(byref(ctx), c_void_p),
                       ctx_size_in=sizeof(ctx), repeat=repeat, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                       batch_size=batch_size)
    _check("BPF_PROG_TEST_RUN (live frames)", _test_run(prog_fd, byref(opts)))


def probe_prog_type(prog_type: int) -> bool:
    """Whether this kernel loads programs of the type (libbpf's probe: a trivial program)."""
    return _probe_prog_type(prog_type, None) == 1


def probe_map_type(map_type: int) -> bool:
    return _probe_map_type(map_type, None) == 1


BPF_STATS_RUN_TIME = 0


def enable_stats() -> int:
    """An fd that keeps kernel.bpf_stats_enabled on (run_time_ns, run_cnt in prog_info) for as
    long as it is open, however the process ends; the sysctl itself is left as it was."""
    return _check("BPF_ENABLE_STATS", _enable_stats(BPF_STATS_RUN_TIME))


BPF_PROG_TYPE_XDP = 6
XDP_DROP = 1


def load_xdp_drop() -> int:
    """A two-instruction XDP program (r0 = XDP_DROP; exit), for probes; its fd."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, XDP_DROP) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    buf = ctypes.create_string_buffer(insns, len(insns))
    return _check("BPF_PROG_LOAD", _prog_load(BPF_PROG_TYPE_XDP, b"bpfwall_probe", b"GPL", buf, 2, None))


def prog_get_fd_by_id(prog_id: int) -> int:
    return _check(f"program {prog_id}", _prog_get_fd_by_id(prog_id))


def test_run_skb(prog_fd: int, packet: bytes, repeat: int = 1, ctx: bytes = b"") -> tuple[int, int]:
    """BPF_PROG_TEST_RUN of a tc program: returns (verdict as a signed int, mean ns per run).
    ctx: the head of a struct __sk_buff to run with (the kernel takes its cb[], ifindex, mark
    and a few more), or nothing."""
    verdict, ns, _ = test_run_skb_ctx(prog_fd, packet, repeat, ctx)
    return verdict, ns


def test_run_skb_ctx(prog_fd: int, packet: bytes, repeat: int = 1, ctx: bytes = b"") -> tuple[int, int, bytes]:
    """test_run_skb, and the struct __sk_buff head as the program left it (as long as ctx)."""
    opts, _data_in, _out = _test_run_opts(packet, repeat)
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    # The kernel writes back its whole struct __sk_buff (or fails with ENOSPC): room for it.
    ctx_out = ctypes.create_string_buffer(max(len(ctx), 1024)) if ctx else None
    if ctx_in is not None and ctx_out is not None:
        opts.ctx_in, opts.ctx_size_in = ctypes.addressof(ctx_in), len(ctx)
        opts.ctx_out, opts.ctx_size_out = ctypes.addressof(ctx_out), len(ctx_out)
    _check("BPF_PROG_TEST_RUN", _test_run(prog_fd, byref(opts)))
    head = ctx_out.raw[: len(ctx)] if ctx_out is not None else b""
    return ctypes.c_int32(opts.retval).value, opts.duration, head
