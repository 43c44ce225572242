//! The language-model head: logits for beam search and for callers that
//! want them, and for greedy search the winning token alone, found
//! without reading the f32 weight.
//!
//! A greedy step needs only the argmax of `h·Wᵀ + b`, and the f32 head is
//! the largest weight a decoder step reads (44% of t5-small's bytes per
//! step, 23% of bart-large's). Where the int8 kernel runs, an f32 head
//! also keeps an int8 copy, and a greedy step goes in two passes:
//!
//! 1. The int8 product gives every logit `A_r` to within a bound `B_r`:
//!    with `ĥ` and `Ŵ` the dequantized operands, the int8 product is
//!    `ĥ·Ŵ_rᵀ` (to f32 rounding), and by Cauchy–Schwarz
//!    `|h·W_rᵀ − ĥ·Ŵ_rᵀ| ≤ ‖h − ĥ‖·‖W_r‖ + ‖ĥ‖·‖W_r − Ŵ_r‖`. The row
//!    norms are computed once, at load; the input's once per step.
//! 2. Only rows whose interval reaches the best lower end can hold the
//!    maximum. Their logits are computed again from the f32 weight, with
//!    f64 sums, and the largest wins, the first on a tie, as
//!    `torch.argmax`.
//!
//! The token is therefore the argmax of the exact logits (which the f32
//! product approximates to rounding), whatever the weights: a flat row of
//! logits only makes the second pass longer. On the full-size random
//! checkpoints of `tools/bench-summarize.py`, 1 to 8 rows of 32,128 or
//! 50,265 pass the screen per step. Beam search needs every
//! log-probability and takes the f32 logits as before.

use candle_core::Tensor;
use confsum_i8gemm::{I8Rows, I8Weight};

use crate::error::{Error, Result};
use crate::nn::{Linear, Precision};

/// Slack for every rounding the bound leaves out: the f32 products and
/// sums of the int8 path (a few units in 2⁻²⁴ of the result), the
/// dequantized operands (2⁻²⁴ each), the norms stored as f32, and
/// `A_r ± bound` taken in f32. It is relative to `‖ĥ‖·‖W_r‖ + |A_r|`, so
/// it is many times larger than all of them together.
const SLACK: f64 = 1.0 / 65_536.0;

/// Steps of more rows than `d_model / WIDTH_PER_ROW` take the f32 logits:
/// the screen's own work, per row, would cost more than it saves.
const WIDTH_PER_ROW: usize = 16;

/// The bound is computed in f32 (a few roundings of 2⁻²⁴ each) and then
/// grown by this factor, which covers them.
const MARGIN: f32 = 1.0 + 1.0 / 262_144.0;

/// The output projection of a decoder.
#[derive(Debug, Clone)]
pub(crate) struct LmHead {
    linear: Linear,
    screen: Option<Screen>,
}

impl LmHead {
    /// Wraps the `[vocab, d]` weight and its optional bias. An f32 head
    /// gets the int8 screen where the int8 kernel runs (it would be slower
    /// than the f32 head elsewhere).
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, precision: Precision) -> Result<Self> {
        let screened = precision == Precision::F32 && confsum_i8gemm::accelerated();
        Self::with_screen(weight, bias, precision, screened)
    }

    /// As [`new`](Self::new), with the screen or without it on any CPU.
    pub(crate) fn with_screen(
        weight: Tensor,
        bias: Option<Tensor>,
        precision: Precision,
        screened: bool,
    ) -> Result<Self> {
        let screen = if screened {
            Screen::new(&weight, bias.as_ref())?
        } else {
            None
        };
        Ok(Self {
            linear: Linear::from_weight(weight, bias, precision)?,
            screen,
        })
    }

    /// Whether greedy steps take the int8 screen.
    #[cfg(test)]
    pub(crate) fn screened(&self) -> bool {
        self.screen.is_some()
    }

    /// The screen for steps of any number of rows, however narrow the
    /// head: what tests need to reach it on tiny models.
    #[cfg(test)]
    pub(crate) fn screen_every_step(mut self) -> Self {
        if let Some(screen) = &mut self.screen {
            screen.width_per_row = 0;
        }
        self
    }

    /// The logits `[rows, vocab]` of `hidden` `[rows, d]`.
    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.linear.forward(hidden)
    }

    /// For each row of `hidden` `[rows, d]`, the index of its largest
    /// logit (the first of equals) once the ids in that row's `banned`
    /// are set to -∞, as the argmax of processed f32 logits picks it.
    ///
    /// `None` where the caller must compute the logits instead: no screen
    /// on this head, more than `d / 16` rows, a value that is not finite,
    /// or every id banned.
    pub(crate) fn argmax(&self, hidden: &Tensor, banned: &[&[u32]]) -> Result<Option<Vec<u32>>> {
        match &self.screen {
            Some(screen) => screen.argmax(hidden, banned),
            None => Ok(None),
        }
    }
}

/// The int8 copy of an f32 head, and what bounds its error.
#[derive(Debug, Clone)]
struct Screen {
    int8: I8Weight,
    bias: Option<Vec<f32>>,
    /// The f32 weight `[vocab, d]`, contiguous: the head's own storage.
    weight: Tensor,
    /// Per row: `‖W_r‖` and `‖W_r − Ŵ_r‖`.
    norms: Vec<f32>,
    errors: Vec<f32>,
    /// [`WIDTH_PER_ROW`], or 0 in tests that screen every step.
    width_per_row: usize,
}

impl Screen {
    /// `None` where the screen cannot be trusted or cannot run: weights
    /// that are not all finite, or too wide for the int8 kernel.
    fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        use rayon::prelude::*;

        let (vocab, d) = weight.dims2()?;
        if d == 0 || d > confsum_i8gemm::MAX_IN_DIM {
            return Ok(None);
        }
        let weight = weight.contiguous()?;
        let values = weight.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&values) || !bias.as_deref().is_none_or(finite) {
            return Ok(None);
        }
        let int8 = I8Weight::quantize(&values, vocab, d)?;
        let (norms, errors) = values
            .par_chunks(d)
            .enumerate()
            .map(|(r, row)| {
                let mut deq = vec![0f32; d];
                int8.dequantize(r, &mut deq)?;
                let (mut norm, mut error) = (0f64, 0f64);
                for (&w, &q) in row.iter().zip(&deq) {
                    norm += f64::from(w) * f64::from(w);
                    error += (f64::from(w) - f64::from(q)).powi(2);
                }
                Ok((norm.sqrt() as f32, error.sqrt() as f32))
            })
            .collect::<std::result::Result<(Vec<_>, Vec<_>), confsum_i8gemm::Error>>()?;
        Ok(Some(Self {
            int8,
            bias,
            weight,
            norms,
            errors,
            width_per_row: WIDTH_PER_ROW,
        }))
    }

    fn argmax(&self, hidden: &Tensor, banned: &[&[u32]]) -> Result<Option<Vec<u32>>> {
        let (rows, d) = hidden.dims2()?;
        let vocab = self.int8.out_dim();
        if d != self.int8.in_dim() || banned.len() != rows {
            return Err(Error::Generation(format!(
                "the head of width {} was given hidden states {:?} with {} ban lists",
                self.int8.in_dim(),
                hidden.dims(),
                banned.len()
            )));
        }
        // The screen's passes cost O(vocab) per row, and it saves reading
        // vocab × d × 3 bytes once per step, whatever the rows.
        if rows.saturating_mul(self.width_per_row) > d {
            return Ok(None);
        }
        let h = hidden.flatten_all()?.to_vec1::<f32>()?;
        if !h.iter().all(|v| v.is_finite()) {
            return Ok(None);
        }
        let q = I8Rows::quantize(&h, d)?;
        let mut approx = vec![0f32; rows * vocab];
        crate::nn::by_panels(&self.int8, &q, &mut approx)?;
        if let Some(bias) = &self.bias {
            crate::nn::add_bias(&mut approx, bias);
        }
        let (storage, layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Generation(
                "the head's weight is not in memory".into(),
            ));
        };
        let weight = crate::storage::contiguous_f32("lm head", cpu, layout)?;
        if weight.len() != vocab * d {
            return Err(Error::Generation("the head's weight changed shape".into()));
        }
        let mut deq = vec![0f32; d];
        let mut bounds = Vec::with_capacity(vocab);
        let mut picks = Vec::with_capacity(rows);
        let rows = h.chunks(d).zip(approx.chunks_mut(vocab)).zip(banned);
        for (row, ((h, scores), banned)) in rows.enumerate() {
            q.dequantize(row, &mut deq)?;
            match self.pick(weight, h, &deq, scores, banned, &mut bounds) {
                Some(id) => picks.push(id),
                None => return Ok(None),
            }
        }
        Ok(Some(picks))
    }

    /// One row's token: `h` the hidden state, `deq` its dequantized
    /// bytes, `scores` its int8 logits (bias included), which this masks;
    /// `bounds` is scratch space.
    fn pick(
        &self,
        weight: &[f32],
        h: &[f32],
        deq: &[f32],
        scores: &mut [f32],
        banned: &[u32],
        bounds: &mut Vec<f32>,
    ) -> Option<u32> {
        if !scores.iter().all(|v| v.is_finite()) {
            return None;
        }
        for &id in banned {
            if let Some(s) = scores.get_mut(id as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        let (mut off, mut norm) = (0f64, 0f64);
        for (&x, &y) in h.iter().zip(deq) {
            off += (f64::from(x) - f64::from(y)).powi(2);
            norm += f64::from(y) * f64::from(y);
        }
        let (off, norm) = (off.sqrt(), norm.sqrt());
        // bound_r = ‖h − ĥ‖·‖W_r‖ + ‖ĥ‖·‖W_r − Ŵ_r‖ + SLACK·(‖ĥ‖·‖W_r‖ + |A_r|),
        // in f32 over the whole vocabulary (one vector loop), with
        // `MARGIN` for the rounding of this very arithmetic.
        let per_norm = (off + SLACK * norm) as f32;
        let per_error = norm as f32;
        let slack = SLACK as f32;
        bounds.clear();
        bounds.extend(
            scores
                .iter()
                .zip(&self.norms)
                .zip(&self.errors)
                .map(|((&a, &n), &e)| {
                    // A banned row's -∞ stays out of the sum: -∞ + ∞ is NaN.
                    let a = a.abs().min(f32::MAX);
                    (n * per_norm + e * per_error + slack * a) * MARGIN + f32::MIN_POSITIVE
                }),
        );
        // The best lower end: no row whose upper end is below it can win.
        // Banned rows are -∞ at both ends.
        let floor = max_f32(scores.iter().zip(bounds.iter()).map(|(&a, &b)| a - b));
        if floor == f32::NEG_INFINITY {
            return None;
        }
        let d = h.len();
        let mut best: Option<(usize, f64)> = None;
        for (r, (&a, &b)) in scores.iter().zip(bounds.iter()).enumerate() {
            if a + b < floor {
                continue;
            }
            let w = weight.get(r * d..(r + 1) * d)?;
            let b = self.bias.as_ref().and_then(|b| b.get(r)).copied();
            let exact = h
                .iter()
                .zip(w)
                .fold(f64::from(b.unwrap_or(0.0)), |s, (&x, &y)| {
                    s + f64::from(x) * f64::from(y)
                });
            if best.is_none_or(|(_, v)| exact > v) {
                best = Some((r, exact));
            }
        }
        best.and_then(|(r, _)| u32::try_from(r).ok())
    }
}

/// The largest of `values` (-∞ for none), in sixteen independent lanes
/// so that the compiler keeps them in vectors.
fn max_f32(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for (i, v) in values.enumerate() {
        if let Some(lane) = lanes.get_mut(i % 16) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes
        .into_iter()
        .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use candle_core::{Device, Tensor};
    use confsum_testkit::det_floats;

    use super::*;

    fn head(w: &[f32], vocab: usize, d: usize, bias: Option<&[f32]>) -> LmHead {
        let weight = Tensor::from_slice(w, (vocab, d), &Device::Cpu).unwrap();
        let bias = bias.map(|b| Tensor::from_slice(b, vocab, &Device::Cpu).unwrap());
        LmHead::with_screen(weight, bias, Precision::F32, true)
            .unwrap()
            .screen_every_step()
    }

    /// The argmax of the exact logits (f64 sums), banned ids left out.
    fn exact_argmax(w: &[f32], bias: Option<&[f32]>, h: &[f32], banned: &[u32]) -> u32 {
        let mut best = (0, f64::NEG_INFINITY);
        for (r, row) in w.chunks(h.len()).enumerate() {
            if banned.contains(&(r as u32)) {
                continue;
            }
            let b = bias.map_or(0.0, |b| f64::from(b[r]));
            let v = h
                .iter()
                .zip(row)
                .fold(b, |s, (&x, &y)| s + f64::from(x) * f64::from(y));
            if v > best.1 {
                best = (r as u32, v);
            }
        }
        best.0
    }

    fn argmax(head: &LmHead, h: &[f32], d: usize, banned: &[&[u32]]) -> Option<Vec<u32>> {
        let hidden = Tensor::from_slice(h, (h.len() / d, d), &Device::Cpu).unwrap();
        head.argmax(&hidden, banned).unwrap()
    }

    /// Random heads of a few shapes, rows with and without bans and a
    /// bias: the screen picks what the exact logits pick, and so does the
    /// argmax of the f32 logits.
    #[test]
    fn picks_the_exact_argmax() {
        for (i, &(vocab, d, rows)) in [(1, 1, 1), (300, 48, 3), (1000, 130, 2), (4099, 64, 5)]
            .iter()
            .enumerate()
        {
            let seed = 7 * i as u64;
            let w = det_floats(vocab * d, seed);
            let bias: Vec<f32> = det_floats(vocab, seed + 1)
                .iter()
                .map(|b| b * 0.1)
                .collect();
            let h: Vec<f32> = det_floats(rows * d, seed + 2)
                .iter()
                .map(|x| x * 3.0 + 0.2)
                .collect();
            for bias in [None, Some(bias.as_slice())] {
                let lm = head(&w, vocab, d, bias);
                assert!(lm.screened());
                let want: Vec<u32> = h
                    .chunks(d)
                    .map(|h| exact_argmax(&w, bias, h, &[]))
                    .collect();
                let none = vec![&[][..]; rows];
                assert_eq!(argmax(&lm, &h, d, &none).unwrap(), want);
                // The f32 logits agree (no near ties in random data).
                let hidden = Tensor::from_slice(&h, (rows, d), &Device::Cpu).unwrap();
                let logits: Vec<Vec<f32>> = lm.forward(&hidden).unwrap().to_vec2().unwrap();
                let f32_picks: Vec<u32> = logits
                    .iter()
                    .map(|l| {
                        // The first largest, as torch.argmax.
                        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        l.iter().position(|&v| v == max).unwrap() as u32
                    })
                    .collect();
                assert_eq!(f32_picks, want);
                if vocab > 1 {
                    // Banning each row's winner moves it to the runner-up.
                    let bans: Vec<Vec<u32>> = want.iter().map(|&t| vec![t, t]).collect();
                    let bans: Vec<&[u32]> = bans.iter().map(Vec::as_slice).collect();
                    let next: Vec<u32> = h
                        .chunks(d)
                        .zip(&bans)
                        .map(|(h, b)| exact_argmax(&w, bias, h, b))
                        .collect();
                    assert_eq!(argmax(&lm, &h, d, &bans).unwrap(), next);
                }
            }
        }
    }

    /// Rows the int8 product cannot tell apart: the exact logits decide,
    /// and an exact tie goes to the lower id.
    #[test]
    fn near_ties_are_decided_exactly() {
        let (vocab, d) = (500, 96);
        let h = det_floats(d, 3);
        let norm2: f32 = h.iter().map(|x| x * x).sum();
        let mut w = det_floats(vocab * d, 4);
        // Row 40 is `50·h/‖h‖²` (logit 50, far above the random rows);
        // row 450 the same plus a random direction `v`, scaled so that
        // its logit moves by ±1e-4, or not at all.
        let top: Vec<f32> = h.iter().map(|x| 50.0 * x / norm2).collect();
        let v = det_floats(d, 5);
        let hv: f32 = h.iter().zip(&v).map(|(a, b)| a * b).sum();
        for (nudge, want) in [(1e-4, 450), (-1e-4, 40), (0.0, 40)] {
            w[40 * d..41 * d].copy_from_slice(&top);
            for (k, x) in v.iter().enumerate() {
                w[450 * d + k] = top[k] + nudge / hv * x;
            }
            assert_eq!(exact_argmax(&w, None, &h, &[]), want);
            let lm = head(&w, vocab, d, None);
            assert_eq!(argmax(&lm, &h, d, &[&[]]).unwrap(), vec![want], "{nudge}");
            // The int8 logits alone could not have told: their error is
            // far above the nudge.
            let q = I8Rows::quantize(&h, d).unwrap();
            let screen = lm.screen.as_ref().unwrap();
            let mut approx = vec![0f32; vocab];
            crate::nn::by_panels(&screen.int8, &q, &mut approx).unwrap();
            assert!((approx[40] - 50.0).abs() > 1e-3, "{}", approx[40]);
        }
    }

    /// Where the screen cannot answer, it says so and the caller computes
    /// the logits: non-finite inputs, everything banned. Non-finite or
    /// too-wide weights get no screen at all.
    #[test]
    fn declines_what_it_cannot_screen() {
        let (vocab, d) = (4, 3);
        let w = det_floats(vocab * d, 9);
        let lm = head(&w, vocab, d, None);
        assert!(argmax(&lm, &[1.0, f32::NAN, 0.0], d, &[&[]]).is_none());
        assert!(argmax(&lm, &[1.0, f32::INFINITY, 0.0], d, &[&[]]).is_none());
        assert!(argmax(&lm, &[1.0, 2.0, 0.0], d, &[&[0, 1, 2, 3]]).is_none());
        assert!(argmax(&lm, &[1.0, 2.0, 0.0], d, &[&[0, 1, 2]]) == Some(vec![3]));
        // A ban list per row, or it is an error.
        let hidden = Tensor::from_slice(&[1f32, 2.0, 0.0], (1, d), &Device::Cpu).unwrap();
        assert!(lm.argmax(&hidden, &[]).is_err());
        let mut bad = w.clone();
        bad[5] = f32::INFINITY;
        assert!(!head(&bad, vocab, d, None).screened());
        let nan_bias = [0.0, f32::NAN, 0.0, 0.0];
        assert!(!head(&w, vocab, d, Some(&nan_bias)).screened());
        let wide = confsum_i8gemm::MAX_IN_DIM + 1;
        assert!(!head(&vec![0.5; wide], 1, wide, None).screened());
        // Too many rows for the width: the f32 logits cost less.
        let weight = Tensor::from_slice(&w, (vocab, d), &Device::Cpu).unwrap();
        let narrow = LmHead::with_screen(weight, None, Precision::F32, true).unwrap();
        assert!(narrow.screened());
        assert!(argmax(&narrow, &[1.0, 2.0, 0.0], d, &[&[]]).is_none());
        // No screen, no answer: the caller takes the f32 logits.
        let weight = Tensor::from_slice(&w, (vocab, d), &Device::Cpu).unwrap();
        let plain = LmHead::with_screen(weight, None, Precision::F32, false).unwrap();
        assert!(argmax(&plain, &[1.0, 2.0, 0.0], d, &[&[]]).is_none());
    }
}
