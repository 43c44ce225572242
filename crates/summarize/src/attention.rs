//! Attention of one query per row and head: the shape of every decoder
//! step, in both families.
//!
//! Written here rather than with candle's ops: candle's batched matmul
//! makes one small gemm call per head (each waking the thread pool), then
//! a bias add, a softmax and another such matmul, and the fixed cost of
//! those calls is many times this arithmetic. One pass here computes
//! scores, softmax and the weighted sum per head, spread over rayon's
//! pool when there is enough of it.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::storage::contiguous_f32;

/// `Σ a·b`, in eight lanes so the compiler can vectorize it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Heads × keys × width below which one thread does it all: waking the
/// other costs more than the work.
const PARALLEL_MIN: usize = 1 << 15;

/// `softmax(q·kᵀ + bias)·v` with `q` `[b, h, 1, d]` and `k`, `v`
/// `[b, h, len, d]`.
struct OneQuery<'a> {
    /// `[b · len]`: an additive mask per row (padding).
    row_bias: Option<&'a [f32]>,
    /// `[h · len]`: an additive bias per head, the same for every row
    /// (T5's relative positions).
    head_bias: Option<&'a [f32]>,
}

impl OneQuery<'_> {
    /// One head of one row: `out` `[d]` from `q` `[d]`, `k`, `v` `[len, d]`.
    fn head(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        biases: [Option<&[f32]>; 2],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let d = q.len();
        for (s, key) in scores.iter_mut().zip(k.chunks_exact(d)) {
            *s = dot(q, key);
        }
        for bias in biases.into_iter().flatten() {
            for (s, b) in scores.iter_mut().zip(bias) {
                *s += b;
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = crate::softmax::exp_nonpositive(*s - max);
            total += *s;
        }
        out.fill(0.0);
        for (s, value) in scores.iter().zip(v.chunks_exact(d)) {
            let w = s / total;
            for (o, x) in out.iter_mut().zip(value) {
                *o += w * x;
            }
        }
    }
}

impl CustomOp3 for OneQuery<'_> {
    fn name(&self) -> &'static str {
        "one-query-attention"
    }

    fn cpu_fwd(
        &self,
        q_storage: &CpuStorage,
        q_layout: &Layout,
        k_storage: &CpuStorage,
        k_layout: &Layout,
        v_storage: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;

        let (b, h, one, d) = q_layout.shape().dims4()?;
        let (kb, kh, len, kd) = k_layout.shape().dims4()?;
        if one != 1 || (kb, kh, kd) != (b, h, d) || v_layout.shape() != k_layout.shape() {
            candle_core::bail!(
                "one-query attention shapes {:?} {:?} {:?}",
                q_layout.shape(),
                k_layout.shape(),
                v_layout.shape()
            )
        }
        if d == 0 || len == 0 {
            candle_core::bail!("one-query attention over nothing")
        }
        let q = contiguous_f32(self.name(), q_storage, q_layout)?;
        let k = contiguous_f32(self.name(), k_storage, k_layout)?;
        let v = contiguous_f32(self.name(), v_storage, v_layout)?;
        if let Some(bias) = self.row_bias
            && bias.len() != b * len
        {
            candle_core::bail!(
                "one-query attention row bias of {} for {b}×{len}",
                bias.len()
            )
        }
        if let Some(bias) = self.head_bias
            && bias.len() != h * len
        {
            candle_core::bail!(
                "one-query attention head bias of {} for {h}×{len}",
                bias.len()
            )
        }
        let mut out = vec![0f32; b * h * d];
        // Head `i` of the flattened `[b · h]`.
        let run = |i: usize, out: &mut [f32], scores: &mut [f32]| {
            let (row, head) = (i / h, i % h);
            let biases = [
                self.row_bias
                    .and_then(|bias| bias.get(row * len..(row + 1) * len)),
                self.head_bias
                    .and_then(|bias| bias.get(head * len..(head + 1) * len)),
            ];
            let kv = i * len * d..(i + 1) * len * d;
            let (Some(q), Some(k), Some(v)) =
                (q.get(i * d..(i + 1) * d), k.get(kv.clone()), v.get(kv))
            else {
                return;
            };
            OneQuery::head(q, k, v, biases, scores, out);
        };
        if b * h > 1 && b * h * len * d >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            out.par_chunks_exact_mut(d)
                .enumerate()
                .for_each_init(|| vec![0f32; len], |scores, (i, out)| run(i, out, scores));
        } else {
            let mut scores = vec![0f32; len];
            for (i, out) in out.chunks_exact_mut(d).enumerate() {
                run(i, out, &mut scores);
            }
        }
        Ok((CpuStorage::F32(out), (b, h, 1, d).into()))
    }
}

/// `softmax(q·kᵀ + row_bias + head_bias)·v` for `q` `[b, h, 1, d]` and
/// `k`, `v` `[b, h, len, d]`; no scaling (fold it into `q`). `row_bias`
/// is `[b · len]`, `head_bias` `[h · len]`.
pub(crate) fn attend_one(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    row_bias: Option<&[f32]>,
    head_bias: Option<&[f32]>,
) -> Result<Tensor> {
    Ok(q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &OneQuery {
            row_bias,
            head_bias,
        },
    )?)
}

/// Each row's length where every row of `mask` (`[batch · len]`, row
/// after row) is right-padded: ones, then zeros only. `None` when a row
/// is not, or holds no token.
///
/// A batch's encoder runs such rows one at a time at their own lengths:
/// the padded positions would cost as much as real ones (about a third
/// of the work in a batch of mixed lengths) and change nothing, since
/// every later attention masks them.
pub(crate) fn right_padded_lengths(mask: &[u32], len: usize) -> Option<Vec<usize>> {
    if len == 0 {
        return None;
    }
    mask.chunks(len)
        .map(|row| {
            let n = row.iter().take_while(|&&m| m != 0).count();
            (n > 0
                && row
                    .get(n..)
                    .is_some_and(|rest| rest.iter().all(|&m| m == 0)))
            .then_some(n)
        })
        .collect()
}

/// A padded batch's encoder output `[b, s, d]` from each row run alone:
/// `encode(ids, n)` encodes the `n` real ids of one row (`ids` is
/// `[b · s]`); its output is padded back to `s` with zeros.
pub(crate) fn encode_each_row(
    ids: &Tensor,
    lengths: &[usize],
    s: usize,
    encode: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let rows = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| Ok(encode(&ids.narrow(0, i * s, n)?, n)?.pad_with_zeros(1, 0, s - n)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Batches whose padded width × `d_model` is below this encode padded:
/// on tiny models each row's own pass costs more in per-operation
/// overhead than its padding does (criterion's `summarize_batch` on the
/// d_model-32 fixtures: batches fell from 1.32× to 0.84× of one by one).
/// Unit tests take every batch through the row-by-row path; the
/// integration tests (parity with transformers) through the padded one.
pub(crate) const ROW_ENCODE_MIN_WORK: usize = if cfg!(test) { 1 } else { 1 << 16 };

/// Rows `indices` of a row bias `[batch · len]` (see [`attend_one`]), in
/// that order: the bias after a beam search reorders its cache rows.
pub(crate) fn pick_bias_rows(bias: &[f32], batch: usize, indices: &[u32]) -> Result<Vec<f32>> {
    let len = bias.len() / batch.max(1);
    let mut rows = Vec::with_capacity(indices.len() * len);
    for &i in indices {
        let i = i as usize;
        let row = bias
            .get(i * len..(i + 1) * len)
            .ok_or_else(|| Error::Generation(format!("cache row {i} does not exist")))?;
        rows.extend_from_slice(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::right_padded_lengths;

    #[test]
    fn right_padded_lengths_take_only_right_padding() {
        let cases = [
            (vec![1u32, 1, 1, 1, 1, 0], 3, Some(vec![3, 2])),
            (vec![1, 1, 1, 1, 1, 1], 3, Some(vec![3, 3])),
            (vec![1, 0, 0, 1, 1, 0], 3, Some(vec![1, 2])),
            // Left padding, a hole, an empty row: not right-padded.
            (vec![0, 1, 1, 1, 1, 1], 3, None),
            (vec![1, 0, 1, 1, 1, 1], 3, None),
            (vec![0, 0, 0, 1, 1, 1], 3, None),
            (vec![1, 1], 0, None),
        ];
        for (mask, len, want) in cases {
            assert_eq!(right_padded_lengths(&mask, len), want, "{mask:?}");
        }
    }
}
