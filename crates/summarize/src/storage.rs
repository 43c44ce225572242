//! The f32 slices of candle's CPU storage that this crate's custom ops
//! read and write, and the one way they run in place.

use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor};

use crate::error::Result;

/// The contiguous f32 values of `storage` that `layout` covers; `op`
/// names the operation in errors.
pub(crate) fn contiguous_f32<'s>(
    op: &str,
    storage: &'s CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'s [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors")
    };
    data.get(start..end)
        .ok_or_else(|| candle_core::Error::Msg("layout outside its storage".to_owned()))
}

/// As [`contiguous_f32`], to write.
pub(crate) fn contiguous_f32_mut<'s>(
    op: &str,
    storage: &'s mut CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'s mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors")
    };
    data.get_mut(start..end)
        .ok_or_else(|| candle_core::Error::Msg("layout outside its storage".to_owned()))
}

/// Runs `op` in the storage of `x`, made contiguous first if it is not.
/// `x` must be a tensor nothing else shares (fresh from a product or a
/// sum), which this consumes: a new result of tens of MB per encoder
/// layer cost more in page faults than the arithmetic.
pub(crate) fn in_place(x: Tensor, op: &impl InplaceOp1) -> Result<Tensor> {
    let x = if x.is_contiguous() {
        x
    } else {
        x.contiguous()?
    };
    x.inplace_op1(op)?;
    Ok(x)
}
