//! Tensor, filter and convolution descriptors. cuDNN reads a descriptor when a call uses it,
//! so the convolution calls copy what they need out of these at call time; changing or
//! destroying a descriptor afterwards does not affect queued work.
//!
//! Dimensions are kept in cuDNN's NCHW order whatever the memory layout: a tensor carries
//! explicit element strides (the 4d format only chooses them), a filter its format
//! (NCHW = KCRS, NHWC = KRSC).

use super::{bad_param, finish, not_supported, put, Refusal};
use crate::handles::Registry;
use cudarc::cudnn::sys::{
    cudnnConvolutionDescriptor_t, cudnnConvolutionMode_t, cudnnDataType_t, cudnnFilterDescriptor_t,
    cudnnMathType_t, cudnnStatus_t, cudnnTensorDescriptor_t, cudnnTensorFormat_t,
};
use std::ffi::c_int;

/// A set 4-d tensor descriptor: dims and element strides, both in N, C, H, W order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    pub ty: cudnnDataType_t,
    pub dims: [usize; 4],
    pub strides: [usize; 4],
}

/// A set 4-d filter descriptor: dims in K, C, R, S order, and the memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    pub ty: cudnnDataType_t,
    pub dims: [usize; 4],
    /// NCHW: KCRS in memory; NHWC: KRSC.
    pub nhwc: bool,
}

/// A 2-d convolution descriptor (`set` once cudnnSetConvolution2d/NdDescriptor ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub set: bool,
    pub pad: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub mode: cudnnConvolutionMode_t,
    pub compute: cudnnDataType_t,
    pub math: cudnnMathType_t,
    pub groups: usize,
}

#[derive(Debug, Clone, Copy)]
enum Desc {
    /// None until a Set call describes it.
    Tensor(Option<Tensor>),
    Filter(Option<Filter>),
    Conv(Conv),
}

static DESCS: Registry<Desc> = Registry::new();

pub(crate) fn tensor(d: cudnnTensorDescriptor_t, what: &str) -> Result<Tensor, Refusal> {
    match DESCS.get(d as usize) {
        Some(Desc::Tensor(Some(t))) => Ok(t),
        Some(Desc::Tensor(None)) => Err(bad_param(format!("{what}: tensor descriptor was never set"))),
        _ => Err(bad_param(format!("{what}: {:#x} is not a live tensor descriptor", d as usize))),
    }
}

pub(crate) fn filter(d: cudnnFilterDescriptor_t, what: &str) -> Result<Filter, Refusal> {
    match DESCS.get(d as usize) {
        Some(Desc::Filter(Some(f))) => Ok(f),
        Some(Desc::Filter(None)) => Err(bad_param(format!("{what}: filter descriptor was never set"))),
        _ => Err(bad_param(format!("{what}: {:#x} is not a live filter descriptor", d as usize))),
    }
}

pub(crate) fn conv(d: cudnnConvolutionDescriptor_t, what: &str) -> Result<Conv, Refusal> {
    match DESCS.get(d as usize) {
        Some(Desc::Conv(c)) if c.set => Ok(c),
        Some(Desc::Conv(_)) => Err(bad_param(format!("{what}: convolution descriptor was never set"))),
        _ => Err(bad_param(format!("{what}: {:#x} is not a live convolution descriptor", d as usize))),
    }
}

/// Replaces the value of a live descriptor of the same kind.
fn replace(id: usize, new: Desc, kind: &str) -> Result<(), Refusal> {
    let same_kind = |old: &Desc| std::mem::discriminant(old) == std::mem::discriminant(&new);
    match DESCS.get(id) {
        Some(old) if same_kind(&old) => {
            DESCS.update(id, |d| *d = new);
            Ok(())
        }
        _ => Err(bad_param(format!("{id:#x} is not a live {kind} descriptor"))),
    }
}

fn destroy(id: usize, kind: &str, is_kind: fn(&Desc) -> bool) -> Result<(), Refusal> {
    match DESCS.get(id) {
        Some(d) if is_kind(&d) => {
            DESCS.remove(id);
            Ok(())
        }
        _ => Err(bad_param(format!("{id:#x} is not a live {kind} descriptor"))),
    }
}

/// Positive dimensions (cuDNN refuses zero and negative ones).
fn dims<const N: usize>(v: [c_int; N], what: &str) -> Result<[usize; N], Refusal> {
    let mut out = [0usize; N];
    for (o, d) in out.iter_mut().zip(v) {
        if d <= 0 {
            return Err(bad_param(format!("{what} {v:?}: every entry must be positive")));
        }
        *o = d as usize;
    }
    Ok(out)
}

/// Element strides of a packed NCHW-ordered tensor in `format`.
fn packed_strides(format: cudnnTensorFormat_t, [_, c, h, w]: [usize; 4]) -> Result<[usize; 4], Refusal> {
    match format {
        cudnnTensorFormat_t::CUDNN_TENSOR_NCHW => Ok([c * h * w, h * w, w, 1]),
        cudnnTensorFormat_t::CUDNN_TENSOR_NHWC => Ok([h * w * c, 1, w * c, c]),
        other => Err(not_supported(format!("tensor format {other:?} is not emulated"))),
    }
}

/// # Safety
/// `p` is null or points at `n` readable ints.
unsafe fn int_array<const N: usize>(p: *const c_int, what: &str) -> Result<[c_int; N], Refusal> {
    if p.is_null() {
        return Err(bad_param(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and N ints readable per the caller's promise.
    Ok(unsafe { std::ptr::read_unaligned(p.cast::<[c_int; N]>()) })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateTensorDescriptor(out: *mut cudnnTensorDescriptor_t) -> cudnnStatus_t {
    if out.is_null() {
        return finish("cudnnCreateTensorDescriptor", Err(bad_param("tensorDesc is a null pointer")));
    }
    let id = DESCS.insert(Desc::Tensor(None));
    // SAFETY: non-null, and writable per the caller's promise.
    finish("cudnnCreateTensorDescriptor", unsafe { put(out, id as cudnnTensorDescriptor_t, "tensorDesc") })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetTensor4dDescriptor(
    d: cudnnTensorDescriptor_t,
    format: cudnnTensorFormat_t,
    ty: cudnnDataType_t,
    n: c_int,
    c: c_int,
    h: c_int,
    w: c_int,
) -> cudnnStatus_t {
    let r = dims([n, c, h, w], "n, c, h, w").and_then(|dims| {
        let strides = packed_strides(format, dims)?;
        replace(d as usize, Desc::Tensor(Some(Tensor { ty, dims, strides })), "tensor")
    });
    finish("cudnnSetTensor4dDescriptor", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetTensor4dDescriptorEx(
    d: cudnnTensorDescriptor_t,
    ty: cudnnDataType_t,
    n: c_int,
    c: c_int,
    h: c_int,
    w: c_int,
    ns: c_int,
    cs: c_int,
    hs: c_int,
    ws: c_int,
) -> cudnnStatus_t {
    let r = dims([n, c, h, w], "n, c, h, w").and_then(|dims| {
        let strides = self::dims([ns, cs, hs, ws], "strides")?;
        replace(d as usize, Desc::Tensor(Some(Tensor { ty, dims, strides })), "tensor")
    });
    finish("cudnnSetTensor4dDescriptorEx", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetTensorNdDescriptor(
    d: cudnnTensorDescriptor_t,
    ty: cudnnDataType_t,
    nb_dims: c_int,
    dim_a: *const c_int,
    stride_a: *const c_int,
) -> cudnnStatus_t {
    let r = (|| {
        if nb_dims != 4 {
            return Err(not_supported(format!("nbDims = {nb_dims}: only 4-d tensors are emulated")));
        }
        // SAFETY: the caller promises nbDims (= 4) readable ints behind each array.
        let (dv, sv) = unsafe { (int_array::<4>(dim_a, "dimA")?, int_array::<4>(stride_a, "strideA")?) };
        let t = Tensor { ty, dims: dims(dv, "dimA")?, strides: dims(sv, "strideA")? };
        replace(d as usize, Desc::Tensor(Some(t)), "tensor")
    })();
    finish("cudnnSetTensorNdDescriptor", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyTensorDescriptor(d: cudnnTensorDescriptor_t) -> cudnnStatus_t {
    finish("cudnnDestroyTensorDescriptor", destroy(d as usize, "tensor", |d| matches!(d, Desc::Tensor(_))))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateFilterDescriptor(out: *mut cudnnFilterDescriptor_t) -> cudnnStatus_t {
    if out.is_null() {
        return finish("cudnnCreateFilterDescriptor", Err(bad_param("filterDesc is a null pointer")));
    }
    let id = DESCS.insert(Desc::Filter(None));
    // SAFETY: non-null, and writable per the caller's promise.
    finish("cudnnCreateFilterDescriptor", unsafe { put(out, id as cudnnFilterDescriptor_t, "filterDesc") })
}

fn set_filter(
    d: cudnnFilterDescriptor_t,
    ty: cudnnDataType_t,
    format: cudnnTensorFormat_t,
    v: [c_int; 4],
) -> Result<(), Refusal> {
    let nhwc = match format {
        cudnnTensorFormat_t::CUDNN_TENSOR_NCHW => false,
        cudnnTensorFormat_t::CUDNN_TENSOR_NHWC => true,
        other => return Err(not_supported(format!("filter format {other:?} is not emulated"))),
    };
    let f = Filter { ty, dims: dims(v, "k, c, h, w")?, nhwc };
    replace(d as usize, Desc::Filter(Some(f)), "filter")
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetFilter4dDescriptor(
    d: cudnnFilterDescriptor_t,
    ty: cudnnDataType_t,
    format: cudnnTensorFormat_t,
    k: c_int,
    c: c_int,
    h: c_int,
    w: c_int,
) -> cudnnStatus_t {
    finish("cudnnSetFilter4dDescriptor", set_filter(d, ty, format, [k, c, h, w]))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetFilterNdDescriptor(
    d: cudnnFilterDescriptor_t,
    ty: cudnnDataType_t,
    format: cudnnTensorFormat_t,
    nb_dims: c_int,
    dim_a: *const c_int,
) -> cudnnStatus_t {
    let r = (|| {
        if nb_dims != 4 {
            return Err(not_supported(format!("nbDims = {nb_dims}: only 4-d filters are emulated")));
        }
        // SAFETY: the caller promises nbDims (= 4) readable ints.
        let v = unsafe { int_array::<4>(dim_a, "filterDimA")? };
        set_filter(d, ty, format, v)
    })();
    finish("cudnnSetFilterNdDescriptor", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyFilterDescriptor(d: cudnnFilterDescriptor_t) -> cudnnStatus_t {
    finish("cudnnDestroyFilterDescriptor", destroy(d as usize, "filter", |d| matches!(d, Desc::Filter(_))))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateConvolutionDescriptor(
    out: *mut cudnnConvolutionDescriptor_t,
) -> cudnnStatus_t {
    if out.is_null() {
        return finish("cudnnCreateConvolutionDescriptor", Err(bad_param("convDesc is a null pointer")));
    }
    // cuDNN's defaults: one group, default math; the geometry comes from a Set call.
    let id = DESCS.insert(Desc::Conv(Conv {
        set: false,
        pad: [0; 2],
        stride: [1; 2],
        dilation: [1; 2],
        mode: cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        compute: cudnnDataType_t::CUDNN_DATA_FLOAT,
        math: cudnnMathType_t::CUDNN_DEFAULT_MATH,
        groups: 1,
    }));
    // SAFETY: non-null, and writable per the caller's promise.
    finish("cudnnCreateConvolutionDescriptor", unsafe {
        put(out, id as cudnnConvolutionDescriptor_t, "convDesc")
    })
}

/// Updates a live convolution descriptor.
fn with_conv(d: cudnnConvolutionDescriptor_t, f: impl FnOnce(&mut Conv)) -> Result<(), Refusal> {
    match DESCS.get(d as usize) {
        Some(Desc::Conv(mut c)) => {
            f(&mut c);
            replace(d as usize, Desc::Conv(c), "convolution")
        }
        _ => Err(bad_param(format!("{:#x} is not a live convolution descriptor", d as usize))),
    }
}

fn set_conv2d(
    d: cudnnConvolutionDescriptor_t,
    pad: [c_int; 2],
    stride: [c_int; 2],
    dilation: [c_int; 2],
    mode: cudnnConvolutionMode_t,
    compute: cudnnDataType_t,
) -> Result<(), Refusal> {
    if pad.iter().any(|&p| p < 0) {
        return Err(bad_param(format!("padding {pad:?} is negative")));
    }
    let pad = pad.map(|p| p as usize);
    let stride = dims(stride, "stride")?;
    let dilation = dims(dilation, "dilation")?;
    with_conv(d, |c| {
        c.set = true;
        c.pad = pad;
        c.stride = stride;
        c.dilation = dilation;
        c.mode = mode;
        c.compute = compute;
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolution2dDescriptor(
    d: cudnnConvolutionDescriptor_t,
    pad_h: c_int,
    pad_w: c_int,
    u: c_int,
    v: c_int,
    dilation_h: c_int,
    dilation_w: c_int,
    mode: cudnnConvolutionMode_t,
    compute: cudnnDataType_t,
) -> cudnnStatus_t {
    finish(
        "cudnnSetConvolution2dDescriptor",
        set_conv2d(d, [pad_h, pad_w], [u, v], [dilation_h, dilation_w], mode, compute),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolutionNdDescriptor(
    d: cudnnConvolutionDescriptor_t,
    array_length: c_int,
    pad_a: *const c_int,
    stride_a: *const c_int,
    dilation_a: *const c_int,
    mode: cudnnConvolutionMode_t,
    compute: cudnnDataType_t,
) -> cudnnStatus_t {
    let r = (|| {
        if array_length != 2 {
            return Err(not_supported(format!(
                "arrayLength = {array_length}: only 2-d convolutions are emulated"
            )));
        }
        // SAFETY: the caller promises arrayLength (= 2) readable ints behind each array.
        let (p, s, dl) = unsafe {
            (
                int_array::<2>(pad_a, "padA")?,
                int_array::<2>(stride_a, "filterStrideA")?,
                int_array::<2>(dilation_a, "dilationA")?,
            )
        };
        set_conv2d(d, p, s, dl, mode, compute)
    })();
    finish("cudnnSetConvolutionNdDescriptor", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolutionMathType(
    d: cudnnConvolutionDescriptor_t,
    math: cudnnMathType_t,
) -> cudnnStatus_t {
    finish("cudnnSetConvolutionMathType", with_conv(d, |c| c.math = math))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolutionGroupCount(
    d: cudnnConvolutionDescriptor_t,
    groups: c_int,
) -> cudnnStatus_t {
    let r = if groups < 1 {
        Err(bad_param(format!("groupCount = {groups} must be at least 1")))
    } else {
        with_conv(d, |c| c.groups = groups as usize)
    };
    finish("cudnnSetConvolutionGroupCount", r)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyConvolutionDescriptor(d: cudnnConvolutionDescriptor_t) -> cudnnStatus_t {
    finish(
        "cudnnDestroyConvolutionDescriptor",
        destroy(d as usize, "convolution", |d| matches!(d, Desc::Conv(_))),
    )
}
