#!/usr/bin/env python3
"""Records transformers' own generate() on a scripted model, for the search
in src/generation/.

The model's logits are a pure function of the (unpadded) encoder ids and the
decoder ids so far; `Scripted` in src/generation/search/tests.rs computes the
same function, so replaying these cases in Rust checks generation (search,
processors, lengths, padding, config loading) against transformers itself.

Run: python3 crates/summarize/tests/tools/generate_oracle.py
(writes crates/summarize/testdata/generate_oracle.json)
"""

import json
import os
import sys
import tempfile

import torch
import transformers
from torch import nn
from transformers import BartConfig, GenerationMixin, PreTrainedModel, T5Config
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "generate_oracle.json")
MASK32 = 0xFFFFFFFF


def mix(h, x):
    # FNV-1a over 32-bit words.
    return ((h ^ x) * 16777619) & MASK32


def scripted_logits(enc, dec, vocab, boost):
    """Logits k/256 (exact in f32), distinct within a row; `boost` ids (the
    eos ids) grow likelier as the decoder sequence grows."""
    h = 2166136261
    for t in enc:
        h = mix(h, t + 1)
    h = mix(h, 0xFFFF)
    for t in dec:
        h = mix(h, t + 1)
    generated = len(dec) - 1
    out = []
    for v in range(vocab):
        x = mix(mix(h, v + 7), 0xABCD)
        p = (x >> 16) % 64
        if v in boost:
            p = min(63, p % 32 + 3 * generated)
        out.append((p * vocab + v) / 256.0)
    return out


class Encoder(nn.Module):
    main_input_name = "input_ids"

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        ids = input_ids if attention_mask is None else torch.where(attention_mask.bool(), input_ids, -1)
        return BaseModelOutput(last_hidden_state=ids.to(torch.float32).unsqueeze(-1))


class Fake:
    """Mixin body shared by the T5- and BART-configured fakes."""

    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.encoder = Encoder()
        self.boost = None
        self.post_init()

    def get_encoder(self, *args, **kwargs):
        return self.encoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, encoder_outputs=None, **kwargs):
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask)
        hidden = encoder_outputs[0] if isinstance(encoder_outputs, tuple) else encoder_outputs.last_hidden_state
        rows = []
        for enc_row, dec_row in zip(hidden[:, :, 0].tolist(), decoder_input_ids.tolist()):
            enc = [int(t) for t in enc_row if t >= 0]
            rows.append(scripted_logits(enc, dec_row, self.config.vocab_size, self.boost))
        logits = torch.tensor(rows, dtype=torch.float32).unsqueeze(1)
        return Seq2SeqLMOutput(logits=logits)


class FakeBart(Fake, PreTrainedModel, GenerationMixin):
    config_class = BartConfig
    base_model_prefix = "fake"

    def _init_weights(self, module):
        pass


class FakeT5(Fake, PreTrainedModel, GenerationMixin):
    config_class = T5Config
    base_model_prefix = "fake"

    def _init_weights(self, module):
        pass


INPUTS = [
    [5, 9, 13, 1],
    [7, 3, 3, 8, 20, 11, 4, 1],
    [30, 2],
    [12, 17, 6, 25, 9, 14, 1],
]


def run(model, inputs, kwargs):
    width = max(len(r) for r in inputs)
    pad = 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in inputs])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in inputs])
    out = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs)
    return [row[1:] for row in out.tolist()]


def kwarg_sets():
    sets = [
        {},
        {"max_new_tokens": 40},
        {"max_new_tokens": 7},
        {"max_length": 9},
        {"max_length": 30, "max_new_tokens": 6},
        {"min_length": 12, "max_new_tokens": 30},
        {"min_new_tokens": 15, "max_new_tokens": 30},
        {"min_length": 12, "min_new_tokens": 4, "max_new_tokens": 30},
        {"no_repeat_ngram_size": 1, "max_new_tokens": 20},
        {"no_repeat_ngram_size": 2, "max_new_tokens": 40},
        {"no_repeat_ngram_size": 3, "max_new_tokens": 40},
        {"forced_bos_token_id": 4, "max_new_tokens": 12},
        {"forced_eos_token_id": 3, "max_new_tokens": 10},
        {"forced_eos_token_id": [3, 6], "max_length": 8},
        {"forced_bos_token_id": 4, "forced_eos_token_id": 3, "min_length": 30, "max_length": 12},
        {"eos_token_id": [1, 5], "max_new_tokens": 30},
        {"eos_token_id": 7, "pad_token_id": 9, "max_new_tokens": 30},
    ]
    for beams in (2, 3, 4):
        for lp in (0.0, 0.5, 1.0, 2.0, -1.0):
            for es in (True, False, "never"):
                sets.append({"num_beams": beams, "length_penalty": lp, "early_stopping": es, "max_new_tokens": 30})
    for es in (True, False, "never"):
        sets += [
            {"num_beams": 4, "early_stopping": es},
            {"num_beams": 4, "early_stopping": es, "min_length": 14, "max_length": 25, "length_penalty": 2.0},
            {"num_beams": 3, "early_stopping": es, "min_new_tokens": 10, "max_new_tokens": 16},
            {"num_beams": 4, "early_stopping": es, "no_repeat_ngram_size": 2, "max_new_tokens": 30},
            {"num_beams": 4, "early_stopping": es, "no_repeat_ngram_size": 3, "max_new_tokens": 30,
             "length_penalty": 0.5},
            {"num_beams": 4, "early_stopping": es, "forced_bos_token_id": 4, "forced_eos_token_id": 3,
             "max_length": 14, "length_penalty": 2.0},
            {"num_beams": 2, "early_stopping": es, "eos_token_id": [1, 5], "max_new_tokens": 30},
            {"num_beams": 5, "early_stopping": es, "max_new_tokens": 12, "length_penalty": 1.5},
        ]
    for es in (True, False, "never"):
        for beams in (2, 3, 4):
            for lp in (1.0, 2.0, 3.0):
                sets.append({"num_beams": beams, "early_stopping": es, "eos_token_id": [1, 5, 9],
                             "length_penalty": lp, "max_new_tokens": 40})
    for lp in (0.5, 1.0, 2.0, 3.0):
        sets.append({"num_beams": 4, "early_stopping": "never", "length_penalty": lp, "max_new_tokens": 80})
        sets.append({"num_beams": 3, "early_stopping": "never", "length_penalty": lp, "max_length": 26})
    return sets


# Special tokens of the two families (T5: pad 0 = start, eos 1; BART: start 2, bos 0, pad 1, eos 2).
FAMILIES = {
    "t5": {"decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1},
    "bart": {"decoder_start_token_id": 2, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2},
}


def make_model(cls, config_kwargs):
    model = cls(cls.config_class(vocab_size=32, **config_kwargs))
    model.eval()
    return model


def boost_of(model, kwargs):
    eos = kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    return sorted(eos) if isinstance(eos, list) else [eos]


def generate_cases():
    cases = []
    for family, tokens in FAMILIES.items():
        cls = FakeT5 if family == "t5" else FakeBart
        model = make_model(cls, {})
        model.generation_config = transformers.GenerationConfig(**tokens)
        for i, kwargs in enumerate(kwarg_sets()):
            model.boost = boost_of(model, kwargs)
            batches = [[INPUTS[0]], [INPUTS[2]], INPUTS[:2], INPUTS]
            for j, batch in enumerate(batches):
                ids = run(model, batch, kwargs)
                cases.append({
                    "name": f"{family}/{i}/{j}",
                    "generation": dict(tokens),
                    "kwargs": kwargs,
                    "vocab": 32,
                    "boost": model.boost,
                    "inputs": batch,
                    "ids": ids,
                })
    return cases


BART_V4_CONFIG = {
    "model_type": "bart", "vocab_size": 32, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
    "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
    "forced_bos_token_id": 0, "forced_eos_token_id": 2, "num_beams": 4, "length_penalty": 2.0,
    "min_length": 9, "max_length": 20, "no_repeat_ngram_size": 3, "early_stopping": True,
    "max_position_embeddings": 64, "force_bos_token_to_be_generated": True, "prefix": " ",
    "task_specific_params": {"summarization": {"num_beams": 2, "max_length": 10}},
    "transformers_version": "4.7.0.dev0",
}
BART_V4_GENERATION = {
    "_from_model_config": True, "bos_token_id": 0, "decoder_start_token_id": 2, "early_stopping": True,
    "eos_token_id": 2, "forced_bos_token_id": 0, "forced_eos_token_id": 2, "length_penalty": 2.0,
    "max_length": 20, "min_length": 9, "no_repeat_ngram_size": 3, "num_beams": 4, "pad_token_id": 1,
    "transformers_version": "4.27.0.dev0",
}
BART_V5_CONFIG = {k: v for k, v in BART_V4_CONFIG.items() if k not in BART_V4_GENERATION or k.endswith("token_id")}
BART_V5_CONFIG.pop("forced_bos_token_id")
BART_V5_CONFIG.pop("forced_eos_token_id")
BART_V5_CONFIG.pop("force_bos_token_to_be_generated")
BART_V5_GENERATION = {k: v for k, v in BART_V4_GENERATION.items() if k != "_from_model_config"}
T5_CONFIG = {
    "model_type": "t5", "vocab_size": 32, "d_model": 16, "num_layers": 1, "num_heads": 2, "d_kv": 8, "d_ff": 32,
    "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "n_positions": 512,
    "task_specific_params": {"summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 200,
                                               "min_length": 30, "no_repeat_ngram_size": 3, "num_beams": 4,
                                               "prefix": "summarize: "}},
}
T5_GENERATION = {"_from_model_config": True, "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
                 "transformers_version": "4.27.0.dev0"}


def config_pairs():
    bart_no_start = {k: v for k, v in BART_V4_CONFIG.items() if k != "decoder_start_token_id"}
    bart_no_pad = {k: v for k, v in BART_V4_CONFIG.items() if k != "pad_token_id"}
    bart_plain = {k: v for k, v in BART_V5_CONFIG.items() if k != "max_position_embeddings"}
    return [
        ("t5_small", "t5", T5_CONFIG, T5_GENERATION),
        ("t5_small_no_generation_config", "t5", T5_CONFIG, None),
        ("bart_v4_config_only", "bart", BART_V4_CONFIG, None),
        ("bart_v4_both", "bart", BART_V4_CONFIG, BART_V4_GENERATION),
        ("bart_v5", "bart", BART_V5_CONFIG, BART_V5_GENERATION),
        ("bart_v4_config_tokens_only_generation", "bart", BART_V4_CONFIG,
         {"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
        ("bart_default_max_clamped", "bart", dict(BART_V5_CONFIG, max_position_embeddings=12),
         {"decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
        ("bart_default_max_1024", "bart", bart_plain, {"decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
        ("bart_start_from_bos", "bart", bart_no_start, None),
        ("bart_pad_from_eos", "bart", bart_no_pad, None),
        ("bart_force_bos_flag", "bart",
         {k: v for k, v in BART_V4_CONFIG.items() if k != "forced_bos_token_id"}, None),
        ("eos_list", "t5", T5_CONFIG, dict(T5_GENERATION, eos_token_id=[1, 5], max_length=25)),
        ("null_forced_bos", "bart", BART_V4_CONFIG, dict(BART_V5_GENERATION, forced_bos_token_id=None)),
        ("never_stopping", "bart", BART_V5_CONFIG, dict(BART_V5_GENERATION, early_stopping="never")),
    ]


def config_cases():
    cases = []
    for name, family, config, generation in config_pairs():
        cls = FakeT5 if family == "t5" else FakeBart
        with tempfile.TemporaryDirectory() as d:
            make_model(cls, {}).save_pretrained(d)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(config, f)
            gpath = os.path.join(d, "generation_config.json")
            if generation is None:
                os.remove(gpath)
            else:
                with open(gpath, "w") as f:
                    json.dump(generation, f)
            model = cls.from_pretrained(d)
            model.eval()
            eos = model.generation_config.eos_token_id
            model.boost = sorted(eos) if isinstance(eos, list) else [eos]
            for j, batch in enumerate([[INPUTS[0]], [INPUTS[1]], INPUTS[:3]]):
                cases.append({
                    "name": f"{name}/{j}",
                    "config": config,
                    "generation_config": generation,
                    "vocab": 32,
                    "boost": model.boost,
                    "inputs": batch,
                    "ids": run(model, batch, {}),
                })
    return cases


def main():
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    import warnings

    warnings.simplefilter("ignore")
    doc = {
        "generated_by": f"transformers {transformers.__version__}, torch {torch.__version__}: "
        "crates/summarize/tests/tools/generate_oracle.py",
        "cases": generate_cases(),
        "config_cases": config_cases(),
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(doc['cases'])} generate cases, {len(doc['config_cases'])} config cases -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
