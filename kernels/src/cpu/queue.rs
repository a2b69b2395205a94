//! The MoCo queue shard's enqueue with the write pointer in a backend buffer: the reference
//! for `cu/queue.cu` (same checks, same error codes, same rows written), and own-image masking
//! from index buffers (the reference for `mask_own_image_f32` in `cu/softmax.cu`).

use crate::backend::queue_error;

/// See [`crate::Backend::queue_enqueue`]. `ptr` and `error` are one element each; with `half`
/// the keys are written rounded to fp16, as `queue_enqueue_f16` stores them.
#[allow(clippy::too_many_arguments)]
pub fn enqueue(
    rows: usize,
    dim: usize,
    half: bool,
    keys: &[f32],
    key_idx: &[f32],
    queue: &mut [f32],
    queue_idx: &mut [f32],
    ptr: &mut [f32],
    error: &mut [f32],
    [saved_keys, saved_idx, saved_ptr]: [&mut [f32]; 3],
) {
    let b = key_idx.len();
    assert_eq!(keys.len(), b * dim, "queue_enqueue: keys must be [{b}, {dim}]");
    assert_eq!(queue.len(), rows * dim, "queue_enqueue: queue must be [{rows}, {dim}]");
    assert_eq!(queue_idx.len(), rows, "queue_enqueue: queue_idx must hold {rows} rows");
    assert!(ptr.len() == 1 && error.len() == 1, "queue_enqueue: ptr and error are one element each");
    assert!(
        saved_keys.len() == b * dim && saved_idx.len() == b && saved_ptr.len() == 1,
        "queue_enqueue: saved rows must be [{b}, {dim}], [{b}], [1]"
    );
    saved_ptr[0] = ptr[0];
    if b == 0 || !rows.is_multiple_of(b) {
        error[0] = queue_error::DIVISIBILITY;
        return;
    }
    let p = ptr[0];
    // As on the device: a NaN fails every comparison, and the range is checked before the
    // conversion.
    let in_range = p >= 0.0 && p < rows as f32 && p == p.floor();
    if !in_range || !(p as usize).is_multiple_of(b) {
        error[0] = queue_error::POINTER;
        return;
    }
    let start = p as usize;
    saved_keys.copy_from_slice(&queue[start * dim..(start + b) * dim]);
    saved_idx.copy_from_slice(&queue_idx[start..start + b]);
    let dst = &mut queue[start * dim..(start + b) * dim];
    if half {
        dst.iter_mut().zip(keys).for_each(|(d, &k)| *d = half::f16::from_f32(k).to_f32());
    } else {
        dst.copy_from_slice(keys);
    }
    queue_idx[start..start + b].copy_from_slice(key_idx);
    ptr[0] = ((start + b) % rows) as f32;
}

/// See [`crate::Backend::mask_own_image`].
pub fn mask_own_image(
    rows: usize,
    cols: usize,
    row_idx: &[f32],
    col_idx: &[f32],
    positives: Option<usize>,
    logits: &mut [f32],
) {
    assert_eq!(logits.len(), rows * cols, "mask_own_image: logits must be [{rows}, {cols}]");
    assert_eq!(row_idx.len(), rows, "mask_own_image: row_idx must hold {rows} entries");
    assert_eq!(col_idx.len(), cols, "mask_own_image: col_idx must hold {cols} entries");
    for (r, &q) in row_idx.iter().enumerate() {
        if q < 0.0 {
            continue;
        }
        let keep = positives.map(|p| p + r);
        for (c, &k) in col_idx.iter().enumerate() {
            if k == q && Some(c) != keep {
                logits[r * cols + c] = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_writes_at_the_pointer_wraps_and_refuses_a_corrupted_pointer() {
        let (rows, dim) = (4usize, 2usize);
        let mut q = vec![0.0f32; rows * dim];
        let mut qi = vec![-1.0f32; rows];
        let (mut ptr, mut err) = ([2.0f32], [0.0f32]);
        let (mut sk, mut si, mut sp) = ([5.0f32; 4], [5.0f32; 2], [5.0f32]);
        q[4..].copy_from_slice(&[-1.0, -2.0, -3.0, -4.0]);
        let saved = [&mut sk[..], &mut si[..], &mut sp[..]];
        enqueue(
            rows,
            dim,
            false,
            &[1.0, 2.0, 3.0, 4.0],
            &[7.0, 8.0],
            &mut q,
            &mut qi,
            &mut ptr,
            &mut err,
            saved,
        );
        assert_eq!((ptr[0], err[0]), (0.0, 0.0), "wraps to row 0");
        assert_eq!((sk, si, sp), ([-1.0, -2.0, -3.0, -4.0], [-1.0, -1.0], [2.0]), "overwritten rows saved");
        assert_eq!(q, [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(qi, [-1.0, -1.0, 7.0, 8.0]);
        let before = (q.clone(), qi.clone());
        for (bad, code) in [(1.0, 2.0), (4.0, 2.0), (-2.0, 2.0), (f32::NAN, 2.0), (0.5, 2.0)] {
            let (mut ptr, mut err) = ([bad], [0.0f32]);
            let (mut sk, mut si, mut sp) = ([0.0f32; 4], [0.0f32; 2], [0.0f32]);
            let saved = [&mut sk[..], &mut si[..], &mut sp[..]];
            enqueue(rows, dim, false, &[9.0; 4], &[9.0, 9.0], &mut q, &mut qi, &mut ptr, &mut err, saved);
            assert_eq!(err[0], code, "pointer {bad}");
            assert!(ptr[0].to_bits() == bad.to_bits() && q == before.0 && qi == before.1, "nothing written");
        }
        let (mut ptr, mut err) = ([0.0f32], [0.0f32]);
        let (mut sk, mut si, mut sp) = ([0.0f32; 6], [0.0f32; 3], [0.0f32]);
        let saved = [&mut sk[..], &mut si[..], &mut sp[..]];
        enqueue(rows, dim, false, &[9.0; 6], &[9.0; 3], &mut q, &mut qi, &mut ptr, &mut err, saved);
        assert_eq!((err[0], ptr[0]), (1.0, 0.0), "3 keys do not divide 4 rows");
    }

    #[test]
    fn an_fp16_queue_stores_the_keys_rounded_to_nearest_even() {
        let (rows, dim) = (2usize, 2usize);
        let (mut q, mut qi) = (vec![0.0f32; rows * dim], vec![-1.0f32; rows]);
        let (mut ptr, mut err) = ([0.0f32], [0.0f32]);
        let (mut sk, mut si, mut sp) = ([0.0f32; 2], [0.0f32; 1], [0.0f32]);
        let saved = [&mut sk[..], &mut si[..], &mut sp[..]];
        // 1 + 2^-11 lies halfway between the fp16 neighbours 1 and 1 + 2^-10: ties to even (1).
        let keys = [1.0 + f32::powi(2.0, -11), 0.1];
        enqueue(rows, dim, true, &keys, &[3.0], &mut q, &mut qi, &mut ptr, &mut err, saved);
        assert_eq!((err[0], ptr[0]), (0.0, 1.0));
        assert_eq!(q, [1.0, half::f16::from_f32(0.1).to_f32(), 0.0, 0.0]);
        assert_ne!(q[1], 0.1, "0.1 is not an fp16 value");
    }

    #[test]
    fn mask_own_image_masks_equal_indices_but_the_label_column_and_unset_rows() {
        let mut l = vec![0.0f32; 6];
        mask_own_image(2, 3, &[5.0, -1.0], &[5.0, 6.0, 5.0], Some(0), &mut l);
        assert_eq!(l, [0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0, 0.0]);
        let mut l = vec![0.0f32; 6];
        mask_own_image(2, 3, &[6.0, 5.0], &[5.0, 6.0, 5.0], Some(1), &mut l);
        assert_eq!(l, [0.0, 0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0], "row 1 keeps column 2");
        let mut l = vec![0.0f32; 3];
        mask_own_image(1, 3, &[5.0], &[5.0, 6.0, 5.0], None, &mut l);
        assert_eq!(l, [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
    }
}
