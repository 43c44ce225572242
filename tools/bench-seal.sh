#!/bin/bash
# Sealing a directory: `confsum encfs create --from` against the rootless
# cryptsetup path (mkfs.ext4 -d, then offline cryptsetup reencrypt --encrypt,
# then sync), both in one hyperfine run per memory state, interleaved by
# hyperfine's own order (every run of each, medians reported).
#
#   tools/bench-seal.sh CONFSUM TREE WORKDIR [RUNS] [BASELINE_CONFSUM]
#
# BASELINE_CONFSUM, if given, is timed too (say, a build of main), as
# "confsum-baseline".
# States: "idle" waits 30 s after sync before each run (on VMs that hand freed
# memory back to the host, page-cache writes then pay for fresh pages);
# "dropped" runs right after `echo 3 > /proc/sys/vm/drop_caches` (root only;
# skipped with a note otherwise), which also makes the source reads cold.
# Make TREE with tools/make-seal-tree.py. Prints the CPU model first.
set -euo pipefail
confsum=$(readlink -f "$1")
tree=$(readlink -f "$2")
work=$(readlink -f "$3")
runs=${4:-5}
baseline=${5:+$(readlink -f "$5")}
mkdir -p "$work"
key=$work/seal.key
head -c 32 /dev/urandom >"$key"
chmod 600 "$key"
# Content plus a tenth, plus the 16 MiB that reencrypt takes for its header.
mib=$(($(du -sbm "$tree" | cut -f1) * 11 / 10 + 64))

cs="mkfs.ext4 -q -b 4096 -d $tree $work/cs.img ${mib}M \
 && cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 16M --sector-size 4096 \
 --cipher aes-xts-plain64 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file $key \
 --batch-mode $work/cs.img && sync $work/cs.img"
ours="$confsum encfs create --from $tree --out $work/ours.img --key-file $key --no-progress 2>/dev/null"
extra=()
if [ -n "$baseline" ]; then
  extra=(-n confsum-baseline "$baseline encfs create --from $tree --out $work/base.img --key-file $key --no-progress 2>/dev/null")
fi

lscpu | grep 'Model name'
echo "tree: $(du -sh "$tree" | cut -f1), $(find "$tree" -type f | wc -l) files; output in $work ($(df -T "$work" | awk 'NR==2{print $2}'))"

clean="rm -f $work/cs.img $work/ours.img $work/base.img; sync"
hyperfine -r "$runs" --export-json "$work/idle.json" \
  --prepare "$clean; sleep 30" \
  -n confsum "$ours" -n cryptsetup-path "$cs" "${extra[@]}"
if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  hyperfine -r "$runs" --export-json "$work/dropped.json" \
    --prepare "$clean; echo 3 > /proc/sys/vm/drop_caches" \
    -n confsum "$ours" -n cryptsetup-path "$cs" "${extra[@]}"
else
  echo "cannot drop caches (not root): the dropped-caches state was not measured"
fi
rm -f "$work/cs.img" "$work/ours.img" "$work/base.img"
# Medians and ratios to the cryptsetup path.
for state in idle dropped; do
  [ -f "$work/$state.json" ] || continue
  python3 - "$work/$state.json" "$state" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
cs = r["cryptsetup-path"]
print(sys.argv[2] + ": " + ", ".join(f"{k} median {v:.2f} s ({cs / v:.2f}x the cryptsetup path)" for k, v in r.items()))
PY
done
