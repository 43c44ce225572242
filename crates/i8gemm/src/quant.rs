//! Quantization, the packed layout, and the loop around the kernels.

use std::ops::Range;

use crate::{Error, GROUP, GROUP_BYTES, TILE_ROWS, Tile};

/// Output columns per packed weight panel: four AVX-512 vectors of `i32`.
pub const PANEL: usize = 64;

/// Input rows per block of the outer loop: with a panel of up to 4096
/// inputs (256 KiB), a block's bytes and the panel stay in L2 together.
const BLOCK_ROWS: usize = 48;

/// The widest input whose integer sums cannot overflow: 255 · 127 ·
/// 65,536 < 2³¹.
pub const MAX_IN_DIM: usize = 65_536;

/// Largest magnitude of a quantized weight: symmetric, so -128 is unused.
const LEVELS: f32 = 127.0;

/// Largest quantized input byte.
const INPUT_LEVELS: f32 = 255.0;

/// A `[out, in]` weight in signed bytes, one scale per output row, packed
/// for the kernel.
#[derive(Clone)]
pub struct I8Weight {
    /// Panel after panel; within one, group after group of four inputs,
    /// each holding those four bytes for all [`PANEL`] columns in turn.
    /// Columns past `out_dim` and inputs past `in_dim` are zero.
    packed: Vec<i8>,
    /// Per output column: the sum of its bytes, which an input row's zero
    /// point multiplies into the integer sum.
    sums: Vec<i32>,
    /// Per output column: the weight scale.
    scales: Vec<f32>,
    out_dim: usize,
    in_dim: usize,
    /// `in_dim` rounded up to whole groups.
    depth: usize,
}

impl std::fmt::Debug for I8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8Weight")
            .field("out_dim", &self.out_dim)
            .field("in_dim", &self.in_dim)
            .finish_non_exhaustive()
    }
}

/// Input rows quantized to unsigned bytes, each row with its own scale
/// and zero point, so that its whole range from its least to its largest
/// value (zero included) gets all 256 levels: after a ReLU or GELU most
/// inputs are positive, and a symmetric range would waste half.
#[derive(Clone)]
pub struct I8Rows {
    /// Row after row, each `depth` bytes; padding bytes are zero.
    bytes: Vec<u8>,
    scales: Vec<f32>,
    /// The byte that stands for 0.0 in each row.
    zeros: Vec<u8>,
    in_dim: usize,
    depth: usize,
}

impl std::fmt::Debug for I8Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8Rows")
            .field("rows", &self.rows())
            .field("in_dim", &self.in_dim)
            .finish_non_exhaustive()
    }
}

/// Whether [`I8Weight::matmul`] runs the AVX-512 VNNI kernel on this CPU
/// (otherwise the portable one, with the same results).
pub fn accelerated() -> bool {
    !matches!(Kernel::detect(), Kernel::Portable)
}

/// The scale that maps `values`' largest magnitude to [`LEVELS`], and
/// its reciprocal; `(1, 0)` for a row of zeros (or of non-finite values),
/// which then quantizes to zeros.
fn scale_of(values: &[f32]) -> (f32, f32) {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max > 0.0 && max.is_finite() {
        (max / LEVELS, LEVELS / max)
    } else {
        (1.0, 0.0)
    }
}

/// `v` rounded to the nearest integer (ties to even), for `|v| < 2^22`:
/// adding and taking away 1.5 · 2^23 leaves no bits below the point.
/// `f32::round` is a call into libm on baseline x86-64, and it took a
/// tenth of the encoder's time.
fn round_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Quantizes one input row into `dst` (as long or longer), returning its
/// scale and zero point. Inlined into the kernel module too, where the
/// compiler may use AVX-512 for it: the operations are IEEE ones without
/// reordering, so the bytes are the same either way.
#[inline(always)]
pub(crate) fn quantize_row(row: &[f32], dst: &mut [u8]) -> (f32, u8) {
    // Sixteen independent lanes, so that the compiler can keep them in
    // one vector without reassociating anything.
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(chunk) {
            *l = if v < *l { v } else { *l };
            *h = if v > *h { v } else { *h };
        }
    }
    for (&v, (l, h)) in chunks
        .remainder()
        .iter()
        .zip(lo.iter_mut().zip(hi.iter_mut()))
    {
        *l = if v < *l { v } else { *l };
        *h = if v > *h { v } else { *h };
    }
    let low = lo.iter().fold(0f32, |m, &v| if v < m { v } else { m });
    let high = hi.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    let range = high - low;
    let (scale, inverse, zero) = if range > 0.0 && range.is_finite() {
        let scale = range / INPUT_LEVELS;
        // `as` saturates; `low <= 0`, so this is in 0..=255.
        (scale, INPUT_LEVELS / range, round_small(-low / scale) as u8)
    } else {
        (1.0, 0.0, 0)
    };
    let zero_f = f32::from(zero);
    for (d, &v) in dst.iter_mut().zip(row) {
        // `max` before `min`: NaN becomes 0 (`clamp` would keep it).
        #[allow(clippy::manual_clamp)]
        let v = (v * inverse + zero_f).max(0.0).min(INPUT_LEVELS);
        *d = byte_of(v);
    }
    (scale, zero)
}

/// `v`, in 0..=255, rounded to nearest (ties to even) as a byte: after
/// adding 1.5 · 2^23, the integer is the low bits of the mantissa. A
/// float-to-integer `as` would saturate, which the compiler does one value
/// at a time; this stays in vectors.
#[inline(always)]
fn byte_of(v: f32) -> u8 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC).to_bits() & 0xff) as u8
}

/// `v / scale`, rounded to nearest and kept within ±[`LEVELS`].
fn level(v: f32, inverse: f32) -> i8 {
    // `as` saturates, and NaN becomes 0.
    round_small((v * inverse).clamp(-LEVELS, LEVELS)) as i8
}

fn whole_rows(len: usize, width: usize) -> Result<usize, Error> {
    if width == 0 || !len.is_multiple_of(width) {
        return Err(Error::Shape { len, width });
    }
    Ok(len / width)
}

impl I8Weight {
    /// Quantizes a row-major `[out_dim, in_dim]` weight, as a linear
    /// layer stores it.
    pub fn quantize(weight: &[f32], out_dim: usize, in_dim: usize) -> Result<Self, Error> {
        let rows = whole_rows(weight.len(), in_dim)?;
        if in_dim > MAX_IN_DIM {
            return Err(Error::TooWide { in_dim });
        }
        if rows != out_dim {
            return Err(Error::Shape {
                len: weight.len(),
                width: in_dim,
            });
        }
        let depth = in_dim.div_ceil(GROUP) * GROUP;
        let groups = depth / GROUP;
        let panels = out_dim.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * groups * GROUP_BYTES];
        let mut sums = Vec::with_capacity(out_dim);
        let mut scales = Vec::with_capacity(out_dim);
        for (col, row) in weight.chunks_exact(in_dim).enumerate() {
            let (scale, inverse) = scale_of(row);
            let (panel, lane) = (col / PANEL, col % PANEL);
            let base = panel * groups * GROUP_BYTES + lane * GROUP;
            let mut sum = 0i32;
            for (k, &v) in row.iter().enumerate() {
                let q = level(v, inverse);
                sum = sum.wrapping_add(i32::from(q));
                let at = base + (k / GROUP) * GROUP_BYTES + k % GROUP;
                if let Some(slot) = packed.get_mut(at) {
                    *slot = q;
                }
            }
            sums.push(sum);
            scales.push(scale);
        }
        Ok(Self {
            packed,
            sums,
            scales,
            out_dim,
            in_dim,
            depth,
        })
    }

    /// Output columns.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Input columns.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output row `row` as the products see it, `scale · level`, into
    /// `out` (`in_dim` long): what a caller needs to bound how far the
    /// products can be from the f32 ones.
    pub fn dequantize(&self, row: usize, out: &mut [f32]) -> Result<(), Error> {
        if row >= self.out_dim {
            return Err(Error::Range { what: "rows" });
        }
        if out.len() != self.in_dim {
            return Err(Error::Range { what: "output" });
        }
        let scale = self.scales.get(row).copied().unwrap_or(0.0);
        let groups = self.depth / GROUP;
        let base = (row / PANEL) * groups * GROUP_BYTES + (row % PANEL) * GROUP;
        for (k, v) in out.iter_mut().enumerate() {
            let at = base + (k / GROUP) * GROUP_BYTES + k % GROUP;
            *v = scale * f32::from(self.packed.get(at).copied().unwrap_or(0));
        }
        Ok(())
    }

    /// Panels of [`PANEL`] output columns (the last one may be partly
    /// padding).
    pub fn panels(&self) -> usize {
        self.out_dim.div_ceil(PANEL)
    }

    /// The output columns that `panels` cover.
    pub fn columns(&self, panels: Range<usize>) -> Range<usize> {
        let end = (panels.end * PANEL).min(self.out_dim);
        (panels.start * PANEL).min(end)..end
    }

    /// `out = x[rows]·Wᵀ`, restricted to the output columns of `panels`:
    /// `out` is row-major `[rows.len(), columns(panels).len()]`.
    ///
    /// Callers split the work between threads by rows (many rows) or by
    /// panels (a few rows, where the weight is the cost).
    pub fn matmul(
        &self,
        x: &I8Rows,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        self.matmul_with(Kernel::detect(), x, rows, panels, out)
    }

    /// [`matmul`](Self::matmul) through the portable kernel, whatever the
    /// CPU: the reference that tests and fuzzing hold the fast one to.
    pub fn matmul_portable(
        &self,
        x: &I8Rows,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        self.matmul_with(Kernel::Portable, x, rows, panels, out)
    }

    fn matmul_with(
        &self,
        kernel: Kernel,
        x: &I8Rows,
        rows: Range<usize>,
        panels: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        if x.in_dim != self.in_dim {
            return Err(Error::Range {
                what: "input width",
            });
        }
        if rows.start > rows.end || rows.end > x.rows() {
            return Err(Error::Range { what: "rows" });
        }
        if panels.start > panels.end || panels.end > self.panels() {
            return Err(Error::Range { what: "panels" });
        }
        let columns = self.columns(panels.clone());
        let width = columns.len();
        if out.len() != rows.len() * width {
            return Err(Error::Range { what: "output" });
        }
        let panel_bytes = (self.depth / GROUP) * GROUP_BYTES;
        let mut tile: Tile = [[0; PANEL]; TILE_ROWS];
        let mut block = rows.start;
        while block < rows.end {
            let block_end = (block + BLOCK_ROWS).min(rows.end);
            for panel in panels.clone() {
                let weights = self
                    .packed
                    .get(panel * panel_bytes..(panel + 1) * panel_bytes)
                    .unwrap_or_default();
                let cols = self.columns(panel..panel + 1);
                let col_sums = self.sums.get(cols.clone()).unwrap_or_default();
                let col_scales = self.scales.get(cols.clone()).unwrap_or_default();
                let mut row = block;
                while row < block_end {
                    let n = TILE_ROWS.min(block_end - row);
                    let input = x
                        .bytes
                        .get(row * x.depth..(row + n) * x.depth)
                        .unwrap_or_default();
                    kernel.tile(n, input, x.depth, weights, &mut tile);
                    for (r, sums) in tile.iter().take(n).enumerate() {
                        let x_scale = x.scales.get(row + r).copied().unwrap_or(0.0);
                        let zero = i32::from(x.zeros.get(row + r).copied().unwrap_or(0));
                        let at = (row + r - rows.start) * width + (cols.start - columns.start);
                        let Some(dst) = out.get_mut(at..at + cols.len()) else {
                            continue;
                        };
                        let col_info = col_sums.iter().zip(col_scales);
                        for ((y, &acc), (&sum, &w_scale)) in dst.iter_mut().zip(sums).zip(col_info)
                        {
                            let exact = acc.wrapping_sub(zero.wrapping_mul(sum));
                            *y = exact as f32 * (x_scale * w_scale);
                        }
                    }
                    row += n;
                }
            }
            block = block_end;
        }
        Ok(())
    }
}

impl I8Rows {
    /// Quantizes row-major rows of width `in_dim`, each with its own
    /// scale.
    pub fn quantize(x: &[f32], in_dim: usize) -> Result<Self, Error> {
        Self::quantize_with(Kernel::detect(), x, in_dim)
    }

    /// [`quantize`](Self::quantize) in portable code, whatever the CPU:
    /// the reference for the AVX-512 build of the same code.
    pub fn quantize_portable(x: &[f32], in_dim: usize) -> Result<Self, Error> {
        Self::quantize_with(Kernel::Portable, x, in_dim)
    }

    fn quantize_with(kernel: Kernel, x: &[f32], in_dim: usize) -> Result<Self, Error> {
        let rows = whole_rows(x.len(), in_dim)?;
        let depth = in_dim.div_ceil(GROUP) * GROUP;
        let mut bytes = vec![0; rows * depth];
        let mut scales = Vec::with_capacity(rows);
        let mut zeros = Vec::with_capacity(rows);
        for (row, dst) in x.chunks_exact(in_dim).zip(bytes.chunks_exact_mut(depth)) {
            let (scale, zero) = kernel.quantize_row(row, dst);
            scales.push(scale);
            zeros.push(zero);
        }
        Ok(Self {
            bytes,
            scales,
            zeros,
            in_dim,
            depth,
        })
    }

    /// Row `row` as the products see it, `scale · (byte − zero)`, into
    /// `out` (`in_dim` long).
    pub fn dequantize(&self, row: usize, out: &mut [f32]) -> Result<(), Error> {
        if row >= self.rows() {
            return Err(Error::Range { what: "rows" });
        }
        if out.len() != self.in_dim {
            return Err(Error::Range { what: "output" });
        }
        let scale = self.scales.get(row).copied().unwrap_or(0.0);
        let zero = i16::from(self.zeros.get(row).copied().unwrap_or(0));
        let bytes = self
            .bytes
            .get(row * self.depth..row * self.depth + self.in_dim)
            .unwrap_or_default();
        for (v, &b) in out.iter_mut().zip(bytes) {
            *v = scale * f32::from(i16::from(b) - zero);
        }
        Ok(())
    }

    /// How many rows there are.
    pub fn rows(&self) -> usize {
        self.scales.len()
    }
}

/// The kernel this CPU runs.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Vnni(crate::vnni::Vnni),
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = crate::vnni::Vnni::detect() {
            return Self::Vnni(v);
        }
        Self::Portable
    }

    /// Integer sums of `rows` input rows (`stride` bytes apart in
    /// `input`) with one weight panel, into `tile`'s first `rows` rows.
    fn tile(self, rows: usize, input: &[u8], stride: usize, weights: &[i8], tile: &mut Tile) {
        match self {
            Self::Portable => crate::portable::tile(rows, input, stride, weights, tile),
            #[cfg(target_arch = "x86_64")]
            Self::Vnni(v) => v.tile(rows, input, stride, weights, tile),
        }
    }

    /// [`quantize_row`], with AVX-512 where the kernel runs.
    fn quantize_row(self, row: &[f32], dst: &mut [u8]) -> (f32, u8) {
        match self {
            Self::Portable => quantize_row(row, dst),
            #[cfg(target_arch = "x86_64")]
            Self::Vnni(v) => v.quantize_row(row, dst),
        }
    }
}
