//! Greedy and beam search, with their logits processors, as transformers
//! 5.24's `generate()` runs them for encoder-decoders.
//!
//! Facts this module follows (from transformers 5.24's `generation/`):
//! - Every length counts the decoder start token: the sequence starts as
//!   `[start]`, `max_length` bounds its whole length, `max_new_tokens` sets
//!   `max_length = max_new_tokens + 1`, `min_length` bans EOS while the
//!   sequence (start included) is shorter than it, and `min_new_tokens`
//!   sets `min_length = min_new_tokens + 1`. With no `max_length` anywhere,
//!   20 tokens are generated (`max_length = 21`, capped at the model's
//!   `max_position_embeddings`).
//! - Processors run in the order no-repeat-ngram, min length, forced BOS
//!   (at length 1), forced EOS (at length `max_length - 1`); greedy applies
//!   them to the raw logits, beam search to float32 log-softmax.
//! - Beam search keeps `max(2, 1 + eos ids) * num_beams` candidates a step;
//!   a candidate ending in EOS (or reaching `max_length`) is finished only
//!   if it is among the first `num_beams`, scored `sum of log-probs /
//!   generated_len ^ length_penalty` where `generated_len` counts the new
//!   tokens, EOS included, start excluded. Finished rows shorter than the
//!   longest are filled with `pad_token_id`, or with the first EOS id when
//!   the pad id is 0 (transformers tests the pad id's truthiness).
//! - Greedy fills finished rows with `pad_token_id` (the first EOS id when
//!   there is none).

use candle_core::{Device, Tensor};

use super::config::{EarlyStopping, GenerationConfig};
use crate::{
    error::{Error, Result},
    head::LmHead,
    seq2seq::Seq2Seq,
};

/// Settings resolved for one `generate` call.
#[derive(Debug)]
struct Plan {
    start: u32,
    pad: u32,
    eos: Vec<u32>,
    max_length: usize,
    min_length: usize,
    no_repeat: usize,
    forced_bos: Option<u32>,
    forced_eos: Vec<u32>,
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
}

impl Plan {
    /// The settings as generation runs them, or why it cannot.
    fn new(config: &GenerationConfig, vocab: usize) -> Result<Self> {
        config.check().map_err(Error::Generation)?;
        let start = config
            .decoder_start_token_id
            .or(config.bos_token_id)
            .ok_or_else(|| {
                Error::Generation("neither decoder_start_token_id nor bos_token_id is set".into())
            })?;
        let first_eos = *config.eos_token_ids.first().ok_or_else(|| {
            Error::Generation("no eos_token_id is set, so generation could not stop".into())
        })?;
        let pad = config.pad_token_id.unwrap_or(first_eos);
        // The decoder prompt is the start token alone.
        let max_length = match (config.max_new_tokens, config.max_length) {
            (Some(n), _) => n.saturating_add(1),
            (None, Some(m)) => m,
            (None, None) => {
                let default = 20 + 1;
                config
                    .max_position_embeddings
                    .map_or(default, |p| default.min(p))
            }
        };
        if max_length <= 1 {
            return Err(Error::Generation(format!(
                "max_length {max_length} leaves no room after the decoder start token"
            )));
        }
        let min_length = config
            .min_new_tokens
            .map_or(config.min_length, |n| n.saturating_add(1));
        let forced = config
            .forced_bos_token_id
            .iter()
            .chain(&config.forced_eos_token_ids)
            .chain(std::iter::once(&start));
        for &id in forced {
            if id as usize >= vocab {
                return Err(Error::Generation(format!(
                    "token id {id} is outside the model's vocabulary of {vocab}"
                )));
            }
        }
        Ok(Self {
            start,
            pad,
            eos: config.eos_token_ids.clone(),
            max_length,
            min_length,
            no_repeat: config.no_repeat_ngram_size,
            forced_bos: config.forced_bos_token_id,
            forced_eos: config.forced_eos_token_ids.clone(),
            num_beams: config.num_beams,
            length_penalty: config.length_penalty,
            early_stopping: config.early_stopping,
        })
    }

    /// transformers' logits processors, in the order it builds them, on
    /// the scores of the row whose tokens so far are `seq`.
    fn process(&self, seq: &[u32], scores: &mut [f32]) {
        match self.rule(seq) {
            Rule::Ban(ids) => {
                for id in ids {
                    if let Some(s) = scores.get_mut(id as usize) {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            Rule::Force(ids) => force(scores, ids),
        }
    }

    /// What the processors do to the scores of the row whose tokens so
    /// far are `seq`.
    fn rule(&self, seq: &[u32]) -> Rule<'_> {
        let len = seq.len();
        // A forced token overrides every ban (the later processor wins).
        if !self.forced_eos.is_empty() && len + 1 == self.max_length {
            return Rule::Force(&self.forced_eos);
        }
        if let Some(bos) = &self.forced_bos {
            if len == 1 {
                return Rule::Force(std::slice::from_ref(bos));
            }
        }
        let mut banned = Vec::new();
        let n = self.no_repeat;
        if n > 0 && len >= n {
            let prefix = &seq[len + 1 - n..];
            for window in seq.windows(n) {
                if let Some((last, head)) = window.split_last() {
                    if head == prefix {
                        banned.push(*last);
                    }
                }
            }
        }
        // min_new_tokens is folded into min_length: the same test.
        if len < self.min_length {
            banned.extend_from_slice(&self.eos);
        }
        Rule::Ban(banned)
    }

    fn is_eos(&self, token: u32) -> bool {
        self.eos.contains(&token)
    }
}

/// What the logits processors do to one row's scores.
#[derive(Debug, PartialEq)]
enum Rule<'a> {
    /// These ids get -∞.
    Ban(Vec<u32>),
    /// Only these ids keep a score (0); the rest get -∞.
    Force(&'a [u32]),
}

fn force(scores: &mut [f32], ids: &[u32]) {
    scores.fill(f32::NEG_INFINITY);
    for &id in ids {
        if let Some(s) = scores.get_mut(id as usize) {
            *s = 0.0;
        }
    }
}

/// Float32 log-softmax. torch sums the exponentials in 16 lanes (its
/// AVX-512 kernel); doing the same keeps most results bit-identical.
fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; 16];
    for (i, &x) in row.iter().enumerate() {
        lanes[i % 16] += (x - max).exp();
    }
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    let lse = lanes[0].ln();
    for x in row.iter_mut() {
        *x = (*x - max) - lse;
    }
}

/// Descending order with NaN first, as torch ranks scores.
fn descending(a: f32, b: f32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Indices of the `k` best scores, best first; ties go to the lower index.
/// (torch.topk leaves tied entries in an order of its selection algorithm;
/// ties that change the result do not arise with real logits.)
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let cmp = |a: &usize, b: &usize| descending(scores[*a], scores[*b]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

/// Index of the first largest score, as torch.argmax.
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if let Some(&b) = scores.get(best) {
            if descending(s, b) == std::cmp::Ordering::Less {
                best = i;
            }
        }
    }
    best
}

fn logits_rows(logits: &Tensor, rows: usize, vocab: usize) -> Result<Vec<Vec<f32>>> {
    let out: Vec<Vec<f32>> = logits.to_vec2()?;
    if out.len() != rows || out.iter().any(|r| r.len() != vocab) {
        return Err(Error::Generation(format!(
            "the model returned logits of shape {:?}, expected [{rows}, {vocab}]",
            logits.dims()
        )));
    }
    Ok(out)
}

fn ids_tensor(ids: &[u32]) -> Result<Tensor> {
    Ok(Tensor::new(ids, &Device::Cpu)?)
}

/// Generates for each input row, as transformers' `generate` does with the
/// batch right-padded and an attention mask, and returns its output rows
/// without the leading decoder start token (rows padded to one length).
pub(crate) fn generate<M: Seq2Seq>(
    model: &mut M,
    inputs: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(Error::EmptyInput);
    }
    let vocab = model.vocab_size();
    let plan = Plan::new(config, vocab)?;
    let width = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let batch = inputs.len();
    let mut ids = Vec::with_capacity(batch * width);
    let mut mask = Vec::with_capacity(batch * width);
    for row in inputs {
        ids.extend_from_slice(row);
        ids.resize(ids.len() + width - row.len(), plan.pad);
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.resize(mask.len() + width - row.len(), 0);
    }
    let ids = Tensor::from_vec(ids, (batch, width), &Device::Cpu)?;
    let mask = Tensor::from_vec(mask, (batch, width), &Device::Cpu)?;
    model.encode(&ids, &mask)?;
    if plan.num_beams == 1 {
        greedy(model, batch, vocab, &plan)
    } else {
        beam_search(model, batch, vocab, &plan)
    }
}

fn greedy<M: Seq2Seq>(
    model: &mut M,
    batch: usize,
    vocab: usize,
    plan: &Plan,
) -> Result<Vec<Vec<u32>>> {
    let mut seqs = vec![vec![plan.start]; batch];
    let mut unfinished = vec![true; batch];
    let mut last = vec![plan.start; batch];
    loop {
        let hidden = model.decode_hidden(&ids_tensor(&last)?)?;
        let picks = pick(model.head(), &hidden, &seqs, batch, vocab, plan)?;
        for (((seq, open), last), pick) in seqs
            .iter_mut()
            .zip(&mut unfinished)
            .zip(&mut last)
            .zip(picks)
        {
            let token = if *open { pick } else { plan.pad };
            seq.push(token);
            *last = token;
            if seq.len() >= plan.max_length || plan.is_eos(token) {
                *open = false;
            }
        }
        if !unfinished.iter().any(|&u| u) {
            break;
        }
    }
    Ok(seqs.into_iter().map(|s| s[1..].to_vec()).collect())
}

/// Each row's greedy token: the argmax of its processed logits. The head
/// finds it without the f32 logits where it can (see `crate::head`).
fn pick(
    head: &LmHead,
    hidden: &Tensor,
    seqs: &[Vec<u32>],
    batch: usize,
    vocab: usize,
    plan: &Plan,
) -> Result<Vec<u32>> {
    let rules: Vec<Rule<'_>> = seqs.iter().map(|seq| plan.rule(seq)).collect();
    let banned: Vec<&[u32]> = rules
        .iter()
        .map(|rule| match rule {
            Rule::Ban(ids) => ids.as_slice(),
            Rule::Force(_) => &[],
        })
        .collect();
    if let Some(picks) = head.argmax(hidden, &banned)? {
        // A forced row's argmax is its first forced id in vocabulary order.
        return Ok(rules
            .iter()
            .zip(picks)
            .map(|(rule, pick)| match rule {
                Rule::Force(ids) => ids.iter().copied().min().unwrap_or(pick),
                Rule::Ban(_) => pick,
            })
            .collect());
    }
    let rows = logits_rows(&head.forward(hidden)?, batch, vocab)?;
    Ok(rows
        .into_iter()
        .zip(seqs)
        .map(|(mut scores, seq)| {
            plan.process(seq, &mut scores);
            argmax(&scores) as u32
        })
        .collect())
}

/// A running beam or a finished hypothesis.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// A continuation among the top candidates of one step.
#[derive(Debug)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
    hits_stop: bool,
}

const NEG: f32 = -1.0e9;

fn beam_search<M: Seq2Seq>(
    model: &mut M,
    batch: usize,
    vocab: usize,
    plan: &Plan,
) -> Result<Vec<Vec<u32>>> {
    let nb = plan.num_beams;
    let keep = 2.max(1 + plan.eos.len()) * nb;
    let lp = plan.length_penalty;
    // transformers divides float32 scores by the Python float rounded to
    // float32.
    let norm = |len: usize| (len as f64).powf(lp) as f32;
    let expand: Vec<u32> = (0..batch * nb).map(|i| (i / nb) as u32).collect();
    model.reorder_cache(&ids_tensor(&expand)?)?;

    let start = Hyp {
        tokens: vec![plan.start],
        score: 0.0,
        finished: false,
    };
    let mut running: Vec<Vec<Hyp>> = (0..batch)
        .map(|_| {
            (0..nb)
                .map(|j| Hyp {
                    score: if j == 0 { 0.0 } else { NEG },
                    ..start.clone()
                })
                .collect()
        })
        .collect();
    let mut done: Vec<Vec<Hyp>> = vec![
        vec![
            Hyp {
                score: NEG,
                ..start.clone()
            };
            nb
        ];
        batch
    ];
    let mut unsatisfied = vec![true; batch];
    let mut last = vec![plan.start; batch * nb];
    let mut cur_len = 1;
    loop {
        let logits = model.decode_step(&ids_tensor(&last)?)?;
        let mut rows = logits_rows(&logits, batch * nb, vocab)?;
        let mut all_hit = true;
        let mut order = Vec::with_capacity(batch * nb);
        for b in 0..batch {
            let mut acc = Vec::with_capacity(nb * vocab);
            for (j, beam) in running[b].iter().enumerate() {
                let row = &mut rows[b * nb + j];
                log_softmax(row);
                plan.process(&beam.tokens, row);
                acc.extend(row.iter().map(|&x| x + beam.score));
            }
            let candidates: Vec<Candidate> = top_k(&acc, keep)
                .into_iter()
                .map(|i| {
                    let token = (i % vocab) as u32;
                    Candidate {
                        beam: i / vocab,
                        token,
                        score: acc[i],
                        hits_stop: cur_len + 1 >= plan.max_length || plan.is_eos(token),
                    }
                })
                .collect();
            all_hit &= candidates.iter().all(|c| c.hits_stop);
            let extend = |c: &Candidate| {
                let mut tokens = running[b][c.beam].tokens.clone();
                tokens.push(c.token);
                tokens
            };

            // Next running beams: the best candidates not stopping here.
            let live: Vec<f32> = candidates
                .iter()
                .map(|c| if c.hits_stop { c.score + NEG } else { c.score })
                .collect();
            let picks = top_k(&live, nb);
            order.extend(picks.iter().map(|&i| b * nb + candidates[i].beam));
            let next: Vec<Hyp> = picks
                .into_iter()
                .map(|i| Hyp {
                    tokens: extend(&candidates[i]),
                    score: live[i],
                    finished: false,
                })
                .collect();

            // Finished hypotheses: merge the stopping candidates among the
            // first `num_beams`, length-normalised, with those kept so far.
            let full =
                plan.early_stopping == EarlyStopping::True && done[b].iter().all(|h| h.finished);
            // New tokens, EOS included: (cur_len + 1) minus the start token.
            let denom = norm(cur_len);
            let mut merged_scores: Vec<f32> = done[b].iter().map(|h| h.score).collect();
            for (p, c) in candidates.iter().enumerate() {
                let mut s = c.score / denom;
                if full {
                    s += NEG;
                }
                if !unsatisfied[b] {
                    s += NEG;
                }
                if !(c.hits_stop && p < nb) {
                    s += NEG;
                }
                merged_scores.push(s);
            }
            let kept: Vec<Hyp> = top_k(&merged_scores, nb)
                .into_iter()
                .map(|i| match i.checked_sub(nb) {
                    None => done[b][i].clone(),
                    Some(p) => Hyp {
                        tokens: extend(&candidates[p]),
                        score: merged_scores[i],
                        finished: candidates[p].hits_stop && p < nb,
                    },
                })
                .collect();
            done[b] = kept;
            running[b] = next;
        }
        cur_len += 1;

        for b in 0..batch {
            let hypothetical = if plan.early_stopping == EarlyStopping::Never && lp > 0.0 {
                plan.max_length - 1
            } else {
                cur_len - 1
            };
            let best = running[b][0].score / norm(hypothetical);
            let worst = done[b]
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let beatable = done[b]
                .iter()
                .any(|h| best > if h.finished { worst } else { NEG });
            unsatisfied[b] = unsatisfied[b] && beatable;
        }
        let improvement_possible = unsatisfied.iter().any(|&u| u);
        let all_done = done.iter().flatten().all(|h| h.finished);
        let open = !(all_done && plan.early_stopping == EarlyStopping::True);
        if !(improvement_possible && open && !all_hit) {
            break;
        }
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            let order: Vec<u32> = order.iter().map(|&o| o as u32).collect();
            model.reorder_cache(&ids_tensor(&order)?)?;
        }
        for (slot, beam) in last.iter_mut().zip(running.iter().flatten()) {
            *slot = beam.tokens.last().copied().unwrap_or(plan.pad);
        }
    }

    // transformers fills with `pad_token_id or eos_token_id[0]`: a pad id
    // of 0 is falsy there.
    let fill = if plan.pad != 0 {
        plan.pad
    } else {
        plan.eos.first().copied().unwrap_or(plan.pad)
    };
    let best: Vec<&[u32]> = done
        .iter()
        .map(|d| {
            d.first()
                .map_or(&[][..], |h| h.tokens.get(1..).unwrap_or(&[]))
        })
        .collect();
    let width = best.iter().map(|r| r.len()).max().unwrap_or(0);
    Ok(best
        .into_iter()
        .map(|r| {
            let mut row = r.to_vec();
            row.resize(width, fill);
            row
        })
        .collect())
}

#[cfg(test)]
mod tests;
