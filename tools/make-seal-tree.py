#!/usr/bin/env python3
"""Writes a deterministic document tree, the sealing benchmark input.

    python3 tools/make-seal-tree.py OUT_DIR [--big 100] [--big-mib 5] [--small 1000] [--seed 1]

Defaults: 100 files of 5 MiB and 1000 files of 0-16 KiB (about 512 MiB), random
content, spread over 10 directories. The same arguments always give the same tree.
"""
import argparse
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--big", type=int, default=100)
    ap.add_argument("--big-mib", type=int, default=5)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    for i in range(args.big + args.small):
        d = os.path.join(args.out, f"dir{i % 10}")
        os.makedirs(d, exist_ok=True)
        size = args.big_mib << 20 if i < args.big else rng.randint(0, 16 << 10)
        with open(os.path.join(d, f"doc{i:05d}.bin"), "wb") as f:
            f.write(rng.randbytes(size))


if __name__ == "__main__":
    main()
