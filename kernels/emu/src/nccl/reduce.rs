//! NCCL's element types and reduction operations, and what the hub computes for each
//! collective. Reductions fold the contributions in rank order, `((r0 op r1) op r2) ...`,
//! each step rounded in the element type (fp16 sums are fp16 sums, as NCCL's are); `avg`
//! divides that sum by the number of ranks. Integers wrap, as on the GPU.

use super::wire::{Call, Op};
use half::{bf16, f16};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    I8 = 0,
    U8 = 1,
    I32 = 2,
    U32 = 3,
    I64 = 4,
    U64 = 5,
    F16 = 6,
    F32 = 7,
    F64 = 8,
    BF16 = 9,
}

impl DType {
    /// From `ncclDataType_t`'s value; `None` for the fp8 types and anything unknown.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            0 => DType::I8,
            1 => DType::U8,
            2 => DType::I32,
            3 => DType::U32,
            4 => DType::I64,
            5 => DType::U64,
            6 => DType::F16,
            7 => DType::F32,
            8 => DType::F64,
            9 => DType::BF16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::BF16 => "bfloat16",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RedOp {
    Sum = 0,
    Prod = 1,
    Max = 2,
    Min = 3,
    Avg = 4,
}

impl RedOp {
    /// From `ncclRedOp_t`'s value; `None` for custom operations (`ncclRedOpCreatePreMulSum`,
    /// which the stand-in does not provide) and anything unknown.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            0 => RedOp::Sum,
            1 => RedOp::Prod,
            2 => RedOp::Max,
            3 => RedOp::Min,
            4 => RedOp::Avg,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RedOp::Sum => "sum",
            RedOp::Prod => "prod",
            RedOp::Max => "max",
            RedOp::Min => "min",
            RedOp::Avg => "avg",
        }
    }
}

trait Elem: Copy {
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    fn write(self, out: &mut [u8]);
    fn combine(self, other: Self, op: RedOp) -> Self;
    fn div(self, n: usize) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                <$t>::from_ne_bytes(b.try_into().expect("chunk of the element size"))
            }
            fn write(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_ne_bytes());
            }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self.wrapping_add(o),
                    RedOp::Prod => self.wrapping_mul(o),
                    RedOp::Max => self.max(o),
                    RedOp::Min => self.min(o),
                }
            }
            fn div(self, n: usize) -> Self {
                // Through i128 so that a rank count larger than the type (i8) still divides.
                (self as i128 / n as i128) as $t
            }
        }
    )*};
}
int_elem!(i8, u8, i32, u32, i64, u64);

macro_rules! float_elem {
    ($t:ty, $bits:ty, $from_bits:expr, $to_bits:expr, $from_usize:expr) => {
        impl Elem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                $from_bits(<$bits>::from_ne_bytes(b.try_into().expect("chunk of the element size")))
            }
            fn write(self, out: &mut [u8]) {
                out.copy_from_slice(&$to_bits(self).to_ne_bytes());
            }
            fn combine(self, o: Self, op: RedOp) -> Self {
                match op {
                    RedOp::Sum | RedOp::Avg => self + o,
                    RedOp::Prod => self * o,
                    RedOp::Max => {
                        if o > self {
                            o
                        } else {
                            self
                        }
                    }
                    RedOp::Min => {
                        if o < self {
                            o
                        } else {
                            self
                        }
                    }
                }
            }
            fn div(self, n: usize) -> Self {
                self / $from_usize(n)
            }
        }
    };
}
// half's arithmetic computes in f32 and rounds once to the half type; f32 carries more than
// twice the half types' precision plus two bits, so that double rounding is exact.
float_elem!(f32, u32, f32::from_bits, f32::to_bits, |n: usize| n as f32);
float_elem!(f64, u64, f64::from_bits, f64::to_bits, |n: usize| n as f64);
float_elem!(f16, u16, f16::from_bits, f16::to_bits, |n: usize| f16::from_f32(n as f32));
float_elem!(bf16, u16, bf16::from_bits, bf16::to_bits, |n: usize| bf16::from_f32(n as f32));

fn fold<T: Elem>(op: RedOp, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (o, b) in out.chunks_exact_mut(T::SIZE).zip(p.chunks_exact(T::SIZE)) {
            T::read(o).combine(T::read(b), op).write(o);
        }
    }
    if op == RedOp::Avg {
        for o in out.chunks_exact_mut(T::SIZE) {
            T::read(o).div(parts.len()).write(o);
        }
    }
    out
}

/// The element-wise reduction of equally long contributions, in rank order.
pub fn reduce(dtype: DType, op: RedOp, parts: &[Vec<u8>]) -> Vec<u8> {
    match dtype {
        DType::I8 => fold::<i8>(op, parts),
        DType::U8 => fold::<u8>(op, parts),
        DType::I32 => fold::<i32>(op, parts),
        DType::U32 => fold::<u32>(op, parts),
        DType::I64 => fold::<i64>(op, parts),
        DType::U64 => fold::<u64>(op, parts),
        DType::F16 => fold::<f16>(op, parts),
        DType::F32 => fold::<f32>(op, parts),
        DType::F64 => fold::<f64>(op, parts),
        DType::BF16 => fold::<bf16>(op, parts),
    }
}

/// What each rank gets back: rank r's reply is `data[ranges[r]]`.
pub struct Replies {
    pub data: Vec<u8>,
    pub ranges: Vec<Range<usize>>,
}

/// Computes a collective from every rank's contribution (`parts[r]`, already checked to have
/// `call.send_bytes(r, n)` bytes).
pub fn compute(call: &Call, mut parts: Vec<Vec<u8>>) -> Replies {
    let n = parts.len();
    let whole = |data: Vec<u8>| {
        let len = data.len();
        Replies { data, ranges: vec![0..len; n] }
    };
    let redop = call.redop.unwrap_or(RedOp::Sum);
    let root = call.root.unwrap_or(0) as usize;
    match call.op {
        Op::AllReduce => whole(reduce(call.dtype, redop, &parts)),
        Op::AllGather => whole(parts.concat()),
        Op::Broadcast => whole(std::mem::take(&mut parts[root])),
        Op::Reduce => {
            let data = reduce(call.dtype, redop, &parts);
            let ranges = (0..n).map(|r| if r == root { 0..data.len() } else { 0..0 }).collect();
            Replies { data, ranges }
        }
        Op::ReduceScatter => {
            let data = reduce(call.dtype, redop, &parts);
            let chunk = data.len() / n;
            Replies { data, ranges: (0..n).map(|r| r * chunk..(r + 1) * chunk).collect() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn sums_fold_in_rank_order() {
        // (1e8 + 1) + -1e8 rounds the 1 away; another order would keep it.
        let parts = vec![bytes_f32(&[1e8]), bytes_f32(&[1.0]), bytes_f32(&[-1e8])];
        assert_eq!(f32s(&reduce(DType::F32, RedOp::Sum, &parts)), vec![0.0]);
        let swapped = vec![parts[0].clone(), parts[2].clone(), parts[1].clone()];
        assert_eq!(f32s(&reduce(DType::F32, RedOp::Sum, &swapped)), vec![1.0]);
    }

    #[test]
    fn each_type_and_operation_reduces() {
        let i = |v: &[i32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        let parts = vec![i(&[3, -7]), i(&[5, 2]), i(&[-1, 4])];
        let get = |op| {
            reduce(DType::I32, op, &parts)
                .chunks_exact(4)
                .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(get(RedOp::Sum), vec![7, -1]);
        assert_eq!(get(RedOp::Prod), vec![-15, -56]);
        assert_eq!(get(RedOp::Max), vec![5, 4]);
        assert_eq!(get(RedOp::Min), vec![-1, -7]);
        assert_eq!(get(RedOp::Avg), vec![2, 0]);
        // fp16 rounds after every step: 2048 + 1 is 2048 in fp16 (11-bit significand).
        let h = |v: f32| f16::from_f32(v).to_bits().to_ne_bytes().to_vec();
        let out = reduce(DType::F16, RedOp::Sum, &[h(2048.0), h(1.0), h(1.0)]);
        assert_eq!(f16::from_bits(u16::from_ne_bytes([out[0], out[1]])).to_f32(), 2048.0);
        let out = reduce(DType::U8, RedOp::Sum, &[vec![200], vec![100]]);
        assert_eq!(out, vec![44], "integers wrap");
    }

    #[test]
    fn reduce_scatter_and_reduce_give_each_rank_its_part() {
        let call =
            Call { op: Op::ReduceScatter, dtype: DType::U8, redop: Some(RedOp::Sum), root: None, count: 2 };
        let r = compute(&call, vec![vec![1, 2, 3, 4], vec![10, 20, 30, 40]]);
        assert_eq!(&r.data[r.ranges[0].clone()], &[11, 22]);
        assert_eq!(&r.data[r.ranges[1].clone()], &[33, 44]);
        let call =
            Call { op: Op::Reduce, dtype: DType::U8, redop: Some(RedOp::Max), root: Some(1), count: 2 };
        let r = compute(&call, vec![vec![1, 9], vec![5, 2]]);
        assert!(r.ranges[0].is_empty());
        assert_eq!(&r.data[r.ranges[1].clone()], &[5, 9]);
    }
}
