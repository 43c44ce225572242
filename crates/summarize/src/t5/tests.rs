//! The bucket formula, configuration rules and caches of the T5 network,
//! which the public API does not reach; `tests/logits.rs` holds it against
//! transformers.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::{Activation, T5, T5Config, relative_bucket};
use crate::error::Error;
use crate::nn::Precision;
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

const PAD: u32 = 0;
const START: u32 = 0;

fn row(ids: &[u32]) -> (Tensor, Tensor) {
    let n = ids.len();
    (
        Tensor::from_slice(ids, (1, n), &Device::Cpu).unwrap(),
        Tensor::ones((1, n), DType::U32, &Device::Cpu).unwrap(),
    )
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Bucket boundaries as transformers 5.24 computes them (recorded with
/// `T5Attention._relative_position_bucket` over -5000..=5000): each
/// pair is (first relative position of a run, its bucket).
#[test]
fn buckets_match_transformers() {
    #[rustfmt::skip]
    type Runs = &'static [(i64, u32)];
    let cases: [(usize, usize, bool, Runs); 6] = [
        (
            32,
            128,
            true,
            &[
                (-5000, 15),
                (-90, 14),
                (-63, 13),
                (-45, 12),
                (-31, 11),
                (-22, 10),
                (-15, 9),
                (-11, 8),
                (-7, 7),
                (-6, 6),
                (-5, 5),
                (-4, 4),
                (-3, 3),
                (-2, 2),
                (-1, 1),
                (0, 0),
                (1, 17),
                (2, 18),
                (3, 19),
                (4, 20),
                (5, 21),
                (6, 22),
                (7, 23),
                (8, 24),
                (12, 25),
                (16, 26),
                (23, 27),
                (32, 28),
                (46, 29),
                (64, 30),
                (91, 31),
            ],
        ),
        (
            32,
            128,
            false,
            &[
                (-5000, 31),
                (-112, 30),
                (-98, 29),
                (-86, 28),
                (-76, 27),
                (-66, 26),
                (-58, 25),
                (-51, 24),
                (-45, 23),
                (-39, 22),
                (-34, 21),
                (-30, 20),
                (-26, 19),
                (-23, 18),
                (-20, 17),
                (-18, 16),
                (-15, 15),
                (-14, 14),
                (-13, 13),
                (-12, 12),
                (-11, 11),
                (-10, 10),
                (-9, 9),
                (-8, 8),
                (-7, 7),
                (-6, 6),
                (-5, 5),
                (-4, 4),
                (-3, 3),
                (-2, 2),
                (-1, 1),
                (0, 0),
            ],
        ),
        (
            32,
            64,
            true,
            &[
                (-5000, 15),
                (-49, 14),
                (-38, 13),
                (-29, 12),
                (-22, 11),
                (-17, 10),
                (-13, 9),
                (-10, 8),
                (-7, 7),
                (-6, 6),
                (-5, 5),
                (-4, 4),
                (-3, 3),
                (-2, 2),
                (-1, 1),
                (0, 0),
                (1, 17),
                (2, 18),
                (3, 19),
                (4, 20),
                (5, 21),
                (6, 22),
                (7, 23),
                (8, 24),
                (11, 25),
                (14, 26),
                (18, 27),
                (23, 28),
                (30, 29),
                (39, 30),
                (50, 31),
            ],
        ),
        (
            32,
            64,
            false,
            &[
                (-5000, 31),
                (-58, 30),
                (-53, 29),
                (-49, 28),
                (-45, 27),
                (-41, 26),
                (-38, 25),
                (-34, 24),
                (-31, 23),
                (-29, 22),
                (-26, 21),
                (-24, 20),
                (-22, 19),
                (-20, 18),
                (-19, 17),
                (-17, 16),
                (-15, 15),
                (-14, 14),
                (-13, 13),
                (-12, 12),
                (-11, 11),
                (-10, 10),
                (-9, 9),
                (-8, 8),
                (-7, 7),
                (-6, 6),
                (-5, 5),
                (-4, 4),
                (-3, 3),
                (-2, 2),
                (-1, 1),
                (0, 0),
            ],
        ),
        (
            8,
            20,
            true,
            &[(-5000, 3), (-6, 2), (-1, 1), (0, 0), (1, 5), (2, 6), (7, 7)],
        ),
        (
            8,
            20,
            false,
            &[
                (-5000, 7),
                (-13, 6),
                (-8, 5),
                (-5, 4),
                (-3, 3),
                (-2, 2),
                (-1, 1),
                (0, 0),
            ],
        ),
    ];
    for (buckets, max_distance, bidirectional, runs) in cases {
        let end = if bidirectional { 5000 } else { 0 };
        for (i, &(start, bucket)) in runs.iter().enumerate() {
            let stop = runs.get(i + 1).map_or(end, |r| r.0 - 1);
            for r in start..=stop {
                assert_eq!(
                    relative_bucket(r, bidirectional, buckets, max_distance),
                    bucket,
                    "{buckets}/{max_distance}/{bidirectional} at {r}"
                );
            }
        }
    }
}

fn base_config() -> Value {
    json!({
        "vocab_size": 40, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4,
        "num_layers": 2, "num_decoder_layers": 1, "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 20, "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "relu"
    })
}

fn with(mut v: Value, key: &str, x: Value) -> Value {
    v[key] = x;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn config_scaling_and_activation_rules() {
    let c = |v: Value| T5Config::from_json(&v).unwrap();
    // transformers 4: scaling follows tie_word_embeddings, absent = tied.
    assert!(c(base_config()).scale_decoder_outputs);
    assert!(!c(with(base_config(), "tie_word_embeddings", json!(false))).scale_decoder_outputs);
    assert!(c(with(base_config(), "tie_word_embeddings", json!(null))).scale_decoder_outputs);
    // transformers 5: the explicit flag wins over the (always true) tie.
    let v5 = with(base_config(), "tie_word_embeddings", json!(true));
    assert!(!c(with(v5.clone(), "scale_decoder_outputs", json!(false))).scale_decoder_outputs);
    assert!(c(with(v5.clone(), "scale_decoder_outputs", json!(true))).scale_decoder_outputs);
    let untied = with(base_config(), "tie_word_embeddings", json!(false));
    assert!(c(with(untied, "scale_decoder_outputs", json!(true))).scale_decoder_outputs);
    assert!(!c(with(v5, "scale_decoder_outputs", json!(null))).scale_decoder_outputs);

    let act = |p: &str| {
        let cfg = c(with(base_config(), "feed_forward_proj", json!(p)));
        (cfg.gated, cfg.activation)
    };
    assert_eq!(act("relu"), (false, Activation::Relu));
    assert_eq!(act("gated-gelu"), (true, Activation::GeluTanh));
    assert_eq!(act("gelu"), (false, Activation::Gelu));
    assert_eq!(act("gated-gelu_new"), (true, Activation::GeluTanh));
    assert_eq!(act("gated-silu"), (true, Activation::Silu));
    assert_eq!(
        c(without(base_config(), "feed_forward_proj")).activation,
        Activation::Relu
    );

    let d = c(without(
        without(base_config(), "num_decoder_layers"),
        "relative_attention_max_distance",
    ));
    assert_eq!(
        (d.num_decoder_layers, d.relative_attention_max_distance),
        (2, 128)
    );
}

#[test]
fn bad_configs_are_refused() {
    let bad = |v: Value, needle: &str| match T5Config::from_json(&v) {
        Err(Error::Config {
            file: "config.json",
            reason,
        }) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        other => panic!("expected a config error about {needle}, got {other:?}"),
    };
    bad(without(base_config(), "d_model"), "d_model is missing");
    bad(with(base_config(), "num_heads", json!(0)), "num_heads");
    bad(with(base_config(), "d_kv", json!(-8)), "d_kv");
    bad(with(base_config(), "d_ff", json!("64")), "d_ff");
    bad(with(base_config(), "d_kv", json!(u64::MAX)), "overflows");
    bad(
        with(base_config(), "feed_forward_proj", json!("gated-gelu-new")),
        "feed_forward_proj",
    );
    bad(
        with(base_config(), "feed_forward_proj", json!("swiglu")),
        "swiglu",
    );
    bad(
        with(base_config(), "relative_attention_num_buckets", json!(2)),
        "buckets",
    );
    bad(
        with(base_config(), "relative_attention_max_distance", json!(4)),
        "max_distance",
    );
    bad(
        with(base_config(), "layer_norm_epsilon", json!("x")),
        "layer_norm_epsilon",
    );
    bad(
        with(base_config(), "scale_decoder_outputs", json!(1)),
        "scale_decoder_outputs",
    );
    bad(json!([1, 2]), "object");
}

/// A random checkpoint of `config` in transformers' tensor names.
fn random_tensors(cfg: &T5Config, gated: bool) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let (d, f, inner) = (cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv);
    let mut t = HashMap::new();
    let mut put = |name: String, dims: &[usize]| {
        t.insert(name, Tensor::randn(0f32, 0.5, dims, &dev).unwrap());
    };
    put("shared.weight".into(), &[cfg.vocab_size, d]);
    for (stack, layers) in [
        ("encoder", cfg.num_layers),
        ("decoder", cfg.num_decoder_layers),
    ] {
        put(format!("{stack}.final_layer_norm.weight"), &[d]);
        for i in 0..layers {
            let p = format!("{stack}.block.{i}.layer");
            let mut attns = vec![(format!("{p}.0"), "SelfAttention")];
            if stack == "decoder" {
                attns.push((format!("{p}.1"), "EncDecAttention"));
            }
            for (l, kind) in &attns {
                put(format!("{l}.layer_norm.weight"), &[d]);
                for w in ["q", "k", "v"] {
                    put(format!("{l}.{kind}.{w}.weight"), &[inner, d]);
                }
                put(format!("{l}.{kind}.o.weight"), &[d, inner]);
            }
            if i == 0 {
                put(
                    format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                    &[cfg.relative_attention_num_buckets, cfg.num_heads],
                );
            }
            let ff = format!("{p}.{}", attns.len());
            put(format!("{ff}.layer_norm.weight"), &[d]);
            let wis: &[&str] = if gated { &["wi_0", "wi_1"] } else { &["wi"] };
            for w in wis {
                put(format!("{ff}.DenseReluDense.{w}.weight"), &[f, d]);
            }
            put(format!("{ff}.DenseReluDense.wo.weight"), &[d, f]);
        }
    }
    t
}

fn save(dir: &Path, tensors: &HashMap<String, Tensor>) -> Weights {
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    Weights::open(&path, &Device::Cpu).unwrap()
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let cfg = T5Config::from_json(&base_config()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let good = random_tensors(&cfg, false);
    assert!(T5::load(&cfg, &save(tmp.path(), &good), Precision::F32).is_ok());

    for name in [
        "decoder.block.0.layer.1.EncDecAttention.k.weight",
        "encoder.block.1.layer.1.DenseReluDense.wo.weight",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "shared.weight",
    ] {
        let mut t = good.clone();
        t.remove(name);
        match T5::load(&cfg, &save(tmp.path(), &t), Precision::F32) {
            Err(Error::MissingTensor(n)) => assert_eq!(n, name),
            other => panic!("{name}: expected MissingTensor, got {other:?}"),
        }
    }
    let name = "encoder.block.1.layer.0.SelfAttention.q.weight";
    let mut t = good.clone();
    t.insert(
        name.into(),
        Tensor::zeros((32, 33), DType::F32, &Device::Cpu).unwrap(),
    );
    match T5::load(&cfg, &save(tmp.path(), &t), Precision::F32) {
        Err(Error::Shape {
            name: n,
            expected,
            actual,
        }) => {
            assert_eq!(
                (n.as_str(), expected, actual),
                (name, vec![32, 32], vec![32, 33])
            );
        }
        other => panic!("expected a Shape error, got {other:?}"),
    }
    // A gated config needs wi_0 / wi_1.
    let gated = T5Config::from_json(&with(
        base_config(),
        "feed_forward_proj",
        json!("gated-gelu"),
    ))
    .unwrap();
    match T5::load(&gated, &save(tmp.path(), &good), Precision::F32) {
        Err(Error::MissingTensor(n)) => {
            assert!(n.ends_with("DenseReluDense.wi_0.weight"), "{n}")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

/// Padding a row must not change its logits, and reorder_cache must
/// move rows of every cache together.
#[test]
fn padding_and_reordering_keep_rows_apart() {
    let cfg = T5Config::from_json(&with(
        base_config(),
        "feed_forward_proj",
        json!("gated-gelu"),
    ))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let weights = save(tmp.path(), &random_tensors(&cfg, true));
    let mut model = T5::load(&cfg, &weights, Precision::F32).unwrap();
    let dev = Device::Cpu;
    let a: Vec<u32> = (0..12).map(|i| 2 + (i * 7) % 37).collect();
    let b: Vec<u32> = vec![5, 9, 13, 1];
    let steps: [[u32; 2]; 4] = [[START, START], [7, 3], [11, 30], [1, 8]];

    let alone = |model: &mut T5, input: &[u32]| -> Vec<Vec<f32>> {
        let (x, m) = row(input);
        model.encode(&x, &m).unwrap();
        let col = usize::from(input.len() != a.len());
        steps
            .iter()
            .map(|s| {
                let t = Tensor::new(&[s[col]], &dev).unwrap();
                model
                    .decode_step(&t)
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    };
    let ra = alone(&mut model, &a);
    let rb = alone(&mut model, &b);

    let mut padded = b.clone();
    padded.resize(a.len(), PAD);
    let x = Tensor::from_vec([a.clone(), padded].concat(), (2, a.len()), &dev).unwrap();
    let mask: Vec<u32> = (0..2 * a.len())
        .map(|i| u32::from(i < a.len() + b.len()))
        .collect();
    let m = Tensor::from_vec(mask, (2, a.len()), &dev).unwrap();
    model.encode(&x, &m).unwrap();
    for (i, s) in steps.iter().enumerate().take(2) {
        let out = model
            .decode_step(&Tensor::new(s, &dev).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(
            max_err(&out[0], &ra[i]) < 1e-5 && max_err(&out[1], &rb[i]) < 1e-5,
            "step {i}"
        );
    }
    // Rows become [b, a, a]; feed each its own continuation.
    model
        .reorder_cache(&Tensor::new(&[1u32, 0, 0], &dev).unwrap())
        .unwrap();
    for (i, s) in steps.iter().enumerate().skip(2) {
        let feed = [s[1], s[0], s[0]];
        let out = model
            .decode_step(&Tensor::new(&feed, &dev).unwrap())
            .unwrap();
        assert_eq!(out.dims(), &[3, cfg.vocab_size]);
        let out = out.to_vec2::<f32>().unwrap();
        assert!(max_err(&out[0], &rb[i]) < 1e-5, "step {i}");
        assert!(
            max_err(&out[1], &ra[i]) < 1e-5 && max_err(&out[2], &ra[i]) < 1e-5,
            "step {i}"
        );
    }
    assert!(
        model
            .decode_step(&Tensor::new(&[1u32, 1], &dev).unwrap())
            .is_err()
    );

    // One row, expanded to two after its first step.
    let (x, m) = row(&a);
    model.encode(&x, &m).unwrap();
    let first = model
        .decode_step(&Tensor::new(&[START], &dev).unwrap())
        .unwrap();
    assert_eq!(first.squeeze(0).unwrap().to_vec1::<f32>().unwrap(), ra[0]);
    model
        .reorder_cache(&Tensor::new(&[0u32, 0], &dev).unwrap())
        .unwrap();
    for (i, s) in steps.iter().enumerate().skip(1) {
        let out = model
            .decode_step(&Tensor::new(&[s[0], s[0]], &dev).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(
            max_err(&out[0], &ra[i]) < 1e-5 && max_err(&out[1], &ra[i]) < 1e-5,
            "step {i}"
        );
    }
    assert!(
        model
            .reorder_cache(&Tensor::new(&[3u32], &dev).unwrap())
            .is_err()
    );
    model.clear_kv_cache();
    assert!(
        model
            .decode_step(&Tensor::new(&[START], &dev).unwrap())
            .is_err()
    );
    let (x, m) = row(&[cfg.vocab_size as u32]);
    assert!(model.encode(&x, &m).is_err());
}
