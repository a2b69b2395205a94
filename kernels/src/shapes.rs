//! Shape descriptors shared by every backend. Activations are NHWC; conv weights are OHWI
//! (`[c_out, k, k, c_in]`, cuDNN's NHWC filter layout, KRSC); linear weights are `[out, in]`.

/// A 2-D convolution with a square kernel, equal stride and padding on both axes, no bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Elements of the input `[n, h, w, c_in]`.
    pub fn x_len(&self) -> usize {
        self.n * self.h * self.w * self.c_in
    }
    /// Elements of the output `[n, out_h, out_w, c_out]`.
    pub fn y_len(&self) -> usize {
        self.n * self.out_h() * self.out_w() * self.c_out
    }
    /// Elements of the weight `[c_out, k, k, c_in]`.
    pub fn w_len(&self) -> usize {
        self.c_out * self.k * self.k * self.c_in
    }
}

/// The stem's max pool: 3x3 window, stride 2, padding 1 (padding never wins the max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl PoolShape {
    pub const K: usize = 3;
    pub const STRIDE: usize = 2;
    pub const PAD: usize = 1;
    pub fn out_h(&self) -> usize {
        (self.h + 2 * Self::PAD - Self::K) / Self::STRIDE + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * Self::PAD - Self::K) / Self::STRIDE + 1
    }
    pub fn x_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    pub fn y_len(&self) -> usize {
        self.n * self.out_h() * self.out_w() * self.c
    }
}
