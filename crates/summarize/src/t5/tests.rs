//! The bucket formula, configuration rules and caches of the T5 network,
//! which the public API does not reach; `tests/logits.rs` holds it against
//! transformers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::{Activation, T5, T5Config, relative_bucket};
use crate::error::Error;
use crate::nn::Precision;
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

const EOS: u32 = 1;
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

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn load(dir: &Path, config: &Path, precision: Precision) -> T5 {
    load_json(dir, &read_json(config), precision)
}

fn load_json(dir: &Path, config: &Value, precision: Precision) -> T5 {
    let cfg = T5Config::from_json(config).unwrap();
    let weights = Weights::open(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    T5::load(&cfg, &weights, precision).unwrap()
}

/// The config as transformers 4 writes it for a checkpoint that never
/// went through transformers 5: no `scale_decoder_outputs`, and
/// `tie_word_embeddings: false` on v1.1 (absent on v1.0).
fn pure_v4_config(dir: &Path) -> Value {
    let mut v = read_json(&dir.join("tf4").join("config.json"));
    let scale = v["scale_decoder_outputs"].as_bool();
    let obj = v.as_object_mut().unwrap();
    obj.remove("scale_decoder_outputs");
    if scale == Some(false) {
        obj.insert("tie_word_embeddings".into(), json!(false));
    }
    v
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    // First maximum, like torch.argmax.
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn first_logits(model: &mut T5, input: &[u32]) -> Vec<f32> {
    let (x, m) = row(input);
    model.encode(&x, &m).unwrap();
    let start = Tensor::new(&[START], &Device::Cpu).unwrap();
    model
        .decode_step(&start)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Greedy search as transformers runs it with no logits processors:
/// finished rows are fed (and emit) padding; stops when every row has
/// produced EOS or after `max_new` tokens.
fn greedy(model: &mut T5, input: &Tensor, mask: &Tensor, max_new: usize) -> Vec<Vec<u32>> {
    model.encode(input, mask).unwrap();
    let b = input.dim(0).unwrap();
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut feed = vec![START; b];
    for _ in 0..max_new {
        let logits = model
            .decode_step(&Tensor::new(feed.as_slice(), &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for i in 0..b {
            let next = if done[i] { PAD } else { argmax(&logits[i]) };
            out[i].push(next);
            feed[i] = next;
            done[i] |= next == EOS;
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    out
}

fn max_new_tokens(run: &Value) -> usize {
    run["kwargs"]["max_new_tokens"].as_u64().unwrap() as usize
}

/// First-step logits and greedy ids against transformers, for the v5
/// config and the transformers 4 one.
fn check_fixture(name: &str) {
    let dir = testdata(name);
    let expected = read_json(&dir.join("expected.json"));
    let mut v5 = load(&dir, &dir.join("config.json"), Precision::F32);
    let mut v4 = load(&dir, &dir.join("tf4").join("config.json"), Precision::F32);
    let mut pure_v4 = load_json(&dir, &pure_v4_config(&dir), Precision::F32);
    let cases = expected["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = ids(&case["input_ids"]);
        let want: Vec<f32> = case["first_step_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let got = first_logits(&mut v5, &input);
        let err = max_err(&got, &want);
        println!("{name} {}: max |logit error| {err:.3e}", case["name"]);
        assert!(err < 1e-4, "{name} {}: logits off by {err}", case["name"]);
        assert_eq!(first_logits(&mut v4, &input), got, "tf4 config differs");
        assert_eq!(
            first_logits(&mut pure_v4, &input),
            got,
            "v4-style config differs"
        );

        let run = case["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "greedy")
            .unwrap();
        let (x, m) = row(&input);
        let got = greedy(&mut v5, &x, &m, max_new_tokens(run));
        assert_eq!(got[0], ids(&run["ids"]), "{name} {} greedy", case["name"]);
        assert_eq!(greedy(&mut v4, &x, &m, max_new_tokens(run)), got);
    }

    // A padded batch: each row must come out as transformers gave it.
    let batch = &expected["batch"];
    let rows: Vec<Vec<u32>> = batch["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let masks: Vec<Vec<u32>> = batch["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    assert!(
        masks.iter().flatten().any(|&m| m == 0),
        "batch has no padding"
    );
    let (b, s) = (rows.len(), rows[0].len());
    let x = Tensor::from_vec(rows.concat(), (b, s), &Device::Cpu).unwrap();
    let m = Tensor::from_vec(masks.concat(), (b, s), &Device::Cpu).unwrap();
    let got = greedy(&mut v5, &x, &m, max_new_tokens(batch));
    let want: Vec<Vec<u32>> = batch["ids"].as_array().unwrap().iter().map(ids).collect();
    let width = want[0].len();
    let got: Vec<Vec<u32>> = got
        .into_iter()
        .map(|mut r| {
            r.resize(width, PAD);
            r
        })
        .collect();
    assert_eq!(got, want, "{name} batch");
}

#[test]
fn t5_v1_0_matches_transformers() {
    check_fixture("t5_v1_0");
}

#[test]
fn t5_v1_1_matches_transformers() {
    check_fixture("t5_v1_1");
}

/// Int8: finite logits, and teacher-forced greedy choices that mostly
/// agree with transformers' f32 ones.
fn check_int8(name: &str) -> (usize, usize) {
    let dir = testdata(name);
    let expected = read_json(&dir.join("expected.json"));
    let mut q = load(&dir, &dir.join("config.json"), Precision::Int8);
    let (mut agree, mut total) = (0, 0);
    let mut worst = 0f32;
    for case in expected["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let want: Vec<f32> = case["first_step_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let got = first_logits(&mut q, &input);
        assert!(got.iter().all(|x| x.is_finite()));
        worst = worst.max(max_err(&got, &want));
        let run = case["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "greedy")
            .unwrap();
        let target = ids(&run["ids"]);
        let (x, m) = row(&input);
        q.encode(&x, &m).unwrap();
        let mut feed = START;
        for &next in &target {
            let logits = q
                .decode_step(&Tensor::new(&[feed], &Device::Cpu).unwrap())
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(logits.iter().all(|x| x.is_finite()));
            agree += usize::from(argmax(&logits) == next);
            total += 1;
            feed = next;
        }
    }
    println!(
        "{name} int8: {agree}/{total} greedy steps agree ({:.1}%), first-step max |logit error| {worst:.3e}",
        100.0 * agree as f64 / total as f64
    );
    (agree, total)
}

#[test]
fn int8_mostly_agrees_with_f32() {
    for name in ["t5_v1_0", "t5_v1_1"] {
        let (agree, total) = check_int8(name);
        assert!(
            total > 0 && agree * 10 >= total * 8,
            "{name}: {agree}/{total}"
        );
    }
}
