"""Reads GGUF files with ggml's own parser (gguf_init_from_file in libggml-base, through ctypes),
for the gguf-split output tests:
  gguf_split_check.py LIB keys FILE        a JSON line: {"keys": {key: ggml type id}, "split":
                                           [split.no, split.count, split.tensors.count] or null,
                                           "split_types": [their ggml type ids], "tensors": [names],
                                           "sizes": [data bytes]}
  gguf_split_check.py LIB same ONE SPLIT...  the set's tensors, split after split, are ONE's
                                           tensors in ONE's order: the same names, and the same
                                           data bytes (each split's own data section and offsets)
  gguf_split_check.py LIB data-at FILE     the absolute offset of FILE's first tensor's data
Exits 1 on a difference, 2 on a usage or loading error."""
import ctypes
import json
import sys


class Params(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def load(lib_path):
    lib = ctypes.CDLL(lib_path)
    sigs = {
        "gguf_init_from_file": (ctypes.c_void_p, [ctypes.c_char_p, Params]),
        "gguf_free": (None, [ctypes.c_void_p]),
        "gguf_get_n_kv": (ctypes.c_int64, [ctypes.c_void_p]),
        "gguf_get_key": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_kv_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_find_key": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
        "gguf_get_val_u16": (ctypes.c_uint16, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_val_i32": (ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_n_tensors": (ctypes.c_int64, [ctypes.c_void_p]),
        "gguf_get_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_tensor_offset": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_tensor_size": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_data_offset": (ctypes.c_size_t, [ctypes.c_void_p]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class File:
    def __init__(self, lib, path):
        self.lib, self.path = lib, path
        self.g = lib.gguf_init_from_file(path.encode(), Params(True, None))
        if not self.g:
            sys.exit(f"{path}: ggml refuses the file")

    def keys(self):
        n = self.lib.gguf_get_n_kv(self.g)
        return {self.lib.gguf_get_key(self.g, i).decode(): self.lib.gguf_get_kv_type(self.g, i)
                for i in range(n)}

    def split(self):
        ids = [self.lib.gguf_find_key(self.g, k.encode())
               for k in ("split.no", "split.count", "split.tensors.count")]
        if min(ids) < 0:
            return None, None
        types = [self.lib.gguf_get_kv_type(self.g, i) for i in ids]
        if types != [2, 2, 5]:  # GGUF_TYPE_UINT16, UINT16, INT32
            return None, types
        get16, get32 = self.lib.gguf_get_val_u16, self.lib.gguf_get_val_i32
        return [get16(self.g, ids[0]), get16(self.g, ids[1]), get32(self.g, ids[2])], types

    def tensors(self):
        """(name, absolute offset, size) of every tensor, in file order."""
        base = self.lib.gguf_get_data_offset(self.g)
        return [(self.lib.gguf_get_tensor_name(self.g, i).decode(),
                 base + self.lib.gguf_get_tensor_offset(self.g, i),
                 self.lib.gguf_get_tensor_size(self.g, i))
                for i in range(self.lib.gguf_get_n_tensors(self.g))]

    def data(self):
        with open(self.path, "rb") as f:
            for name, off, size in self.tensors():
                f.seek(off)
                yield name, f.read(size)


def main(argv):
    if len(argv) < 4:
        sys.exit(2)
    lib, cmd, files = load(argv[1]), argv[2], argv[3:]
    if cmd == "keys":
        f = File(lib, files[0])
        split, types = f.split()
        print(json.dumps({"keys": f.keys(), "split": split, "split_types": types,
                          "tensors": [t[0] for t in f.tensors()],
                          "sizes": [t[2] for t in f.tensors()]}))
        return 0
    if cmd == "data-at":
        print(File(lib, files[0]).tensors()[0][1])
        return 0
    if cmd == "same":
        one = list(File(lib, files[0]).data())
        parts = [item for p in files[1:] for item in File(lib, p).data()]
        if [n for n, _ in one] != [n for n, _ in parts]:
            print(f"tensor names or order differ: {len(one)} in {files[0]}, {len(parts)} in the set")
            return 1
        for (name, a), (_, b) in zip(one, parts):
            if a != b:
                print(f"tensor '{name}': data differs")
                return 1
        print(f"{len(one)} tensors, {sum(len(d) for _, d in one)} data bytes: the set equals "
              f"{files[0]} byte for byte")
        return 0
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
