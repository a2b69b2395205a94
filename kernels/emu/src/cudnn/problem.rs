//! One convolution, checked: the descriptors of x, w, y and the convolution agree with each
//! other and with cuDNN's output-size formula, in a data-type configuration the emulator
//! computes. The algorithm queries, workspace queries and the convolutions all start here, so
//! they agree on what is valid.

use super::descriptors::{Conv, Filter, Tensor};
use super::{bad_param, not_supported, Refusal};
use crate::elem::Elem;
use cudarc::cudnn::sys::{cudnnConvolutionMode_t, cudnnDataType_t};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub ty: Elem,
    /// Batch, input channels (all groups), input height and width.
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels (all groups), filter height and width.
    pub k: usize,
    pub r: usize,
    pub s: usize,
    /// Output height and width.
    pub p: usize,
    pub q: usize,
    pub groups: usize,
    pub pad: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// CUDNN_CONVOLUTION: the filter is applied flipped in both spatial dimensions.
    pub flip: bool,
    /// Element strides of x and y in N, C, H, W order.
    pub x_strides: [usize; 4],
    pub y_strides: [usize; 4],
    /// The filter is KRSC in memory (else KCRS).
    pub w_nhwc: bool,
}

/// cuDNN's output size along one dimension:
/// 1 + (in + 2 pad - ((filter - 1) dilation + 1)) / stride, when the dilated filter fits.
pub fn out_dim(input: usize, pad: usize, filter: usize, dilation: usize, stride: usize) -> Option<usize> {
    let span = (filter - 1) * dilation + 1;
    (input + 2 * pad).checked_sub(span).map(|room| 1 + room / stride)
}

/// Elements a tensor with these dims and strides spans (1 + sum of (dim - 1) * stride).
pub fn extent(dims: [usize; 4], strides: [usize; 4]) -> usize {
    1 + dims.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum::<usize>()
}

fn elem(data: cudnnDataType_t, compute: cudnnDataType_t) -> Result<Elem, Refusal> {
    use cudnnDataType_t::*;
    match (data, compute) {
        (CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT) => Ok(Elem::F32),
        // PSEUDO_HALF_CONFIG: fp16 data, fp32 accumulation.
        (CUDNN_DATA_HALF, CUDNN_DATA_FLOAT) => Ok(Elem::F16),
        (CUDNN_DATA_HALF, CUDNN_DATA_HALF) => Err(not_supported(
            "TRUE_HALF_CONFIG (fp16 data with fp16 compute type) is not emulated; use a float compute type",
        )),
        (d, c) => Err(not_supported(format!("data type {d:?} with compute type {c:?} is not emulated"))),
    }
}

impl Problem {
    /// Checks x (input), w (filter), conv and y (output) against each other.
    pub fn new(x: &Tensor, w: &Filter, conv: &Conv, y: &Tensor) -> Result<Problem, Refusal> {
        if x.ty != w.ty || y.ty != w.ty {
            return Err(bad_param(format!(
                "x, w and y must share a data type; got {:?}, {:?}, {:?}",
                x.ty, w.ty, y.ty
            )));
        }
        let ty = elem(x.ty, conv.compute)?;
        let [n, c, h, wd] = x.dims;
        let [k, cg, r, s] = w.dims;
        let g = conv.groups;
        if c != cg * g {
            return Err(bad_param(format!(
                "x has {c} channels but the filter has {cg} per group x {g} groups"
            )));
        }
        if !k.is_multiple_of(g) {
            return Err(bad_param(format!("{k} output channels do not split into {g} groups")));
        }
        let dim = |i: usize, input: usize, f: usize| {
            out_dim(input, conv.pad[i], f, conv.dilation[i], conv.stride[i]).ok_or_else(|| {
                bad_param(format!(
                    "the dilated filter ({f} taps, dilation {}) is larger than the padded input ({input} + 2 x {})",
                    conv.dilation[i], conv.pad[i]
                ))
            })
        };
        let (p, q) = (dim(0, h, r)?, dim(1, wd, s)?);
        if y.dims != [n, k, p, q] {
            return Err(bad_param(format!(
                "y is {:?} (NCHW) but the convolution of x {:?} with w {:?} (pad {:?}, stride {:?}, dilation {:?}) gives {:?}",
                y.dims,
                x.dims,
                w.dims,
                conv.pad,
                conv.stride,
                conv.dilation,
                [n, k, p, q]
            )));
        }
        Ok(Problem {
            ty,
            n,
            c,
            h,
            w: wd,
            k,
            r,
            s,
            p,
            q,
            groups: g,
            pad: conv.pad,
            stride: conv.stride,
            dilation: conv.dilation,
            flip: conv.mode == cudnnConvolutionMode_t::CUDNN_CONVOLUTION,
            x_strides: x.strides,
            y_strides: y.strides,
            w_nhwc: w.nhwc,
        })
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn kg(&self) -> usize {
        self.k / self.groups
    }

    pub fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.k, self.p, self.q]
    }

    /// Elements of the filter (K x C/groups x R x S).
    pub fn w_len(&self) -> usize {
        self.k * self.cg() * self.r * self.s
    }

    /// Where filter element (k, c in its group, r, s) lies in memory.
    pub fn w_index(&self, k: usize, c: usize, r: usize, s: usize) -> usize {
        let cg = self.cg();
        if self.w_nhwc {
            ((k * self.r + r) * self.s + s) * cg + c
        } else {
            ((k * cg + c) * self.r + r) * self.s + s
        }
    }

    /// The workspace every algorithm reports and the convolutions then demand: the bytes of
    /// an f32 copy of the filter (what a GEMM-based cuDNN algorithm uses workspace for is of
    /// this order), rounded up to 256. The emulator keeps its working copies on the host;
    /// demanding the workspace anyway catches a caller that sizes or passes it wrongly.
    pub fn workspace_bytes(&self) -> usize {
        (self.w_len() * 4).div_ceil(256).max(1) * 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_follows_the_documented_formula() {
        // 7x7 stride 2 pad 3 on 224: (224 + 6 - 7) / 2 + 1 = 112 (ResNet's stem).
        assert_eq!(out_dim(224, 3, 7, 1, 2), Some(112));
        // 3x3 pad 1 stride 1 keeps the size; 1x1 stride 2 halves (rounding down).
        assert_eq!(out_dim(15, 1, 3, 1, 1), Some(15));
        assert_eq!(out_dim(15, 0, 1, 1, 2), Some(8));
        // Dilation 2 makes a 3-tap filter span 5.
        assert_eq!(out_dim(5, 0, 3, 2, 1), Some(1));
        assert_eq!(out_dim(4, 0, 3, 2, 1), None);
    }
}
