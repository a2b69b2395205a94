//! Buffers to and from the host, zeroed buffers, fill. Compiled, not yet run on a GPU.

use super::CudaBackend;
use crate::cuda::buffer::{CudaBuf, DevView, DevViewMut, Mem};
use crate::cuda::launch::{driver_err, Dtype};
use crate::error::{KernelError, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Round to nearest even, as `__float2half_rn` does (SIMD on x86 with F16C).
fn to_f16(data: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; data.len()];
    out.convert_from_f32_slice(data);
    out
}

impl CudaBackend {
    pub(crate) fn zeros_of(&self, dtype: Dtype, what: &str, len: usize) -> Result<CudaBuf> {
        let mem = match dtype {
            Dtype::F16 => Mem::F16(self.pool.zeros::<f16>(what, len)?),
            Dtype::F32 => Mem::F32(self.pool.zeros::<f32>(what, len)?),
        };
        Ok(CudaBuf { mem })
    }

    /// A new buffer of `dtype` holding `data` (rounded to nearest even for fp16).
    pub(crate) fn upload(&self, dtype: Dtype, what: &str, data: &[f32]) -> Result<CudaBuf> {
        let copy_err = |e| driver_err("memcpy_htod", e);
        // Input batches go through pinned memory (one asynchronous DMA copy); small uploads
        // are copied from pageable memory.
        let staged = data.len() >= super::staging::STAGE_MIN;
        let mem = match dtype {
            Dtype::F16 => {
                let mut b = self.pool.alloc::<f16>(what, data.len())?;
                if staged {
                    self.staging.upload_f16(&self.ctx, &self.stream, data, b.slice_mut())?;
                } else {
                    self.stream.memcpy_htod(&to_f16(data), b.slice_mut()).map_err(copy_err)?;
                }
                Mem::F16(b)
            }
            Dtype::F32 => {
                let mut b = self.pool.alloc::<f32>(what, data.len())?;
                if staged {
                    self.staging.upload_f32(&self.ctx, &self.stream, data, b.slice_mut())?;
                } else {
                    self.stream.memcpy_htod(data, b.slice_mut()).map_err(copy_err)?;
                }
                Mem::F32(b)
            }
        };
        Ok(CudaBuf { mem })
    }

    /// The values of a view as f32 (waits for the queued work that writes it).
    pub(crate) fn download(&self, v: &DevView<'_>) -> Result<Vec<f32>> {
        let copy_err = |e| driver_err("memcpy_dtoh", e);
        let host = match v {
            DevView::F32(v) => self.stream.clone_dtoh(v).map_err(copy_err)?,
            DevView::F16(v) => {
                let h: Vec<f16> = self.stream.clone_dtoh(v).map_err(copy_err)?;
                let mut out = vec![0f32; h.len()];
                h.convert_to_f32_slice(&mut out);
                out
            }
        };
        // An asynchronous failure of any earlier op surfaces at this synchronising copy.
        self.ctx.check_err().map_err(|e| driver_err("deferred driver error", e))?;
        Ok(host)
    }

    pub(crate) fn write_at(&self, buf: &mut CudaBuf, offset: usize, data: &[f32]) -> Result<()> {
        let end =
            offset.checked_add(data.len()).filter(|&e| e <= buf.len()).ok_or_else(|| KernelError::Shape {
                op: "write",
                detail: format!(
                    "{} values at offset {offset} do not fit a buffer of {}",
                    data.len(),
                    buf.len()
                ),
            })?;
        let copy_err = |e| driver_err("memcpy_htod", e);
        match buf.view_mut(offset..end) {
            DevViewMut::F32(mut v) => self.stream.memcpy_htod(data, &mut v).map_err(copy_err),
            DevViewMut::F16(mut v) => self.stream.memcpy_htod(&to_f16(data), &mut v).map_err(copy_err),
        }
    }

    pub(crate) fn fill_impl(&self, x: &mut DevViewMut<'_>, value: f32) -> Result<()> {
        let k = &self.kernels.elementwise;
        match x {
            DevViewMut::F32(v) => k.fill_f32(&self.stream, value, v),
            DevViewMut::F16(v) => k.fill_f16(&self.stream, value, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_fp16_conversion_rounds_like_the_scalar_one() {
        // Ties (1 + 2^-11 lies halfway between two fp16 values), subnormals, overflow, NaN.
        let mut vals = vec![
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            5.9e-8,
            3.0e-8,
            65504.0,
            65520.0,
            1e9,
            -0.0,
        ];
        vals.extend((0..1000).map(|i| (i as f32 * 0.37).sin() * 1000.0));
        let bulk = to_f16(&vals);
        for (v, b) in vals.iter().zip(&bulk) {
            assert_eq!(b.to_bits(), f16::from_f32(*v).to_bits(), "{v}");
        }
        assert!(to_f16(&[f32::NAN])[0].is_nan());
    }
}
