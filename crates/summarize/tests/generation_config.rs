//! Generation settings read as transformers reads them: from
//! `config.json` and `generation_config.json` as transformers 4 and 5
//! write them, and from `generate()` keyword arguments, through the public
//! [`GenerationConfig`] API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confsum_summarize::{EarlyStopping, Error, GenerationConfig};
use serde_json::{Value, json};

fn tokens_only() -> GenerationConfig {
    GenerationConfig {
        decoder_start_token_id: Some(0),
        eos_token_ids: vec![1],
        pad_token_id: Some(0),
        ..GenerationConfig::default()
    }
}

#[test]
fn update_applies_kwargs_by_transformers_names() {
    let mut c = tokens_only();
    c.update(&json!({
        "num_beams": 4, "length_penalty": 2, "early_stopping": "never", "min_length": 5,
        "max_new_tokens": 30, "no_repeat_ngram_size": 3, "forced_bos_token_id": 0,
        "forced_eos_token_id": [1, 2], "eos_token_id": 2, "do_sample": false,
        "temperature": 0.7, "repetition_penalty": 1.0, "use_cache": true
    }))
    .unwrap();
    assert_eq!(c.num_beams, 4);
    assert_eq!(c.length_penalty, 2.0);
    assert_eq!(c.early_stopping, EarlyStopping::Never);
    assert_eq!(c.min_length, 5);
    assert_eq!(c.max_new_tokens, Some(30));
    assert_eq!(c.no_repeat_ngram_size, 3);
    assert_eq!(c.forced_bos_token_id, Some(0));
    assert_eq!(c.forced_eos_token_ids, vec![1, 2]);
    assert_eq!(c.eos_token_ids, vec![2]);
    c.update(&json!({"early_stopping": true, "forced_bos_token_id": null}))
        .unwrap();
    assert_eq!(c.early_stopping, EarlyStopping::True);
    assert_eq!(c.forced_bos_token_id, None);

    let bad = [
        (json!({"num_beam": 4}), "num_beam"),
        (json!({"do_sample": true}), "sampling is not supported"),
        (json!({"repetition_penalty": 1.2}), "repetition_penalty"),
        (json!({"num_return_sequences": 2}), "num_return_sequences"),
        (json!({"early_stopping": "sometimes"}), "early_stopping"),
        (json!({"num_beams": 0}), "num_beams"),
        (json!({"max_new_tokens": 0}), "max_new_tokens"),
        (json!({"eos_token_id": -1}), "eos_token_id"),
        (json!({"min_length": 2.5}), "min_length"),
        (
            json!({"decoder_start_token_id": [0, 0]}),
            "decoder_start_token_id",
        ),
        (json!([1]), "object"),
    ];
    for (kwargs, needle) in bad {
        let before = c.clone();
        match c.update(&kwargs) {
            Err(Error::Generation(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{kwargs}: {other:?}"),
        }
        assert_eq!(c, before, "a failed update changes nothing");
    }
}

#[test]
fn t5_small_task_params_do_not_count() {
    let config = json!({
        "model_type": "t5", "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
        "n_positions": 512, "vocab_size": 32128,
        "task_specific_params": {"summarization": {
            "early_stopping": true, "length_penalty": 2.0, "max_length": 200, "min_length": 30,
            "no_repeat_ngram_size": 3, "num_beams": 4, "prefix": "summarize: "}}
    });
    let generation = json!({"_from_model_config": true, "decoder_start_token_id": 0,
        "eos_token_id": 1, "pad_token_id": 0, "transformers_version": "4.27.0.dev0"});
    let want = GenerationConfig {
        decoder_start_token_id: Some(0),
        eos_token_ids: vec![1],
        pad_token_id: Some(0),
        ..GenerationConfig::default()
    };
    assert_eq!(
        GenerationConfig::from_json(&config, Some(&generation)).unwrap(),
        want
    );
    assert_eq!(GenerationConfig::from_json(&config, None).unwrap(), want);
}

fn bart_large_cnn_v4_config() -> Value {
    json!({
        "model_type": "bart", "vocab_size": 50264, "max_position_embeddings": 1024,
        "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
        "early_stopping": true, "force_bos_token_to_be_generated": true,
        "forced_bos_token_id": 0, "forced_eos_token_id": 2, "length_penalty": 2.0,
        "max_length": 142, "min_length": 56, "no_repeat_ngram_size": 3, "num_beams": 4,
        "normalize_before": false, "prefix": " ", "output_past": true, "use_cache": true,
        "task_specific_params": {"summarization": {"num_beams": 4}},
        "transformers_version": "4.7.0.dev0"
    })
}

fn bart_large_cnn_settings() -> GenerationConfig {
    GenerationConfig {
        max_length: Some(142),
        min_length: 56,
        num_beams: 4,
        length_penalty: 2.0,
        early_stopping: EarlyStopping::True,
        no_repeat_ngram_size: 3,
        forced_bos_token_id: Some(0),
        forced_eos_token_ids: vec![2],
        eos_token_ids: vec![2],
        pad_token_id: Some(1),
        decoder_start_token_id: Some(2),
        bos_token_id: Some(0),
        max_position_embeddings: Some(1024),
        ..GenerationConfig::default()
    }
}

#[test]
fn bart_large_cnn_v4_and_v5_agree() {
    let v4 = bart_large_cnn_v4_config();
    // transformers 4 wrote the same settings to generation_config.json.
    let v4_generation = json!({
        "_from_model_config": true, "bos_token_id": 0, "decoder_start_token_id": 2,
        "early_stopping": true, "eos_token_id": 2, "forced_bos_token_id": 0,
        "forced_eos_token_id": 2, "length_penalty": 2.0, "max_length": 142, "min_length": 56,
        "no_repeat_ngram_size": 3, "num_beams": 4, "pad_token_id": 1,
        "transformers_version": "4.27.0.dev0"
    });
    let mut v5 = v4.clone();
    for key in [
        "early_stopping",
        "force_bos_token_to_be_generated",
        "forced_bos_token_id",
        "length_penalty",
        "max_length",
        "min_length",
        "no_repeat_ngram_size",
        "num_beams",
        "normalize_before",
    ] {
        v5.as_object_mut().unwrap().remove(key);
    }
    let mut v5_generation = v4_generation.clone();
    v5_generation
        .as_object_mut()
        .unwrap()
        .remove("_from_model_config");
    let want = bart_large_cnn_settings();
    assert_eq!(GenerationConfig::from_json(&v4, None).unwrap(), want);
    assert_eq!(
        GenerationConfig::from_json(&v4, Some(&v4_generation)).unwrap(),
        want
    );
    assert_eq!(
        GenerationConfig::from_json(&v5, Some(&v5_generation)).unwrap(),
        want
    );
    // Without max_position_embeddings, BART's class default applies.
    v5.as_object_mut()
        .unwrap()
        .remove("max_position_embeddings");
    let c = GenerationConfig::from_json(&v5, Some(&v5_generation)).unwrap();
    assert_eq!(c.max_position_embeddings, Some(1024));
}

#[test]
fn generation_config_json_replaces_config_json_entirely() {
    // A v4 config.json full of beam settings, next to a
    // generation_config.json with tokens only: transformers runs greedy.
    let tokens = json!({"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2,
        "pad_token_id": 1});
    let c = GenerationConfig::from_json(&bart_large_cnn_v4_config(), Some(&tokens)).unwrap();
    assert_eq!(c.num_beams, 1);
    assert_eq!(c.min_length, 0);
    assert_eq!(c.max_length, None);
    assert_eq!(c.forced_bos_token_id, None);
    assert!(c.forced_eos_token_ids.is_empty());
}

#[test]
fn old_force_bos_flag_and_nested_decoder_keys() {
    let mut config = bart_large_cnn_v4_config();
    config
        .as_object_mut()
        .unwrap()
        .remove("forced_bos_token_id");
    let c = GenerationConfig::from_json(&config, None).unwrap();
    assert_eq!(c.forced_bos_token_id, Some(0));
    // In generation_config.json without _from_model_config the flag is
    // not a generation setting.
    let g = json!({"bos_token_id": 0, "force_bos_token_to_be_generated": true,
        "decoder_start_token_id": 2, "eos_token_id": 2});
    let c = GenerationConfig::from_json(&config, Some(&g)).unwrap();
    assert_eq!(c.forced_bos_token_id, None);
    let nested = json!({"model_type": "x", "eos_token_id": 3,
        "decoder": {"eos_token_id": 9, "num_beams": 2, "decoder_start_token_id": 5}});
    let c = GenerationConfig::from_json(&nested, None).unwrap();
    assert_eq!(
        (
            c.eos_token_ids.clone(),
            c.num_beams,
            c.decoder_start_token_id
        ),
        (vec![3], 2, Some(5))
    );
}

#[test]
fn from_json_rejects_what_would_change_the_ids() {
    let config = json!({"model_type": "bart"});
    let bad = [
        json!({"do_sample": true}),
        json!({"repetition_penalty": 1.3}),
        json!({"early_stopping": "always"}),
        json!({"num_beams": 0}),
        json!({"eos_token_id": "two"}),
    ];
    for g in bad {
        match GenerationConfig::from_json(&config, Some(&g)) {
            Err(Error::Config { file, .. }) => assert_eq!(file, "generation_config.json"),
            other => panic!("{g}: {other:?}"),
        }
    }
    assert!(matches!(
        GenerationConfig::from_json(&json!({"num_beams": -1}), None),
        Err(Error::Config {
            file: "config.json",
            ..
        })
    ));
    assert!(GenerationConfig::from_json(&json!([]), None).is_err());
    // Sampling knobs and unknown keys are ignored, as transformers does.
    let g = json!({"temperature": 0.5, "top_k": 10, "do_sample": false, "foo": 1,
        "eos_token_id": [2, 3]});
    let c = GenerationConfig::from_json(&config, Some(&g)).unwrap();
    assert_eq!(c.eos_token_ids, vec![2, 3]);
}

/// The fixture checkpoints: transformers 4 and 5 configs give the same
/// settings, and every recorded run's kwargs apply.
#[test]
fn fixture_checkpoints_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let read = |path: String| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    for model in ["t5_v1_0", "t5_v1_1", "bart"] {
        let load = |sub: &str| {
            let config = read(format!("{dir}/{model}{sub}/config.json"));
            let generation = read(format!("{dir}/{model}{sub}/generation_config.json"));
            GenerationConfig::from_json(&config, Some(&generation)).unwrap()
        };
        let v5 = load("");
        assert_eq!(v5, load("/tf4"), "{model}");
        let expected = read(format!("{dir}/{model}/expected.json"));
        let runs = expected["cases"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["runs"].as_array().unwrap())
            .map(|r| &r["kwargs"])
            .chain(std::iter::once(&expected["batch"]["kwargs"]));
        for kwargs in runs {
            v5.clone().update(kwargs).unwrap();
        }
    }
}
