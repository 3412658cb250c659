"""smelt from Python: merges, plans, verification and model descriptions through libsmelt.

A ctypes binding over the installed shared library (no dependencies beyond the standard
library), for pipelines and in-process merge searches:

    import smelt
    result = smelt.merge(open("config.yml").read(), "out/", max_memory="2Gi")
    print(result["manifest_xxh3"], result["bytes_read"])
    info = smelt.inspect("out/")          # the JSON of `smelt inspect --json`, as a dict
    report = smelt.verify("out/")         # {"problems": 0, "tensors_checked": ..., ...}

Every failure raises smelt.Error, whose .status is the status name ("SMELT_E_CONFIG") and
whose message is the library's. The library is found through $SMELT_LIBRARY, next to this
module (an install puts it in the prefix's lib directory), or the system's linker path.

Calls are blocking and thread-safe with one another (each gets its own smelt context); a
progress callback runs on the calling thread.
"""

import ctypes
import ctypes.util
import json
import os

__all__ = ["Error", "merge", "lora_apply", "plan", "verify", "inspect", "version", "tqdm_progress"]


class Error(Exception):
    """A smelt failure: .status is the status name, .code the negative status, str() the message."""

    def __init__(self, code, status, message):
        super().__init__(message)
        self.code = code
        self.status = status


class _Progress(ctypes.Structure):
    _fields_ = [
        ("tensors_done", ctypes.c_uint64), ("tensors_total", ctypes.c_uint64),
        ("bytes_read", ctypes.c_uint64), ("bytes_to_read", ctypes.c_uint64),
        ("bytes_written", ctypes.c_uint64), ("bytes_to_write", ctypes.c_uint64),
        ("seconds", ctypes.c_double), ("bytes_from_files", ctypes.c_uint64),
    ]


_PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_Progress))


class _MergeResult(ctypes.Structure):
    _fields_ = [
        ("tensors", ctypes.c_uint64), ("files", ctypes.c_uint64),
        ("bytes_read", ctypes.c_uint64), ("bytes_written", ctypes.c_uint64),
        ("seconds", ctypes.c_double), ("manifest_xxh3", ctypes.c_char * 33),
    ]


class _MergeOptions(ctypes.Structure):
    # include/smelt.h smelt_merge_options, field for field.
    _fields_ = [
        ("max_memory", ctypes.c_uint64), ("out_shard_size", ctypes.c_uint64),
        ("threads", ctypes.c_int), ("force_pread", ctypes.c_int), ("overwrite", ctypes.c_int),
        ("random_seed", ctypes.c_uint64),
        ("no_copy_tokenizer", ctypes.c_int), ("no_model_card", ctypes.c_int),
        ("allow_crimes", ctypes.c_int),
        ("progress", _PROGRESS_FN), ("progress_user", ctypes.c_void_p),
        ("cancel", ctypes.POINTER(ctypes.c_int)),
        ("resume", ctypes.c_int), ("format", ctypes.c_int),
        ("outtype", ctypes.c_char_p), ("config_text", ctypes.c_char_p),
        ("result", ctypes.POINTER(_MergeResult)),
        ("part_index", ctypes.c_uint), ("part_count", ctypes.c_uint), ("finalize", ctypes.c_int),
        ("sweep", ctypes.c_char_p), ("batch", ctypes.c_char_p),
    ]


class _VerifyOptions(ctypes.Structure):
    _fields_ = [("max_memory", ctypes.c_uint64), ("force_pread", ctypes.c_int)]


class _VerifyResult(ctypes.Structure):
    _fields_ = [
        ("has_manifest", ctypes.c_int), ("problems", ctypes.c_uint64),
        ("tensors_checked", ctypes.c_uint64), ("bytes_read", ctypes.c_uint64),
        ("seconds", ctypes.c_double),
    ]


def _load():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("SMELT_LIBRARY")]
    # Installed: <prefix>/lib/python3/dist-packages/smelt.py and <prefix>/lib/libsmelt.so.0.
    for up in ("..", os.path.join("..", ".."), os.path.join("..", "..", "..")):
        for lib in ("lib", ""):
            candidates.append(os.path.join(here, up, lib, "libsmelt.so.0"))
    candidates += [ctypes.util.find_library("smelt"), "libsmelt.so.0"]
    errors = []
    for path in candidates:
        if not path or (os.sep in path and not os.path.exists(path)):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError("smelt: cannot load libsmelt.so.0 (set SMELT_LIBRARY): " + "; ".join(errors))


_lib = _load()
_lib.smelt_ctx_new.restype = ctypes.c_void_p
_lib.smelt_ctx_free.argtypes = [ctypes.c_void_p]
_lib.smelt_errmsg.restype = ctypes.c_char_p
_lib.smelt_errmsg.argtypes = [ctypes.c_void_p]
_lib.smelt_status_name.restype = ctypes.c_char_p
_lib.smelt_status_name.argtypes = [ctypes.c_int]
_lib.smelt_version.restype = ctypes.c_char_p
_lib.smelt_parse_size.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64)]
_lib.smelt_merge_options_default.argtypes = [ctypes.POINTER(_MergeOptions)]
_lib.smelt_merge.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.POINTER(_MergeOptions)]
_lib.smelt_lora_apply.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.c_char_p, ctypes.POINTER(_MergeOptions)]
_lib.smelt_plan_print.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.POINTER(_MergeOptions), ctypes.c_void_p]
_lib.smelt_verify_options_default.argtypes = [ctypes.POINTER(_VerifyOptions)]
_lib.smelt_verify.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(_VerifyOptions),
                              ctypes.c_void_p, ctypes.POINTER(_VerifyResult)]
_lib.smelt_inspect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]

# The C library's memory streams carry plan, verify and inspect text back. The process's own
# symbol namespace, not a handle on libc.so.6: free must be the malloc the stream used, which
# is an interposed one when something (a sanitizer, a profiler) is preloaded.
_libc = ctypes.CDLL(None)
_libc.open_memstream.restype = ctypes.c_void_p
_libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
_libc.fclose.argtypes = [ctypes.c_void_p]
_libc.free.argtypes = [ctypes.c_void_p]


class _Context:
    def __enter__(self):
        self.ptr = _lib.smelt_ctx_new()
        if not self.ptr:
            raise MemoryError("smelt: out of memory")
        return self

    def __exit__(self, *exc):
        _lib.smelt_ctx_free(self.ptr)

    def check(self, rc):
        if rc != 0:
            raise Error(rc, _lib.smelt_status_name(rc).decode(),
                        (_lib.smelt_errmsg(self.ptr) or b"").decode(errors="replace"))


class _Capture:
    """A FILE * whose text is read back after close."""

    def __enter__(self):
        self.buf, self.size = ctypes.c_void_p(), ctypes.c_size_t()
        self.file = _libc.open_memstream(ctypes.byref(self.buf), ctypes.byref(self.size))
        if not self.file:
            raise MemoryError("smelt: open_memstream failed")
        return self

    def text(self):
        _libc.fclose(self.file)
        self.file = None
        return ctypes.string_at(self.buf, self.size.value).decode(errors="replace")

    def __exit__(self, *exc):
        if self.file:
            _libc.fclose(self.file)
        _libc.free(self.buf)


def _size(ctx, value):
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    out = ctypes.c_uint64()
    ctx.check(_lib.smelt_parse_size(ctx.ptr, str(value).encode(), ctypes.byref(out)))
    return out.value


def _is_text(config):
    return "\n" in config or not os.path.exists(config)


def _options(ctx, config, max_memory, threads, overwrite, random_seed, out_shard_size, progress,
             keep):
    opts = _MergeOptions()
    _lib.smelt_merge_options_default(ctypes.byref(opts))
    if max_memory is not None:
        opts.max_memory = _size(ctx, max_memory)
    if out_shard_size is not None:
        opts.out_shard_size = _size(ctx, out_shard_size)
    opts.threads = int(threads or 0)
    opts.overwrite = 1 if overwrite else 0
    opts.random_seed = int(random_seed or 0)
    if config is not None and _is_text(config):
        keep.append(config.encode())
        opts.config_text = keep[-1]
    if progress is not None:
        def relay(_user, p, fn=progress):
            fn({name: getattr(p.contents, name) for name, _ in _Progress._fields_})
        keep.append(_PROGRESS_FN(relay))
        opts.progress = keep[-1]
    return opts


def _group_options(opts, sweep, batch, keep):
    if sweep is not None:
        keep.append(sweep.encode())
        opts.sweep = keep[-1]
    if batch is not None:
        keep.append(os.fsencode(batch))
        opts.batch = keep[-1]


def _result(res):
    return {"tensors": res.tensors, "files": res.files, "bytes_read": res.bytes_read,
            "bytes_written": res.bytes_written, "seconds": res.seconds,
            "manifest_xxh3": res.manifest_xxh3.decode()}


def merge(config, out_dir, max_memory=None, threads=0, overwrite=False, random_seed=0,
          out_shard_size=None, progress=None, part=None, finalize=False, sweep=None, batch=None):
    """Runs a merge. config: mergekit YAML text, or the path of a YAML file. max_memory: bytes or
    a size such as "2Gi". progress: called with a dict (tensors_done, bytes_read, ...). Returns
    a dict: tensors, files, bytes_read (from the input files), bytes_written, seconds and
    manifest_xxh3 (the hash that identifies the whole output). part=(K, N): compute only part K
    of N of a partitioned merge (manifest_xxh3 then hashes its fragment); finalize=True: finish
    one whose N parts all ran (smelt.h, smelt_merge_options.part_count). sweep="NAME=V1,V2":
    one read, out_dir/NAME=V1/, ...; batch=FILE: the merges FILE lists, in one read (config and
    out_dir None); the result then counts every output (smelt.h, smelt_merge_options.sweep)."""
    keep = []
    with _Context() as ctx:
        opts = _options(ctx, config, max_memory, threads, overwrite, random_seed, out_shard_size,
                        progress, keep)
        if part is not None:
            opts.part_index, opts.part_count = int(part[0]), int(part[1])
        opts.finalize = 1 if finalize else 0
        _group_options(opts, sweep, batch, keep)
        res = _MergeResult()
        opts.result = ctypes.pointer(res)
        path = None if opts.config_text or config is None else config.encode()
        out = None if out_dir is None else os.fsencode(out_dir)
        ctx.check(_lib.smelt_merge(ctx.ptr, path, out, ctypes.byref(opts)))
        return _result(res)


def lora_apply(base, adapter, out_dir, max_memory=None, threads=0, overwrite=False,
               progress=None):
    """PEFT's merge_and_unload of `adapter` into `base`, written to out_dir; returns as merge()."""
    keep = []
    with _Context() as ctx:
        opts = _options(ctx, None, max_memory, threads, overwrite, 0, None, progress, keep)
        res = _MergeResult()
        opts.result = ctypes.pointer(res)
        ctx.check(_lib.smelt_lora_apply(ctx.ptr, os.fsencode(base), os.fsencode(adapter),
                                        os.fsencode(out_dir), ctypes.byref(opts)))
        return _result(res)


def plan(config, max_memory=None, threads=0, sweep=None, batch=None):
    """The text `smelt plan` prints for a config (YAML text or a path; None with batch), or for
    a sweep or batch as merge() takes them; reads no tensor data."""
    keep = []
    with _Context() as ctx, _Capture() as out:
        opts = _options(ctx, config, max_memory, threads, False, 0, None, None, keep)
        _group_options(opts, sweep, batch, keep)
        path = None if opts.config_text or config is None else config.encode()
        rc = _lib.smelt_plan_print(ctx.ptr, path, ctypes.byref(opts), out.file)
        text = out.text()
        ctx.check(rc)
        return text


def verify(out_dir, max_memory=None):
    """Checks a model directory against its manifest. Returns a dict: has_manifest, problems,
    tensors_checked, bytes_read, seconds and report (one line per problem)."""
    with _Context() as ctx, _Capture() as out:
        opts = _VerifyOptions()
        _lib.smelt_verify_options_default(ctypes.byref(opts))
        if max_memory is not None:
            opts.max_memory = _size(ctx, max_memory)
        res = _VerifyResult()
        rc = _lib.smelt_verify(ctx.ptr, os.fsencode(out_dir), ctypes.byref(opts), out.file,
                               ctypes.byref(res))
        report = out.text()
        ctx.check(rc)
        return {"has_manifest": bool(res.has_manifest), "problems": res.problems,
                "tensors_checked": res.tensors_checked, "bytes_read": res.bytes_read,
                "seconds": res.seconds, "report": report}


def inspect(model):
    """`smelt inspect --json` of a model reference, as a dict."""
    with _Context() as ctx, _Capture() as out:
        rc = _lib.smelt_inspect(ctx.ptr, os.fsencode(model), 1, out.file)
        text = out.text()
        ctx.check(rc)
        return json.loads(text)


def version():
    """libsmelt's version, "MAJOR.MINOR.PATCH"."""
    return _lib.smelt_version().decode()


def tqdm_progress(**tqdm_args):
    """A progress callback drawing a tqdm bar of input bytes, or None when tqdm is not
    installed: merge(..., progress=smelt.tqdm_progress())."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    state = {"bar": None, "at": 0}

    def update(p):
        if state["bar"] is None:
            state["bar"] = tqdm(total=p["bytes_to_read"], unit="B", unit_scale=True, **tqdm_args)
        state["bar"].update(p["bytes_read"] - state["at"])
        state["at"] = p["bytes_read"]
        if p["tensors_done"] == p["tensors_total"]:
            state["bar"].close()
    return update
