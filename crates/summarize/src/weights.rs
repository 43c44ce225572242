//! Reads `model.safetensors` one tensor at a time.
//!
//! The `safetensors` crate and candle's loaders want the whole file as one
//! byte slice, which means either a memory map (`unsafe`, forbidden here)
//! or a second copy of every weight in memory. Reading each tensor with a
//! positioned read keeps peak memory at the weights plus one tensor, so
//! this module parses the (small, JSON) header itself and checks every
//! offset against the file before reading anything.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Headers beyond this are refused before being read (the format's own cap).
const MAX_HEADER_LEN: u64 = 100_000_000;

#[derive(Debug, serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

#[derive(Debug, Clone)]
struct Info {
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    len: usize,
}

/// The tensors of a safetensors file, read on demand.
#[derive(Debug)]
pub(crate) struct Weights {
    file: File,
    path: PathBuf,
    infos: HashMap<String, Info>,
    device: Device,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Safetensors(reason.into())
}

impl Weights {
    /// Opens `path` and checks its header against its length.
    pub(crate) fn open(path: &Path, device: &Device) -> Result<Self> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_owned(),
            },
            _ => Error::io(path, e),
        })?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        let file_len = meta.len();
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0)
            .map_err(|_| bad(format!("file is {file_len} bytes, too short for a header")))?;
        let header_len = u64::from_le_bytes(n);
        if header_len > MAX_HEADER_LEN || header_len > file_len.saturating_sub(8) {
            return Err(bad(format!(
                "header length {header_len} does not fit in a file of {file_len} bytes"
            )));
        }
        // Checked against the file length above, so this allocation is bounded.
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| Error::io(path, e))?;
        let raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut infos = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let info: RawInfo =
                serde_json::from_value(value).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
            let (dtype, width) = match info.dtype.as_str() {
                "F32" => (DType::F32, 4),
                "F16" => (DType::F16, 2),
                "BF16" => (DType::BF16, 2),
                _ => {
                    // Checkpoints may carry integer buffers we never read;
                    // they fail only if a model asks for them.
                    infos.insert(
                        name.clone(),
                        Info {
                            dtype: DType::U8,
                            shape: Vec::new(),
                            start: 0,
                            len: usize::MAX,
                        },
                    );
                    continue;
                }
            };
            let (begin, end) = info.data_offsets;
            let expected = info
                .shape
                .iter()
                .try_fold(width, |acc: usize, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor {name:?}: shape {:?} overflows", info.shape)))?;
            if end < begin || end > data_len || (end - begin) != expected as u64 {
                return Err(bad(format!(
                    "tensor {name:?}: bytes {begin}..{end} do not hold shape {:?} of {} in {data_len} bytes of data (file truncated?)",
                    info.shape, info.dtype
                )));
            }
            infos.insert(
                name,
                Info {
                    dtype,
                    shape: info.shape,
                    start: data_start + begin,
                    len: expected,
                },
            );
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            infos,
            device: device.clone(),
        })
    }

    /// Whether the file holds a tensor of that name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    /// Reads tensor `name` as f32 and checks that its shape is `expected`.
    pub(crate) fn load(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let info = self
            .infos
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_owned()))?;
        if info.len == usize::MAX {
            return Err(Error::DType {
                name: name.to_owned(),
                dtype: "non-float".to_owned(),
            });
        }
        if info.shape != expected {
            return Err(Error::Shape {
                name: name.to_owned(),
                expected: expected.to_vec(),
                actual: info.shape.clone(),
            });
        }
        if info.dtype == DType::F32 {
            // Read straight into the tensor's own buffer: the byte copy that
            // `from_raw_buffer` makes would double the largest tensor (the
            // embedding) in the peak memory of a load.
            let mut values = vec![0f32; info.len / 4];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut values);
            self.file
                .read_exact_at(bytes, info.start)
                .map_err(|e| Error::io(&self.path, e))?;
            if cfg!(target_endian = "big") {
                for v in &mut values {
                    *v = f32::from_bits(v.to_bits().swap_bytes());
                }
            }
            return Ok(Tensor::from_vec(
                values,
                info.shape.as_slice(),
                &self.device,
            )?);
        }
        let mut bytes = vec![0u8; info.len];
        self.file
            .read_exact_at(&mut bytes, info.start)
            .map_err(|e| Error::io(&self.path, e))?;
        let tensor = Tensor::from_raw_buffer(&bytes, info.dtype, &info.shape, &self.device)?;
        drop(bytes);
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// `name` if the file has it with values of its own, else `shared`:
    /// the tie transformers makes (it keeps both when saved and different).
    pub(crate) fn tied(&self, name: &str, shared: &Tensor, dims: &[usize]) -> Result<Tensor> {
        if !self.contains(name) {
            return Ok(shared.clone());
        }
        let own = self.load(name, dims)?;
        let differing = own
            .ne(shared)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(if differing == 0.0 {
            shared.clone()
        } else {
            own
        })
    }
}
