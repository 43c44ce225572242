//! Configuration rules, weight loading, the decoder-step kernel and the
//! caches of the BART network, which the public API does not reach;
//! `tests/logits.rs` holds it against transformers.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::{Activation, Bart, BartConfig};
use crate::error::Error;
use crate::nn::Precision;
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

fn encode(model: &mut Bart, ids: &[u32]) {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = input.ones_like().unwrap();
    model.encode(&input, &mask).unwrap();
}

fn step(model: &mut Bart, tokens: &[u32]) -> Vec<Vec<f32>> {
    let tokens = Tensor::new(tokens, &Device::Cpu).unwrap();
    model.decode_step(&tokens).unwrap().to_vec2().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_tensor_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn tiny_config() -> Value {
    serde_json::json!({
        "model_type": "bart",
        "vocab_size": 50,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 1,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 48,
        "max_position_embeddings": 12,
        "activation_function": "gelu",
        "scale_embedding": false,
        "tie_word_embeddings": true
    })
}

/// Every tensor `Bart::load` reads for `tiny_config`, as transformers 5
/// saves them.
fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
    let (v, d, p) = (50, 32, 14);
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("model.shared.weight".into(), vec![v, d]),
        ("final_logits_bias".into(), vec![1, v]),
    ];
    for (side, layers, ffn) in [("encoder", 2, 64), ("decoder", 1, 48)] {
        t.push((format!("model.{side}.embed_positions.weight"), vec![p, d]));
        for part in ["weight", "bias"] {
            t.push((format!("model.{side}.layernorm_embedding.{part}"), vec![d]));
        }
        for i in 0..layers {
            let prefix = format!("model.{side}.layers.{i}");
            let mut attns = vec!["self_attn"];
            let mut norms = vec!["self_attn_layer_norm", "final_layer_norm"];
            if side == "decoder" {
                attns.push("encoder_attn");
                norms.push("encoder_attn_layer_norm");
            }
            for attn in attns {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    t.push((format!("{prefix}.{attn}.{proj}.weight"), vec![d, d]));
                    t.push((format!("{prefix}.{attn}.{proj}.bias"), vec![d]));
                }
            }
            for norm in norms {
                t.push((format!("{prefix}.{norm}.weight"), vec![d]));
                t.push((format!("{prefix}.{norm}.bias"), vec![d]));
            }
            t.push((format!("{prefix}.fc1.weight"), vec![ffn, d]));
            t.push((format!("{prefix}.fc1.bias"), vec![ffn]));
            t.push((format!("{prefix}.fc2.weight"), vec![d, ffn]));
            t.push((format!("{prefix}.fc2.bias"), vec![d]));
        }
    }
    t
}

/// Writes random weights for `tiny_config` into `dir`, letting `edit`
/// drop, reshape or add tensors first.
fn write_tiny(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> Bart {
    let mut tensors: HashMap<String, Tensor> = tiny_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let t = Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
            (name, t)
        })
        .collect();
    edit(&mut tensors);
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let config = BartConfig::from_json(&tiny_config()).unwrap();
    let weights = Weights::open(&path, &Device::Cpu).unwrap();
    Bart::load(&config, &weights, Precision::F32).unwrap()
}

fn try_tiny(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> crate::Result<Bart> {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: HashMap<String, Tensor> = tiny_tensors()
        .into_iter()
        .map(|(name, shape)| {
            (
                name,
                Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    edit(&mut tensors);
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let config = BartConfig::from_json(&tiny_config()).unwrap();
    let weights = Weights::open(&path, &Device::Cpu).unwrap();
    Bart::load(&config, &weights, Precision::F32)
}

/// The decoder-step kernel against the general matmul path, with a
/// head width that is not a multiple of its eight lanes and a mask.
#[test]
fn one_query_attention_matches_matmul() {
    let (b, h, len, d) = (2, 3, 7, 13);
    let q = Tensor::randn(0f32, 1.0, (b, h, 1, d), &Device::Cpu).unwrap();
    let k = Tensor::randn(0f32, 1.0, (b, h, len, d), &Device::Cpu).unwrap();
    let v = Tensor::randn(0f32, 1.0, (b, h, len, d), &Device::Cpu).unwrap();
    let mut mask = vec![1u32; b * len];
    mask[len + 2] = 0;
    mask[2 * len - 1] = 0;
    let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
    let bias = super::encoder_bias(&mask).unwrap().unwrap();
    let rows: Vec<f32> = bias.flatten_all().unwrap().to_vec1().unwrap();
    for (bias, rows) in [(None, None), (Some(&bias), Some(rows.as_slice()))] {
        let want = super::attend(&q, &k, &v, bias).unwrap();
        let got = super::attend_one(&q, &k, &v, rows).unwrap();
        let diff = max_tensor_diff(&want, &got);
        assert!(diff < 1e-5, "{diff}");
    }
    // The mask matters: masking changes the rows it touches.
    let open = super::attend_one(&q, &k, &v, None).unwrap();
    let masked = super::attend_one(&q, &k, &v, Some(&rows)).unwrap();
    assert!(max_tensor_diff(&open, &masked) > 1e-3);
}

#[test]
fn config_v4_and_v5_agree() {
    let v5 = tiny_config();
    let mut v4 = v5.clone();
    v4["normalize_before"] = false.into();
    v4["add_final_layer_norm"] = false.into();
    v4["add_bias_logits"] = false.into();
    v4["forced_bos_token_id"] = 0.into();
    v4.as_object_mut().unwrap().remove("tie_word_embeddings");
    let a = BartConfig::from_json(&v5).unwrap();
    assert_eq!(BartConfig::from_json(&v4).unwrap(), a);
    assert_eq!(a.activation, Activation::Gelu);
    assert!(a.tie_word_embeddings && !a.scale_embedding);
    assert_eq!(
        (a.d_model, a.encoder_ffn_dim, a.decoder_ffn_dim),
        (32, 64, 48)
    );
}

#[test]
fn config_errors_are_clear() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("d_model", Value::Null, "d_model is missing"),
        (
            "d_model",
            "x".into(),
            "d_model must be a non-negative integer",
        ),
        (
            "encoder_attention_heads",
            0.into(),
            "encoder_attention_heads must be at least 1",
        ),
        (
            "decoder_attention_heads",
            5.into(),
            "not a multiple of decoder_attention_heads 5",
        ),
        ("normalize_before", true.into(), "pre-layer-norm"),
        ("add_final_layer_norm", true.into(), "pre-layer-norm"),
        (
            "activation_function",
            "mish".into(),
            "\"mish\" is not supported",
        ),
        (
            "scale_embedding",
            "yes".into(),
            "scale_embedding must be true or false",
        ),
        (
            "vocab_size",
            1.5.into(),
            "vocab_size must be a non-negative integer",
        ),
        ("model_type", 5.into(), "model_type must be a string"),
    ];
    for (key, value, want) in cases {
        let mut config = tiny_config();
        if value.is_null() {
            config.as_object_mut().unwrap().remove(key);
        } else {
            config[key] = value;
        }
        let err = BartConfig::from_json(&config).unwrap_err().to_string();
        assert!(err.contains(want), "{key}: {err}");
    }
    let mut config = tiny_config();
    config["model_type"] = "mbart".into();
    assert!(matches!(
        BartConfig::from_json(&config),
        Err(Error::UnsupportedModel(kind)) if kind == "mbart"
    ));
}

#[test]
fn activations_by_name() {
    for (name, want) in [
        ("gelu", Activation::Gelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("relu", Activation::Relu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
        ("tanh", Activation::Tanh),
    ] {
        let mut config = tiny_config();
        config["activation_function"] = name.into();
        assert_eq!(BartConfig::from_json(&config).unwrap().activation, want);
    }
    // The exact GELU, not the tanh one: they differ by ~2e-4 at 1.5.
    let x = Tensor::new(&[1.5f32, -0.5], &Device::Cpu).unwrap();
    let y: Vec<f32> = Activation::Gelu.apply(&x).unwrap().to_vec1().unwrap();
    assert!(
        (y[0] - 1.399_789_1).abs() < 1e-6 && (y[1] + 0.154_268_77).abs() < 1e-6,
        "{y:?}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let name = "model.decoder.layers.0.encoder_attn.v_proj.bias";
    let err = try_tiny(|t| {
        t.remove(name);
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n == name),
        "{err}"
    );
    // No copy of the embedding at all.
    let err = try_tiny(|t| {
        t.remove("model.shared.weight");
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n == "model.shared.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let name = "model.encoder.layers.1.fc2.weight";
    let err = try_tiny(|t| {
        t.insert(
            name.into(),
            Tensor::zeros((32, 63), DType::F32, &Device::Cpu).unwrap(),
        );
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { name: n, expected, actual } if n == name && expected == &[32, 64] && actual == &[32, 63]),
        "{err}"
    );
    let err = try_tiny(|t| {
        let p = Tensor::zeros((12, 32), DType::F32, &Device::Cpu).unwrap();
        t.insert("model.decoder.embed_positions.weight".into(), p);
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { expected, .. } if expected == &[14, 32]),
        "{err}"
    );
}

#[test]
fn input_beyond_the_window_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = write_tiny(dir.path(), |_| {});
    let ids: Vec<u32> = (3..16).collect();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let err = model
        .encode(&input, &input.ones_like().unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputTooLong {
                tokens: 13,
                window: 12
            }
        ),
        "{err}"
    );
    // The full window works, and decoding stops at its end.
    encode(&mut model, &ids[..12]);
    for _ in 0..12 {
        step(&mut model, &[2]);
    }
    let err = model
        .decode_step(&Tensor::new(&[2u32], &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("past the model's 12 positions"),
        "{err}"
    );
}

#[test]
fn bad_calls_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = write_tiny(dir.path(), |_| {});
    let one = Tensor::new(&[2u32], &Device::Cpu).unwrap();
    assert!(model.decode_step(&one).is_err());
    let input = Tensor::new(&[[0u32, 50, 2]], &Device::Cpu).unwrap();
    let err = model
        .encode(&input, &input.ones_like().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("token id 50"), "{err}");
    let input = Tensor::new(&[[0u32, u32::MAX, 2]], &Device::Cpu).unwrap();
    assert!(model.encode(&input, &input.ones_like().unwrap()).is_err());
    let empty = Tensor::zeros((1, 0), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.encode(&empty, &empty),
        Err(Error::EmptyInput)
    ));
    encode(&mut model, &[0, 5, 2]);
    assert!(
        model
            .decode_step(&Tensor::new(&[2u32, 2], &Device::Cpu).unwrap())
            .is_err()
    );
    assert!(
        model
            .reorder_cache(&Tensor::new(&[1u32], &Device::Cpu).unwrap())
            .is_err()
    );
    model.clear_kv_cache();
    assert!(model.decode_step(&one).is_err());
    assert_eq!(model.vocab_size(), 50);
}

/// Two inputs of different lengths, padded into one batch, then
/// expanded and shuffled like beams: every row must match the input
/// run alone.
#[test]
fn batch_padding_and_reorder_match_single_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = write_tiny(dir.path(), |_| {});
    let a = [0u32, 7, 9, 11, 13, 2];
    let b = [0u32, 21, 4, 2];
    let steps = [2u32, 0, 17, 33];
    let alone = |model: &mut Bart, ids: &[u32]| {
        encode(model, ids);
        steps
            .iter()
            .map(|&t| step(model, &[t]).remove(0))
            .collect::<Vec<_>>()
    };
    let want_a = alone(&mut model, &a);
    let want_b = alone(&mut model, &b);

    let input = Tensor::new(&[a, [0, 21, 4, 2, 1, 1]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32; 6], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    model.encode(&input, &mask).unwrap();
    let first = step(&mut model, &[steps[0], steps[0]]);
    assert!(max_abs_diff(&first[0], &want_a[0]) < 1e-5);
    assert!(max_abs_diff(&first[1], &want_b[0]) < 1e-5);
    // Rows become [b, a, b].
    let order = Tensor::new(&[1u32, 0, 1], &Device::Cpu).unwrap();
    model.reorder_cache(&order).unwrap();
    for (i, &t) in steps.iter().enumerate().skip(1) {
        let rows = step(&mut model, &[t, t, t]);
        assert!(max_abs_diff(&rows[0], &want_b[i]) < 1e-5);
        assert!(max_abs_diff(&rows[1], &want_a[i]) < 1e-5);
        assert!(max_abs_diff(&rows[2], &want_b[i]) < 1e-5);
    }
    // Without the mask the padding would change row b.
    model.encode(&input, &input.ones_like().unwrap()).unwrap();
    let unmasked = step(&mut model, &[steps[0], steps[0]]);
    assert!(max_abs_diff(&unmasked[1], &want_b[0]) > 1e-3);
}

/// Files may carry the tied copies transformers 4 wrote; equal copies
/// change nothing, a different `lm_head.weight` is used as saved.
#[test]
fn tied_copies() {
    let dir = tempfile::tempdir().unwrap();
    let logits = |model: &mut Bart| {
        encode(model, &[0, 8, 3, 2]);
        step(model, &[2]).remove(0)
    };
    let mut shared_only = write_tiny(dir.path(), |_| {});
    let base = logits(&mut shared_only);
    let tensors =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let shared = tensors["model.shared.weight"].clone();

    let d2 = tempfile::tempdir().unwrap();
    let keep = tensors.clone();
    let mut all_copies = write_tiny(d2.path(), |t| {
        *t = keep;
        for name in [super::ENCODER_EMBED, super::DECODER_EMBED, super::LM_HEAD] {
            t.insert(name.into(), shared.clone());
        }
    });
    assert_eq!(logits(&mut all_copies), base);

    // Only a copy, no `model.shared.weight`.
    let keep = tensors.clone();
    let mut copy_only = write_tiny(d2.path(), |t| {
        *t = keep;
        let s = t.remove("model.shared.weight").unwrap();
        t.insert(super::DECODER_EMBED.into(), s);
    });
    assert_eq!(logits(&mut copy_only), base);

    let keep = tensors.clone();
    let mut own_head = write_tiny(d2.path(), |t| {
        *t = keep;
        t.insert(super::LM_HEAD.into(), (&shared * 2.0).unwrap());
    });
    let doubled = logits(&mut own_head);
    let bias: Vec<f32> = tensors["final_logits_bias"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for ((x, y), c) in doubled.iter().zip(&base).zip(&bias) {
        assert!((x - c - 2.0 * (y - c)).abs() < 1e-4);
    }
}
