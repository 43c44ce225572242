//! The search against transformers' `generate()` on a scripted model
//! (`tests/tools/generate_oracle.py` records what transformers did with
//! it), and the processors and helpers one by one.

use serde_json::{Value, json};

use super::*;

/// A model whose logits are a pure function of the unpadded encoder ids
/// and the decoder ids so far: the same function as `scripted_logits`
/// in tests/tools/generate_oracle.py. Its decoder output is those logits,
/// and its head the identity.
#[derive(Debug)]
struct Scripted {
    vocab: usize,
    boost: Vec<u32>,
    enc: Vec<Vec<u32>>,
    dec: Vec<Vec<u32>>,
    steps: usize,
    head: LmHead,
}

impl Scripted {
    fn new(vocab: usize, boost: &[u32]) -> Self {
        Self::with_screen(vocab, boost, false)
    }

    /// With the int8 screen on its head (see `crate::head`) or without.
    fn with_screen(vocab: usize, boost: &[u32], screened: bool) -> Self {
        let eye = Tensor::eye(vocab, candle_core::DType::F32, &Device::Cpu).unwrap();
        let head = LmHead::with_screen(eye, None, crate::nn::Precision::F32, screened)
            .unwrap()
            .screen_every_step();
        assert_eq!(head.screened(), screened);
        Self {
            vocab,
            boost: boost.to_vec(),
            enc: Vec::new(),
            dec: Vec::new(),
            steps: 0,
            head,
        }
    }

    fn logits(&self, enc: &[u32], dec: &[u32]) -> Vec<f32> {
        fn mix(h: u32, x: u32) -> u32 {
            (h ^ x).wrapping_mul(16_777_619)
        }
        let mut h = 2_166_136_261u32;
        for &t in enc {
            h = mix(h, t + 1);
        }
        h = mix(h, 0xFFFF);
        for &t in dec {
            h = mix(h, t + 1);
        }
        let generated = dec.len() as u32 - 1;
        (0..self.vocab as u32)
            .map(|v| {
                let x = mix(mix(h, v + 7), 0xABCD);
                let mut p = (x >> 16) % 64;
                if self.boost.contains(&v) {
                    p = (p % 32 + 3 * generated).min(63);
                }
                (p * self.vocab as u32 + v) as f32 / 256.0
            })
            .collect()
    }
}

impl Seq2Seq for Scripted {
    fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()> {
        let ids: Vec<Vec<u32>> = input_ids.to_vec2()?;
        let mask: Vec<Vec<u32>> = attention_mask.to_vec2()?;
        self.enc = ids
            .iter()
            .zip(&mask)
            .map(|(i, m)| {
                i.iter()
                    .zip(m)
                    .filter(|(_, m)| **m == 1)
                    .map(|(i, _)| *i)
                    .collect()
            })
            .collect();
        self.dec = vec![Vec::new(); self.enc.len()];
        Ok(())
    }

    fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor> {
        self.steps += 1;
        let tokens: Vec<u32> = tokens.to_vec1()?;
        assert_eq!(tokens.len(), self.dec.len());
        let mut flat = Vec::new();
        for (row, t) in tokens.into_iter().enumerate() {
            self.dec[row].push(t);
            flat.extend(self.logits(&self.enc[row], &self.dec[row]));
        }
        Ok(Tensor::from_vec(
            flat,
            (self.dec.len(), self.vocab),
            &Device::Cpu,
        )?)
    }

    fn head(&self) -> &LmHead {
        &self.head
    }

    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
        let indices: Vec<u32> = indices.to_vec1()?;
        self.enc = indices
            .iter()
            .map(|&i| self.enc[i as usize].clone())
            .collect();
        self.dec = indices
            .iter()
            .map(|&i| self.dec[i as usize].clone())
            .collect();
        Ok(())
    }

    fn clear_kv_cache(&mut self) {
        self.dec.clear();
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }
}

fn oracle() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/generate_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// What `generate` gives on `case`'s scripted model, with the head's
/// int8 screen and without (they must agree), and what transformers gave.
fn replay(case: &Value, config: &GenerationConfig) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let boost: Vec<u32> = serde_json::from_value(case["boost"].clone()).unwrap();
    let vocab = case["vocab"].as_u64().unwrap() as usize;
    let inputs = ids_of(&case["inputs"]);
    let mut plain = Scripted::new(vocab, &boost);
    let got = generate(&mut plain, &inputs, config).unwrap();
    let mut screened = Scripted::with_screen(vocab, &boost, true);
    let screened = generate(&mut screened, &inputs, config).unwrap();
    assert_eq!(got, screened, "{}", case["name"]);
    (got, ids_of(&case["ids"]))
}

/// transformers' generate() on the same scripted model, replayed: every
/// search, processor, length rule and padding rule.
#[test]
fn matches_transformers_generate() {
    let doc = oracle();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 600, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let family = name.split('/').next().unwrap();
        let mut config = GenerationConfig::from_json(
            &json!({ "model_type": family }),
            Some(&case["generation"]),
        )
        .unwrap();
        config.update(&case["kwargs"]).unwrap();
        let (got, want) = replay(case, &config);
        if got != want {
            failures.push(format!(
                "{name} {}: got {got:?}, want {want:?}",
                case["kwargs"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Checkpoint folders loaded by transformers (config.json with or
/// without generation_config.json) and generated with no kwargs.
#[test]
fn matches_transformers_config_loading() {
    let doc = oracle();
    let cases = doc["config_cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let generation = case.get("generation_config").filter(|g| !g.is_null());
        let config = GenerationConfig::from_json(&case["config"], generation).unwrap();
        let (got, want) = replay(case, &config);
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case["name"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn plan(config: &GenerationConfig) -> Plan {
    Plan::new(config, 32).unwrap()
}

fn tokens_only() -> GenerationConfig {
    GenerationConfig {
        decoder_start_token_id: Some(0),
        eos_token_ids: vec![1],
        pad_token_id: Some(0),
        ..GenerationConfig::default()
    }
}

#[test]
fn no_repeat_ngram_bans_what_would_repeat() {
    let p = plan(&GenerationConfig {
        no_repeat_ngram_size: 2,
        ..tokens_only()
    });
    // Bigrams (0,5) (5,6) (6,5): the suffix 5 was followed by 6.
    let mut s = vec![0.0; 8];
    p.process(&[0, 5, 6, 5], &mut s);
    let banned: Vec<usize> = (0..8).filter(|&i| s[i] == f32::NEG_INFINITY).collect();
    assert_eq!(banned, vec![6]);
    // Too short for a whole n-gram: nothing banned.
    let p3 = plan(&GenerationConfig {
        no_repeat_ngram_size: 3,
        ..tokens_only()
    });
    let mut s = vec![0.0; 8];
    p3.process(&[0, 5], &mut s);
    assert!(s.iter().all(|&x| x == 0.0));
    // The decoder start token is part of the n-grams.
    let mut s = vec![0.0; 8];
    p3.process(&[0, 5, 7, 0, 5], &mut s);
    assert_eq!(s[7], f32::NEG_INFINITY);
    assert_eq!(s.iter().filter(|x| x.is_infinite()).count(), 1);
}

#[test]
fn min_length_counts_the_start_token() {
    let p = plan(&GenerationConfig {
        min_length: 3,
        ..tokens_only()
    });
    let mut s = vec![0.0; 4];
    p.process(&[0, 9], &mut s);
    assert_eq!(s[1], f32::NEG_INFINITY);
    let mut s = vec![0.0; 4];
    p.process(&[0, 9, 9], &mut s);
    assert_eq!(s[1], 0.0);
    // min_new_tokens = n acts as min_length = n + 1, and wins.
    let p = plan(&GenerationConfig {
        min_length: 10,
        min_new_tokens: Some(2),
        ..tokens_only()
    });
    assert_eq!(p.min_length, 3);
}

#[test]
fn forced_tokens_override_bans() {
    let p = plan(&GenerationConfig {
        forced_bos_token_id: Some(4),
        forced_eos_token_ids: vec![1, 2],
        min_length: 50,
        max_length: Some(6),
        ..tokens_only()
    });
    let mut s = vec![0.5; 8];
    p.process(&[0], &mut s);
    assert_eq!(argmax(&s), 4);
    assert_eq!(s.iter().filter(|x| x.is_finite()).count(), 1);
    let mut s = vec![0.5; 8];
    p.process(&[0, 4, 3], &mut s);
    assert_eq!(
        s,
        vec![0.5, f32::NEG_INFINITY, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    );
    // At max_length - 1 the EOS ids are forced despite min_length.
    let mut s = vec![0.5; 8];
    p.process(&[0, 4, 3, 3, 3], &mut s);
    let kept: Vec<usize> = (0..8).filter(|&i| s[i] == 0.0).collect();
    assert_eq!(kept, vec![1, 2]);
}

#[test]
fn lengths_resolve_like_transformers() {
    let vocab = 32;
    // Default: 20 new tokens, capped by max_position_embeddings.
    assert_eq!(Plan::new(&tokens_only(), vocab).unwrap().max_length, 21);
    let capped = GenerationConfig {
        max_position_embeddings: Some(12),
        ..tokens_only()
    };
    assert_eq!(Plan::new(&capped, vocab).unwrap().max_length, 12);
    // An explicit max_length is not capped; max_new_tokens wins over it.
    let explicit = GenerationConfig {
        max_length: Some(40),
        ..capped.clone()
    };
    assert_eq!(Plan::new(&explicit, vocab).unwrap().max_length, 40);
    let new = GenerationConfig {
        max_new_tokens: Some(5),
        ..explicit
    };
    assert_eq!(Plan::new(&new, vocab).unwrap().max_length, 6);
}

#[test]
fn top_k_and_argmax_break_ties_by_index() {
    let s = [
        1.0,
        3.0,
        f32::NEG_INFINITY,
        3.0,
        -1.0e9,
        1.0,
        f32::NEG_INFINITY,
    ];
    assert_eq!(top_k(&s, 4), vec![1, 3, 0, 5]);
    assert_eq!(top_k(&s, 7), vec![1, 3, 0, 5, 4, 2, 6]);
    assert_eq!(top_k(&s, 9).len(), 7);
    assert_eq!(argmax(&s), 1);
    assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
}

#[test]
fn log_softmax_normalises() {
    let mut row: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.75).collect();
    row[3] = f32::NEG_INFINITY;
    log_softmax(&mut row);
    let total: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    assert_eq!(row[3], f32::NEG_INFINITY);
    assert!(row.iter().all(|&x| x <= 0.0));
}

#[test]
fn beams_expand_then_follow_their_parents() {
    // A model that records the cache reorders it is asked for.
    #[derive(Debug)]
    struct Recorder {
        inner: Scripted,
        orders: Vec<Vec<u32>>,
    }
    impl Seq2Seq for Recorder {
        fn encode(&mut self, ids: &Tensor, mask: &Tensor) -> Result<()> {
            self.inner.encode(ids, mask)
        }
        fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor> {
            self.inner.decode_hidden(tokens)
        }
        fn head(&self) -> &LmHead {
            self.inner.head()
        }
        fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
            self.orders.push(indices.to_vec1()?);
            self.inner.reorder_cache(indices)
        }
        fn clear_kv_cache(&mut self) {}
        fn vocab_size(&self) -> usize {
            self.inner.vocab
        }
    }
    let mut model = Recorder {
        inner: Scripted::new(32, &[1]),
        orders: Vec::new(),
    };
    let config = GenerationConfig {
        num_beams: 3,
        max_new_tokens: Some(6),
        ..tokens_only()
    };
    let out = generate(&mut model, &[vec![4, 5, 1], vec![7, 1]], &config).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(model.orders[0], vec![0, 0, 0, 1, 1, 1]);
    // Each later reorder keeps every row within its own input's beams.
    for order in &model.orders[1..] {
        for (i, &o) in order.iter().enumerate() {
            assert_eq!(i / 3, o as usize / 3, "{order:?}");
        }
    }
    // Step 1 leaves only beam 0 alive (the others start at -1e9), so the
    // first reorder after it points every beam at row 0 of its input.
    assert_eq!(model.orders[1], vec![0, 0, 0, 3, 3, 3]);
    assert!(model.inner.steps <= 6);
}

#[test]
fn greedy_pads_finished_rows() {
    let mut model = Scripted::new(32, &[1]);
    let config = GenerationConfig {
        max_new_tokens: Some(40),
        ..tokens_only()
    };
    let out = generate(&mut model, &[vec![5, 9, 13, 1], vec![7, 3, 1]], &config).unwrap();
    assert_eq!(out[0].len(), out[1].len());
    for row in &out {
        let end = row.iter().position(|&t| t == 1).unwrap();
        assert!(row[end + 1..].iter().all(|&t| t == 0));
    }
}

#[test]
fn generate_rejects_what_cannot_run() {
    let mut model = Scripted::new(32, &[1]);
    let ok = tokens_only();
    assert!(matches!(
        generate(&mut model, &[], &ok),
        Err(Error::EmptyInput)
    ));
    assert!(matches!(
        generate(&mut model, &[vec![3], vec![]], &ok),
        Err(Error::EmptyInput)
    ));
    let cases = [
        (
            GenerationConfig {
                eos_token_ids: vec![],
                ..ok.clone()
            },
            "eos_token_id",
        ),
        (
            GenerationConfig {
                decoder_start_token_id: None,
                ..ok.clone()
            },
            "decoder_start_token_id",
        ),
        (
            GenerationConfig {
                max_length: Some(1),
                ..ok.clone()
            },
            "max_length",
        ),
        (
            GenerationConfig {
                num_beams: 0,
                ..ok.clone()
            },
            "num_beams",
        ),
        (
            GenerationConfig {
                forced_bos_token_id: Some(32),
                ..ok.clone()
            },
            "vocabulary",
        ),
    ];
    for (config, needle) in cases {
        match generate(&mut model, &[vec![3, 1]], &config) {
            Err(Error::Generation(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    // Falls back to bos_token_id for the start and eos for the pad.
    let fallback = GenerationConfig {
        decoder_start_token_id: None,
        bos_token_id: Some(0),
        pad_token_id: None,
        ..ok
    };
    let p = Plan::new(&fallback, 32).unwrap();
    assert_eq!((p.start, p.pad), (0, 1));
}
