//! The stand-in cuDNN convolutions, called through the exported C functions on emulated
//! device memory and an emulated stream, against references written from cuDNN's definition:
//!
//!   y[n,k,p,q] = sum over c of k's group, r, s of x[n, c, p*u + r*dh - pad_h, q*v + s*dw - pad_w]
//!                * w[k, c, r', s'],  (r', s') = (r, s) for CROSS_CORRELATION,
//!                                    (R-1-r, S-1-s) for CONVOLUTION,
//!
//! x zero outside the image; backward data and filter are its adjoints in x and in w.
//! Host-side tensors are logical NCHW / KCRS vectors; `upload` lays them out as a case says.

mod blas_common;
use blas_common as common;

use common::*;
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo,
    cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t as FwdAlgo,
    cudnnConvolutionMode_t, cudnnDataType_t, cudnnFilterDescriptor_t, cudnnHandle_t, cudnnMathType_t,
    cudnnStatus_t, cudnnTensorDescriptor_t, cudnnTensorFormat_t,
};
use moco_emu::counters;
use moco_emu::cudnn::algos::*;
use moco_emu::cudnn::conv_api::*;
use moco_emu::cudnn::descriptors::*;
use moco_emu::cudnn::{cudnnCreate, cudnnDestroy, cudnnSetStream};
use std::ffi::c_void;

const OK: cudnnStatus_t = cudnnStatus_t::CUDNN_STATUS_SUCCESS;
const FWD: FwdAlgo = FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
const BWD_DATA: BwdDataAlgo = BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
const BWD_FILTER: BwdFilterAlgo = BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Nchw,
    Nhwc,
    /// NHWC with one unused channel slot per pixel, described with cudnnSetTensor4dDescriptorEx
    /// (the filter stays NHWC = KRSC).
    NhwcPadded,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    s: usize,
    pad: [usize; 2],
    stride: [usize; 2],
    dil: [usize; 2],
    groups: usize,
    flip: bool,
    layout: Layout,
    half: bool,
}

impl Case {
    fn new(n: usize, c: usize, hw: usize, k: usize, rs: usize, pad: usize, stride: usize) -> Case {
        Case {
            n,
            c,
            h: hw,
            w: hw,
            k,
            r: rs,
            s: rs,
            pad: [pad; 2],
            stride: [stride; 2],
            dil: [1; 2],
            groups: 1,
            flip: false,
            layout: Layout::Nhwc,
            half: false,
        }
    }
    fn p(&self) -> usize {
        (self.h + 2 * self.pad[0] - ((self.r - 1) * self.dil[0] + 1)) / self.stride[0] + 1
    }
    fn q(&self) -> usize {
        (self.w + 2 * self.pad[1] - ((self.s - 1) * self.dil[1] + 1)) / self.stride[1] + 1
    }
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn kg(&self) -> usize {
        self.k / self.groups
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn y_dims(&self) -> [usize; 4] {
        [self.n, self.k, self.p(), self.q()]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.k, self.cg(), self.r, self.s]
    }
    fn ty(&self) -> cudnnDataType_t {
        if self.half {
            cudnnDataType_t::CUDNN_DATA_HALF
        } else {
            cudnnDataType_t::CUDNN_DATA_FLOAT
        }
    }
    /// The stored filter tap that filter position (r, s) of the correlation uses.
    fn wtap(&self, r: usize, s: usize) -> (usize, usize) {
        if self.flip {
            (self.r - 1 - r, self.s - 1 - s)
        } else {
            (r, s)
        }
    }
    /// Input row/column that output p/q reads at tap r/s, if inside the image.
    fn input(&self, p: usize, q: usize, r: usize, s: usize) -> Option<(usize, usize)> {
        let ih = (p * self.stride[0] + r * self.dil[0]).checked_sub(self.pad[0]).filter(|&i| i < self.h)?;
        let iw = (q * self.stride[1] + s * self.dil[1]).checked_sub(self.pad[1]).filter(|&i| i < self.w)?;
        Some((ih, iw))
    }
    /// Visits every (n, k, p, q, c, r, s) term of the sum with its flat NCHW/KCRS indices:
    /// f(y index, x index, w index).
    fn terms(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (p, q, cg, kg) = (self.p(), self.q(), self.cg(), self.kg());
        for n in 0..self.n {
            for k in 0..self.k {
                let g = k / kg;
                for pi in 0..p {
                    for qi in 0..q {
                        let yi = ((n * self.k + k) * p + pi) * q + qi;
                        for cl in 0..cg {
                            let c = g * cg + cl;
                            for r in 0..self.r {
                                for s in 0..self.s {
                                    if let Some((ih, iw)) = self.input(pi, qi, r, s) {
                                        let (rr, ss) = self.wtap(r, s);
                                        let xi = ((n * self.c + c) * self.h + ih) * self.w + iw;
                                        let wi = ((k * cg + cl) * self.r + rr) * self.s + ss;
                                        f(yi, xi, wi);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    /// Terms per output element, at most (the length of the sums the f32 rounding bound uses).
    fn max_terms(&self) -> [usize; 3] {
        let p = self.p() * self.q() * self.n;
        [self.cg() * self.r * self.s, self.kg() * self.r * self.s, p]
    }
}

/// Element strides (NCHW order) of a tensor in a layout, and the elements its buffer needs.
fn strides(layout: Layout, [n, c, h, w]: [usize; 4]) -> ([usize; 4], usize) {
    match layout {
        Layout::Nchw => ([c * h * w, h * w, w, 1], n * c * h * w),
        Layout::Nhwc => ([h * w * c, 1, w * c, c], n * c * h * w),
        Layout::NhwcPadded => ([h * w * (c + 1), 1, w * (c + 1), c + 1], n * h * w * (c + 1)),
    }
}

fn to_layout(v: &[f32], layout: Layout, dims: [usize; 4], fill: f32) -> Vec<f32> {
    let (st, len) = strides(layout, dims);
    let mut out = vec![fill; len];
    let [n, c, h, w] = dims;
    for (i, &val) in v.iter().enumerate().take(n * c * h * w) {
        let (ni, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
        out[ni * st[0] + ci * st[1] + hi * st[2] + wi * st[3]] = val;
    }
    out
}

fn from_layout(v: &[f32], layout: Layout, dims: [usize; 4]) -> Vec<f32> {
    let (st, _) = strides(layout, dims);
    let [n, c, h, w] = dims;
    (0..n * c * h * w)
        .map(|i| {
            let (ni, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
            v[ni * st[0] + ci * st[1] + hi * st[2] + wi * st[3]]
        })
        .collect()
}

/// Filter layout: KCRS for NCHW, KRSC otherwise (= a packed NHWC tensor with N = K).
fn filter_layout(layout: Layout) -> Layout {
    if layout == Layout::Nchw {
        Layout::Nchw
    } else {
        Layout::Nhwc
    }
}

struct Dnn {
    h: cudnnHandle_t,
    stream: u64,
}

/// Live descriptors for one case, destroyed on drop.
struct Descs {
    x: cudnnTensorDescriptor_t,
    y: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    conv: cudnnConvolutionDescriptor_t,
}

fn i(v: usize) -> i32 {
    v as i32
}

impl Descs {
    fn new(cs: &Case) -> Descs {
        let mut d = Descs {
            x: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
        };
        // SAFETY: every out-pointer is a live local; every descriptor is set right after its
        // creation with arguments describing the case.
        unsafe {
            assert_eq!(cudnnCreateTensorDescriptor(&mut d.x), OK);
            assert_eq!(cudnnCreateTensorDescriptor(&mut d.y), OK);
            assert_eq!(cudnnCreateFilterDescriptor(&mut d.w), OK);
            assert_eq!(cudnnCreateConvolutionDescriptor(&mut d.conv), OK);
            for (desc, dims) in [(d.x, cs.x_dims()), (d.y, cs.y_dims())] {
                let [n, c, h, w] = dims;
                let st = match cs.layout {
                    Layout::Nchw => cudnnSetTensor4dDescriptor(
                        desc,
                        cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                        cs.ty(),
                        i(n),
                        i(c),
                        i(h),
                        i(w),
                    ),
                    Layout::Nhwc => cudnnSetTensor4dDescriptor(
                        desc,
                        cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                        cs.ty(),
                        i(n),
                        i(c),
                        i(h),
                        i(w),
                    ),
                    Layout::NhwcPadded => {
                        let (s, _) = strides(Layout::NhwcPadded, dims);
                        cudnnSetTensor4dDescriptorEx(
                            desc,
                            cs.ty(),
                            i(n),
                            i(c),
                            i(h),
                            i(w),
                            i(s[0]),
                            i(s[1]),
                            i(s[2]),
                            i(s[3]),
                        )
                    }
                };
                assert_eq!(st, OK);
            }
            let fmt = if cs.layout == Layout::Nchw {
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
            } else {
                cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
            };
            let [k, c, r, s] = cs.w_dims();
            assert_eq!(cudnnSetFilter4dDescriptor(d.w, cs.ty(), fmt, i(k), i(c), i(r), i(s)), OK);
            let mode = if cs.flip {
                cudnnConvolutionMode_t::CUDNN_CONVOLUTION
            } else {
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION
            };
            let st = cudnnSetConvolution2dDescriptor(
                d.conv,
                i(cs.pad[0]),
                i(cs.pad[1]),
                i(cs.stride[0]),
                i(cs.stride[1]),
                i(cs.dil[0]),
                i(cs.dil[1]),
                mode,
                cudnnDataType_t::CUDNN_DATA_FLOAT,
            );
            assert_eq!(st, OK);
            assert_eq!(cudnnSetConvolutionGroupCount(d.conv, i(cs.groups)), OK);
            let math =
                if cs.half { cudnnMathType_t::CUDNN_TENSOR_OP_MATH } else { cudnnMathType_t::CUDNN_FMA_MATH };
            assert_eq!(cudnnSetConvolutionMathType(d.conv, math), OK);
        }
        d
    }
}

impl Drop for Descs {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created in Descs::new and is destroyed once.
        unsafe {
            assert_eq!(cudnnDestroyTensorDescriptor(self.x), OK);
            assert_eq!(cudnnDestroyTensorDescriptor(self.y), OK);
            assert_eq!(cudnnDestroyFilterDescriptor(self.w), OK);
            assert_eq!(cudnnDestroyConvolutionDescriptor(self.conv), OK);
        }
    }
}

/// Device buffer holding a logical tensor in the case's layout and type.
fn upload(cs: &Case, v: &[f32], layout: Layout, dims: [usize; 4], fill: f32) -> DevBuf {
    let laid = to_layout(v, layout, dims, fill);
    if cs.half {
        DevBuf::from_f16(&laid)
    } else {
        DevBuf::from_f32(&laid)
    }
}

fn download(cs: &Case, b: &DevBuf, layout: Layout, dims: [usize; 4]) -> Vec<f32> {
    let raw = if cs.half { b.read_f16() } else { b.read_f32() };
    from_layout(&raw, layout, dims)
}

impl Dnn {
    fn new() -> Dnn {
        let (stream, raw) = new_stream();
        let mut h: cudnnHandle_t = std::ptr::null_mut();
        // SAFETY: h is a live out-pointer; the handle is then bound to a live stream.
        unsafe {
            assert_eq!(cudnnCreate(&mut h), OK);
            assert_eq!(cudnnSetStream(h, raw as _), OK);
        }
        Dnn { h, stream }
    }

    fn fwd_workspace(&self, d: &Descs) -> usize {
        let mut ws = 0usize;
        // SAFETY: live handle and descriptors, ws a live out-pointer.
        assert_eq!(
            unsafe { cudnnGetConvolutionForwardWorkspaceSize(self.h, d.x, d.w, d.conv, d.y, FWD, &mut ws) },
            OK
        );
        ws
    }

    /// y = alpha conv(x, w) + beta y0, as logical NCHW.
    fn forward(&self, cs: &Case, x: &[f32], w: &[f32], y0: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
        let d = Descs::new(cs);
        let (dx, dw) = (
            upload(cs, x, cs.layout, cs.x_dims(), 0.0),
            upload(cs, w, filter_layout(cs.layout), cs.w_dims(), 0.0),
        );
        let dy = upload(cs, y0, cs.layout, cs.y_dims(), f32::NAN);
        let ws = DevBuf::new(self.fwd_workspace(&d));
        // SAFETY: every buffer holds what its descriptor describes; alpha/beta are f32.
        let st = unsafe {
            cudnnConvolutionForward(
                self.h,
                (&alpha as *const f32).cast(),
                d.x,
                dx.void(),
                d.w,
                dw.void(),
                d.conv,
                FWD,
                ws.void(),
                ws.bytes,
                (&beta as *const f32).cast(),
                d.y,
                dy.void(),
            )
        };
        assert_eq!(st, OK);
        run(self.stream);
        download(cs, &dy, cs.layout, cs.y_dims())
    }

    /// dx = alpha conv_transpose(dy, w) + beta dx0.
    fn backward_data(
        &self,
        cs: &Case,
        dy: &[f32],
        w: &[f32],
        dx0: &[f32],
        alpha: f32,
        beta: f32,
    ) -> Vec<f32> {
        let d = Descs::new(cs);
        let (ddy, dw) = (
            upload(cs, dy, cs.layout, cs.y_dims(), 0.0),
            upload(cs, w, filter_layout(cs.layout), cs.w_dims(), 0.0),
        );
        let ddx = upload(cs, dx0, cs.layout, cs.x_dims(), f32::NAN);
        let mut need = 0usize;
        // SAFETY: live handle and descriptors, need a live out-pointer.
        assert_eq!(
            unsafe {
                cudnnGetConvolutionBackwardDataWorkspaceSize(
                    self.h, d.w, d.y, d.conv, d.x, BWD_DATA, &mut need,
                )
            },
            OK
        );
        let ws = DevBuf::new(need);
        // SAFETY: as in forward.
        let st = unsafe {
            cudnnConvolutionBackwardData(
                self.h,
                (&alpha as *const f32).cast(),
                d.w,
                dw.void(),
                d.y,
                ddy.void(),
                d.conv,
                BWD_DATA,
                ws.void(),
                ws.bytes,
                (&beta as *const f32).cast(),
                d.x,
                ddx.void(),
            )
        };
        assert_eq!(st, OK);
        run(self.stream);
        download(cs, &ddx, cs.layout, cs.x_dims())
    }

    /// dw = alpha correlation(x, dy) + beta dw0.
    fn backward_filter(
        &self,
        cs: &Case,
        x: &[f32],
        dy: &[f32],
        dw0: &[f32],
        alpha: f32,
        beta: f32,
    ) -> Vec<f32> {
        let d = Descs::new(cs);
        let (dx, ddy) =
            (upload(cs, x, cs.layout, cs.x_dims(), 0.0), upload(cs, dy, cs.layout, cs.y_dims(), 0.0));
        let ddw = upload(cs, dw0, filter_layout(cs.layout), cs.w_dims(), 0.0);
        let mut need = 0usize;
        // SAFETY: live handle and descriptors, need a live out-pointer.
        assert_eq!(
            unsafe {
                cudnnGetConvolutionBackwardFilterWorkspaceSize(
                    self.h, d.x, d.y, d.conv, d.w, BWD_FILTER, &mut need,
                )
            },
            OK
        );
        let ws = DevBuf::new(need);
        // SAFETY: as in forward.
        let st = unsafe {
            cudnnConvolutionBackwardFilter(
                self.h,
                (&alpha as *const f32).cast(),
                d.x,
                dx.void(),
                d.y,
                ddy.void(),
                d.conv,
                BWD_FILTER,
                ws.void(),
                ws.bytes,
                (&beta as *const f32).cast(),
                d.w,
                ddw.void(),
            )
        };
        assert_eq!(st, OK);
        run(self.stream);
        download(cs, &ddw, filter_layout(cs.layout), cs.w_dims())
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created in Dnn::new, destroyed once.
        unsafe { assert_eq!(cudnnDestroy(self.h), OK) };
    }
}

fn len(d: [usize; 4]) -> usize {
    d.iter().product()
}

/// The shapes ResNet-50 uses and the edge cases around them, each in NCHW, NHWC and padded
/// NHWC (explicit strides).
fn cases() -> Vec<Case> {
    let base = [
        Case::new(2, 5, 6, 4, 3, 1, 1),  // 3x3, pad 1
        Case::new(2, 4, 7, 6, 3, 1, 2),  // 3x3 stride 2 (odd input)
        Case::new(2, 6, 6, 5, 1, 0, 1),  // 1x1
        Case::new(1, 6, 7, 4, 1, 0, 2),  // 1x1 stride 2 (downsample shortcut)
        Case::new(2, 3, 11, 4, 7, 3, 2), // 7x7 stride 2 pad 3 (the stem)
        Case { dil: [2, 2], ..Case::new(1, 3, 7, 2, 3, 2, 1) },
        Case { groups: 2, ..Case::new(2, 4, 5, 6, 3, 1, 1) },
        Case { flip: true, ..Case::new(1, 3, 5, 4, 3, 1, 1) },
        Case { r: 3, s: 1, pad: [1, 0], stride: [1, 2], ..Case::new(1, 3, 6, 2, 3, 1, 1) },
        // Wide enough (8+ channels per group) for backward data's axpy-over-c path and the
        // multi-channel blocks of backward filter.
        Case::new(2, 9, 5, 3, 3, 1, 1),
        Case { groups: 2, ..Case::new(1, 16, 5, 4, 3, 1, 2) },
    ];
    let mut all = Vec::new();
    for layout in [Layout::Nchw, Layout::Nhwc, Layout::NhwcPadded] {
        all.extend(base.iter().map(|c| Case { layout, ..*c }));
    }
    all
}

/// The definition in f64: (y, |terms| sums) for y = alpha conv(x, w) + beta y0.
fn ref_forward(cs: &Case, x: &[f32], w: &[f32], y0: &[f32], alpha: f32, beta: f32) -> (Vec<f64>, Vec<f64>) {
    let n = len(cs.y_dims());
    let (mut y, mut mag) = (vec![0.0f64; n], vec![0.0f64; n]);
    cs.terms(|yi, xi, wi| {
        let t = f64::from(x[xi]) * f64::from(w[wi]);
        y[yi] += t;
        mag[yi] += t.abs();
    });
    for i in 0..n {
        let b = if beta == 0.0 { 0.0 } else { f64::from(beta) * f64::from(y0[i]) };
        y[i] = f64::from(alpha) * y[i] + b;
        mag[i] = f64::from(alpha).abs() * mag[i] + b.abs();
    }
    (y, mag)
}

/// Backward data and backward filter from the same terms: dx[xi] += dy[yi] w[wi],
/// dw[wi] += dy[yi] x[xi] (with magnitudes).
#[allow(clippy::type_complexity)]
fn ref_backward(cs: &Case, x: &[f32], w: &[f32], dy: &[f32]) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
    let (nx, nw) = (len(cs.x_dims()), len(cs.w_dims()));
    let (mut dx, mut dxm, mut dw, mut dwm) = (vec![0.0; nx], vec![0.0; nx], vec![0.0; nw], vec![0.0; nw]);
    cs.terms(|yi, xi, wi| {
        let a = f64::from(dy[yi]) * f64::from(w[wi]);
        dx[xi] += a;
        dxm[xi] += a.abs();
        let b = f64::from(dy[yi]) * f64::from(x[xi]);
        dw[wi] += b;
        dwm[wi] += b.abs();
    });
    ((dx, dxm), (dw, dwm))
}

/// f32 accumulation of at most m terms: |err| <= gamma_m * sum|terms| with gamma_m ~ m u
/// (the standard bound for any summation order); 2x margin, +2 for the alpha/beta blend.
fn f32_bound(m: usize, mag: f64) -> f64 {
    2.0 * (m + 2) as f64 * U32 * mag + 1e-30
}

fn compare(what: &str, cs: &Case, got: &[f32], want: &[f64], mag: &[f64], m: usize) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, (&w, &a))) in got.iter().zip(want.iter().zip(mag)).enumerate() {
        // fp16 output: one more rounding, half an fp16 ulp (relative 2^-11).
        let tol = f32_bound(m, a) + if cs.half { U16 * w.abs() } else { 0.0 };
        let err = (f64::from(g) - w).abs();
        assert!(err <= tol, "{what} {cs:?}: element {i} = {g}, want {w} (err {err:e} > {tol:e})");
    }
}

#[test]
fn forward_matches_the_definition() {
    let dnn = Dnn::new();
    for (i, cs) in cases().iter().enumerate() {
        let seed = 10 * i as u64;
        let (x, w) = (random(len(cs.x_dims()), seed + 1), random(len(cs.w_dims()), seed + 2));
        let y0 = random(len(cs.y_dims()), seed + 3);
        for (alpha, beta) in [(1.0, 0.0), (0.75, -0.5)] {
            let got = dnn.forward(cs, &x, &w, &y0, alpha, beta);
            let (want, mag) = ref_forward(cs, &x, &w, &y0, alpha, beta);
            compare("forward", cs, &got, &want, &mag, cs.max_terms()[0]);
        }
    }
}

#[test]
fn fp16_data_accumulates_in_fp32() {
    let dnn = Dnn::new();
    for (i, base) in cases().iter().filter(|c| c.layout != Layout::NhwcPadded).enumerate() {
        let cs = Case { half: true, ..*base };
        let seed = 1000 + 10 * i as u64;
        // The reference sees the inputs as fp16 holds them.
        let x = round_f16(&random(len(cs.x_dims()), seed + 1));
        let w = round_f16(&random(len(cs.w_dims()), seed + 2));
        let dy = round_f16(&random(len(cs.y_dims()), seed + 3));
        let zeros_y = vec![0.0; len(cs.y_dims())];
        let got = dnn.forward(&cs, &x, &w, &zeros_y, 1.0, 0.0);
        let (want, mag) = ref_forward(&cs, &x, &w, &zeros_y, 1.0, 0.0);
        compare("fp16 forward", &cs, &got, &want, &mag, cs.max_terms()[0]);
        let ((dx, dxm), (dw, dwm)) = ref_backward(&cs, &x, &w, &dy);
        let got = dnn.backward_data(&cs, &dy, &w, &vec![0.0; len(cs.x_dims())], 1.0, 0.0);
        compare("fp16 backward data", &cs, &got, &dx, &dxm, cs.max_terms()[1]);
        let got = dnn.backward_filter(&cs, &x, &dy, &vec![0.0; len(cs.w_dims())], 1.0, 0.0);
        compare("fp16 backward filter", &cs, &got, &dw, &dwm, cs.max_terms()[2]);
    }
}

#[test]
fn backward_data_and_filter_match_the_definition() {
    let dnn = Dnn::new();
    for (i, cs) in cases().iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (x, w, dy) = (
            random(len(cs.x_dims()), seed + 1),
            random(len(cs.w_dims()), seed + 2),
            random(len(cs.y_dims()), seed + 3),
        );
        let ((dx, dxm), (dw, dwm)) = ref_backward(cs, &x, &w, &dy);
        let got = dnn.backward_data(cs, &dy, &w, &vec![0.0; x.len()], 1.0, 0.0);
        compare("backward data", cs, &got, &dx, &dxm, cs.max_terms()[1]);
        let got = dnn.backward_filter(cs, &x, &dy, &vec![0.0; w.len()], 1.0, 0.0);
        compare("backward filter", cs, &got, &dw, &dwm, cs.max_terms()[2]);
        // beta = 1 accumulates into an existing gradient (how fp32 training uses it).
        let dw0 = random(w.len(), seed + 4);
        let got = dnn.backward_filter(cs, &x, &dy, &dw0, 1.0, 1.0);
        let want: Vec<f64> = dw.iter().zip(&dw0).map(|(a, b)| a + f64::from(*b)).collect();
        let mag: Vec<f64> = dwm.iter().zip(&dw0).map(|(a, b)| a + f64::from(b.abs())).collect();
        compare("backward filter, beta 1", cs, &got, &want, &mag, cs.max_terms()[2]);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// <conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_filter(x, dy)>: all three are the same
/// trilinear sum over the terms, computed by three different loops of the emulator.
#[test]
fn backward_passes_are_the_adjoints_of_the_forward_pass() {
    let dnn = Dnn::new();
    for (i, cs) in cases().iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        let (x, w, dy) = (
            random(len(cs.x_dims()), seed + 1),
            random(len(cs.w_dims()), seed + 2),
            random(len(cs.y_dims()), seed + 3),
        );
        let y = dnn.forward(cs, &x, &w, &vec![0.0; dy.len()], 1.0, 0.0);
        let dx = dnn.backward_data(cs, &dy, &w, &vec![0.0; x.len()], 1.0, 0.0);
        let dw = dnn.backward_filter(cs, &x, &dy, &vec![0.0; w.len()], 1.0, 0.0);
        let (a, b, c) = (dot(&y, &dy), dot(&x, &dx), dot(&w, &dw));
        // Each side differs from the exact sum by at most gamma_m * S, S = sum over terms
        // of |x w dy| and m the longest f32 accumulation of the three (the f64 dot adds
        // nothing at this scale); two sides can differ by twice that.
        let mut s_abs = 0.0;
        cs.terms(|yi, xi, wi| s_abs += (f64::from(x[xi]) * f64::from(w[wi]) * f64::from(dy[yi])).abs());
        let m = *cs.max_terms().iter().max().unwrap();
        let tol = 2.0 * f32_bound(m, s_abs);
        assert!(
            (a - b).abs() <= tol && (a - c).abs() <= tol,
            "{cs:?}: <y,dy> = {a}, <x,dx> = {b}, <w,dw> = {c}, tol {tol:e}"
        );
        // The check is tight: the tolerance is a small fraction of the sums' magnitude.
        assert!(tol < 1e-4 * s_abs, "{cs:?}: tolerance {tol:e} vs magnitude {s_abs:e}");
    }
}

/// L(x, w) = <conv(x, w), dy> is linear in each argument, so a central difference has no
/// truncation error: (L(v + h e) - L(v - h e)) / 2h equals the gradient up to rounding. Each
/// L is a sum of f32 forward outputs times dy, within gamma_m * S+ of the exact value, where
/// S+ bounds the sum of |x w dy| over the terms for any perturbation of size h; the quotient
/// thus errs by at most 2 gamma_m S+ / 2h, and the backward result by gamma_m' T, T the sum
/// of |w dy| (or |x dy|) over all terms.
#[test]
fn gradients_agree_with_finite_differences() {
    let dnn = Dnn::new();
    let cs = Case { layout: Layout::Nchw, ..Case::new(1, 3, 5, 2, 3, 1, 2) };
    let (x, w, dy) =
        (random(len(cs.x_dims()), 71), random(len(cs.w_dims()), 72), random(len(cs.y_dims()), 73));
    let zeros = vec![0.0; dy.len()];
    let loss = |x: &[f32], w: &[f32]| dot(&dnn.forward(&cs, x, w, &zeros, 1.0, 0.0), &dy);
    let dx = dnn.backward_data(&cs, &dy, &w, &vec![0.0; x.len()], 1.0, 0.0);
    let dw = dnn.backward_filter(&cs, &x, &dy, &vec![0.0; w.len()], 1.0, 0.0);
    let h = 0.25f32; // a power of two: v +- h is the only change, and 2h divides exactly
    let hf = f64::from(h);
    let (mut s_plus, mut t_w, mut t_x) = (0.0, 0.0, 0.0);
    cs.terms(|yi, xi, wi| {
        let (ax, aw, ad) =
            (f64::from(x[xi].abs()) + hf, f64::from(w[wi].abs()) + hf, f64::from(dy[yi].abs()));
        s_plus += ax * aw * ad;
        t_w += aw * ad;
        t_x += ax * ad;
    });
    let m = *cs.max_terms().iter().max().unwrap();
    let fd_err = 2.0 * f32_bound(m, s_plus) / (2.0 * hf);
    for i in [0, 7, 12, x.len() - 1] {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp, &w) - loss(&xm, &w)) / (2.0 * hf);
        let tol = fd_err + f32_bound(m, t_w);
        assert!(
            (fd - f64::from(dx[i])).abs() <= tol,
            "dL/dx[{i}]: finite difference {fd}, backward data {} (tol {tol:e})",
            dx[i]
        );
    }
    for i in [0, 5, w.len() - 1] {
        let (mut wp, mut wm) = (w.clone(), w.clone());
        wp[i] += h;
        wm[i] -= h;
        let fd = (loss(&x, &wp) - loss(&x, &wm)) / (2.0 * hf);
        let tol = fd_err + f32_bound(m, t_x);
        assert!(
            (fd - f64::from(dw[i])).abs() <= tol,
            "dL/dw[{i}]: finite difference {fd}, backward filter {} (tol {tol:e})",
            dw[i]
        );
    }
}

#[test]
fn beta_zero_does_not_read_the_output() {
    let dnn = Dnn::new();
    let cs = Case::new(1, 4, 5, 3, 3, 1, 1);
    let (x, w, dy) = (random(len(cs.x_dims()), 1), random(len(cs.w_dims()), 2), random(len(cs.y_dims()), 3));
    let nan = |d: [usize; 4]| vec![f32::NAN; len(d)];
    assert!(dnn.forward(&cs, &x, &w, &nan(cs.y_dims()), 1.0, 0.0).iter().all(|v| v.is_finite()));
    assert!(dnn.backward_data(&cs, &dy, &w, &nan(cs.x_dims()), 1.0, 0.0).iter().all(|v| v.is_finite()));
    assert!(dnn.backward_filter(&cs, &x, &dy, &nan(cs.w_dims()), 1.0, 0.0).iter().all(|v| v.is_finite()));
}

#[test]
fn algorithm_queries_report_the_workspace_the_convolutions_then_demand() {
    let dnn = Dnn::new();
    let cs = Case::new(2, 8, 6, 4, 3, 1, 1);
    let d = Descs::new(&cs);
    // SAFETY (block): live handle and descriptors; the perf arrays have room for the counts
    // requested; the buffers hold what the descriptors describe.
    unsafe {
        let mut n = 0;
        let mut fwd: [cudnnConvolutionFwdAlgoPerf_t; 8] = std::mem::zeroed();
        assert_eq!(
            cudnnGetConvolutionForwardAlgorithm_v7(dnn.h, d.x, d.w, d.conv, d.y, 8, &mut n, fwd.as_mut_ptr()),
            OK
        );
        assert!(n >= 1);
        let ws = dnn.fwd_workspace(&d);
        assert!(ws > 0, "a nonzero workspace, so that callers must pass one");
        for p in &fwd[..n as usize] {
            assert_eq!(p.status, OK);
            assert_eq!(p.memory, ws);
            assert_eq!(p.mathType, cudnnMathType_t::CUDNN_FMA_MATH);
        }
        let mut bd: [cudnnConvolutionBwdDataAlgoPerf_t; 6] = std::mem::zeroed();
        assert_eq!(
            cudnnGetConvolutionBackwardDataAlgorithm_v7(
                dnn.h,
                d.w,
                d.y,
                d.conv,
                d.x,
                6,
                &mut n,
                bd.as_mut_ptr()
            ),
            OK
        );
        assert!(n >= 1 && bd[0].status == OK && bd[0].memory > 0);
        let mut bf: [cudnnConvolutionBwdFilterAlgoPerf_t; 7] = std::mem::zeroed();
        assert_eq!(
            cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                dnn.h,
                d.x,
                d.y,
                d.conv,
                d.w,
                1,
                &mut n,
                bf.as_mut_ptr()
            ),
            OK
        );
        assert_eq!(n, 1, "no more results than requested");
        assert!(bf[0].status == OK && bf[0].memory > 0);

        let (x, w, y) = (
            DevBuf::new(len(cs.x_dims()) * 4),
            DevBuf::new(len(cs.w_dims()) * 4),
            DevBuf::new(len(cs.y_dims()) * 4),
        );
        let big = DevBuf::new(ws);
        let (one, zero) = (1.0f32, 0.0f32);
        let (a, b) = ((&one as *const f32).cast::<c_void>(), (&zero as *const f32).cast::<c_void>());
        let bad = cudnnStatus_t::CUDNN_STATUS_BAD_PARAM;
        let fwd = |ws: *mut c_void, bytes: usize, algo: FwdAlgo| {
            cudnnConvolutionForward(
                dnn.h,
                a,
                d.x,
                x.void(),
                d.w,
                w.void(),
                d.conv,
                algo,
                ws,
                bytes,
                b,
                d.y,
                y.void(),
            )
        };
        assert_eq!(fwd(big.void(), ws - 1, FWD), bad, "one byte short");
        assert_eq!(fwd(std::ptr::null_mut(), 0, FWD), bad, "no workspace");
        let mut host = vec![0u8; ws];
        assert_eq!(fwd(host.as_mut_ptr().cast(), ws, FWD), bad, "host memory is not device memory");
        let small = DevBuf::new(ws / 2);
        assert_eq!(fwd(small.void(), ws, FWD), bad, "claims more bytes than the allocation has");
        assert_eq!(
            fwd(big.void(), ws, FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_FFT),
            cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED
        );
        assert_eq!(fwd(big.void(), ws, FWD), OK);
        run(dnn.stream);
    }
}

#[test]
fn inconsistent_descriptors_and_short_buffers_are_refused() {
    let dnn = Dnn::new();
    let cs = Case::new(1, 4, 6, 2, 3, 1, 1);
    // y described one column too wide for the formula's 6 x 6 output.
    let wrong = Case { w: 7, ..cs };
    let (d, dwrong) = (Descs::new(&cs), Descs::new(&wrong));
    let mut ws = 0usize;
    let bad = cudnnStatus_t::CUDNN_STATUS_BAD_PARAM;
    // SAFETY: live handle and descriptors, ws a live out-pointer; the buffers below hold what
    // `cs` describes except where a test makes one short on purpose.
    unsafe {
        assert_eq!(
            cudnnGetConvolutionForwardWorkspaceSize(dnn.h, d.x, d.w, d.conv, dwrong.y, FWD, &mut ws),
            bad
        );
        assert_eq!(cudnnGetConvolutionForwardWorkspaceSize(dnn.h, d.x, d.w, d.conv, d.y, FWD, &mut ws), OK);
        let (x, w) = (DevBuf::new(len(cs.x_dims()) * 4), DevBuf::new(len(cs.w_dims()) * 4));
        let short_y = DevBuf::new(len(cs.y_dims()) * 4 - 4);
        let space = DevBuf::new(ws);
        let (one, zero) = (1.0f32, 0.0f32);
        let st = cudnnConvolutionForward(
            dnn.h,
            (&one as *const f32).cast(),
            d.x,
            x.void(),
            d.w,
            w.void(),
            d.conv,
            FWD,
            space.void(),
            ws,
            (&zero as *const f32).cast(),
            d.y,
            short_y.void(),
        );
        assert_eq!(st, bad, "y one element short of its descriptor");
        // fp16 data with an fp16 compute type (true half) is refused, not silently changed.
        let mut conv: cudnnConvolutionDescriptor_t = std::ptr::null_mut();
        assert_eq!(cudnnCreateConvolutionDescriptor(&mut conv), OK);
        let half = |c: cudnnConvolutionDescriptor_t| {
            cudnnSetConvolution2dDescriptor(
                c,
                1,
                1,
                1,
                1,
                1,
                1,
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                cudnnDataType_t::CUDNN_DATA_HALF,
            )
        };
        assert_eq!(half(conv), OK);
        let hc = Case { half: true, ..cs };
        let dh = Descs::new(&hc);
        assert_eq!(
            cudnnGetConvolutionForwardWorkspaceSize(dnn.h, dh.x, dh.w, conv, dh.y, FWD, &mut ws),
            cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED
        );
        assert_eq!(cudnnDestroyConvolutionDescriptor(conv), OK);
        assert_eq!(cudnnDestroyConvolutionDescriptor(conv), bad, "a destroyed descriptor is unknown");
    }
}

#[test]
fn convolutions_run_only_when_the_stream_runs() {
    let dnn = Dnn::new();
    let cs = Case::new(1, 2, 4, 2, 3, 1, 1);
    let d = Descs::new(&cs);
    let x = DevBuf::from_f32(&to_layout(&random(len(cs.x_dims()), 1), cs.layout, cs.x_dims(), 0.0));
    let w = DevBuf::from_f32(&to_layout(&random(len(cs.w_dims()), 2), cs.layout, cs.w_dims(), 0.0));
    let y = DevBuf::from_f32(&vec![5.0; len(cs.y_dims())]);
    let ws = DevBuf::new(dnn.fwd_workspace(&d));
    let (one, zero) = (1.0f32, 0.0f32);
    let calls = || counters::with(|c| c.cudnn.get("cudnnConvolutionForward").copied().unwrap_or(0));
    let before = calls();
    // SAFETY: every buffer holds what its descriptor describes.
    let st = unsafe {
        cudnnConvolutionForward(
            dnn.h,
            (&one as *const f32).cast(),
            d.x,
            x.void(),
            d.w,
            w.void(),
            d.conv,
            FWD,
            ws.void(),
            ws.bytes,
            (&zero as *const f32).cast(),
            d.y,
            y.void(),
        )
    };
    assert_eq!(st, OK);
    assert!(y.read_f32().iter().all(|&v| v == 5.0), "y untouched before the stream runs");
    // Other tests may count calls at the same time: at least this one was counted.
    assert!(calls() > before, "the call is counted");
    run(dnn.stream);
    assert!(y.read_f32().iter().any(|&v| v != 5.0));
}
