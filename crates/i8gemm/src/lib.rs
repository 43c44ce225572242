//! Int8 matrix products for the linear layers of a transformer, on
//! AVX-512 VNNI.
//!
//! A linear layer `y = x·Wᵀ` quantized to 8 bits keeps `W` as signed
//! bytes with one scale per output row, and quantizes each input row on
//! the fly to unsigned bytes with one scale (zero at 128). One `vpdpbusd`
//! then does 64 byte products per instruction, four times the f32 lanes of
//! an FMA. candle's int8 kernels multiply a matrix by a vector; an
//! encoder's products have hundreds of rows, and that is where this crate
//! pays. README.md says why it is written here.
//!
//! Integer sums are exact, so the portable path (any CPU without VNNI)
//! gives the same bits as the kernel: the answer never depends on the CPU.
//! This crate and `confsum-sha256x2` are the only ones of the workspace
//! that allow `unsafe`, here only in the `vnni` module.
//!
//! ```
//! use confsum_i8gemm::{I8Rows, I8Weight};
//!
//! // W is [out = 2, in = 4], row-major; x is one row.
//! let w = I8Weight::quantize(&[1.0, 0.0, -1.0, 0.5, 0.0, 2.0, 0.0, 0.0], 2, 4)?;
//! let x = I8Rows::quantize(&[1.0, 1.0, 1.0, 1.0], 4)?;
//! let mut y = [0f32; 2];
//! w.matmul(&x, 0..1, 0..w.panels(), &mut y)?;
//! assert!((y[0] - 0.5).abs() < 0.02 && (y[1] - 2.0).abs() < 0.02);
//! # Ok::<(), confsum_i8gemm::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod error;
mod portable;
mod quant;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use self::error::Error;
pub use self::quant::{I8Rows, I8Weight, MAX_IN_DIM, PANEL, accelerated};

/// Input rows that one kernel call multiplies at once.
const TILE_ROWS: usize = 6;
/// Bytes of input per group: `vpdpbusd` sums four byte products per lane.
const GROUP: usize = 4;
/// Bytes of a packed weight panel per group: [`PANEL`] columns × [`GROUP`].
const GROUP_BYTES: usize = PANEL * GROUP;

/// Integer sums of one tile: `TILE_ROWS` rows by [`PANEL`] columns.
type Tile = [[i32; PANEL]; TILE_ROWS];
