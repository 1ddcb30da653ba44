#!/usr/bin/env python3
"""Zeroes, in a CUDA shared library, the machine code built for every GPU architecture but one.

The CUDA EP library of onnxruntime carries its kernels for sm_75 to sm_120 (166 MB of 229 MB in
`.nv_fatbin`). Only one architecture's code runs on a given GPU; zeroing the others' payloads
leaves every offset and header intact (the loader still sees each entry and skips it for its
architecture) and lets xz shrink the file from 165 MB to about 38 MB, small enough to carry to
an offline GPU machine. Bench tooling, not product code.

    python3 fatbin_keep_arch.py <in.so> <arch, e.g. 90> <out.so>
"""
import struct
import subprocess
import sys

FATBIN_MAGIC = 0xBA55ED50


def fatbin_section(path):
    """(offset, size) of .nv_fatbin from readelf."""
    out = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if ".nv_fatbin" in parts:
            i = parts.index(".nv_fatbin")
            return int(parts[i + 3], 16), int(parts[i + 4], 16)
    raise SystemExit(f"error: {path}: no .nv_fatbin section")


def entries(data, start, size):
    """Every fatbin entry: (payload offset, payload size, kind, arch)."""
    p, end = start, start + size
    while p < end:
        magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:
            p += 8  # containers are 8-aligned; padding between them
            continue
        q, stop = p + header_size, p + header_size + body_size
        while q < stop:
            kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, q)
            arch = struct.unpack_from("<I", data, q + 28)[0]
            yield q + entry_header, payload, kind, arch
            q += entry_header + payload
        p = stop


def main():
    src, keep, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = bytearray(open(src, "rb").read())
    start, size = fatbin_section(src)
    kept = zeroed = 0
    for offset, payload, _kind, arch in entries(data, start, size):
        if arch == keep:
            kept += payload
        else:
            data[offset:offset + payload] = bytes(payload)
            zeroed += payload
    if kept == 0:
        raise SystemExit(f"error: {src}: no code for sm_{keep}")
    open(dst, "wb").write(data)
    print(f"sm_{keep}: kept {kept / 2**20:.1f} MiB, zeroed {zeroed / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
