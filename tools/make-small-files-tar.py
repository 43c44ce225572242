#!/usr/bin/env python3
"""Writes a deterministic tar of many small files, the layer-hash small-file benchmark input.

    python3 tools/make-small-files-tar.py OUT.tar [--files 20000] [--max-size 12288] [--seed 1]

Files are 0..max-size bytes (uniform), in 200 directories of 100 files, with
pseudo-random content, fixed mtime/uid/gid/mode (GNU format, like `docker save`
layers). The same arguments always give the same bytes.
"""
import argparse
import io
import random
import tarfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--max-size", type=int, default=12 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    per_dir = 100
    with tarfile.open(args.out, "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(args.files):
            d = f"usr/share/d{i // per_dir:04d}"
            if i % per_dir == 0:
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = 1700000000
                tar.addfile(info)
            size = rng.randint(0, args.max_size)
            info = tarfile.TarInfo(f"{d}/f{i:05d}.txt")
            info.size = size
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(rng.randbytes(size)))


if __name__ == "__main__":
    main()
