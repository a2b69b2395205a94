//! Gaussian blur of an HWC f32 image, separable, with reflect padding (torchvision's
//! `gaussian_blur` pads with "reflect"). The kernel spans +-ceil(3 sigma) pixels.

/// Mirror index i into 0..n without repeating the edge sample (…2 1 | 0 1 2 … n-1 | n-2 …).
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Normalised 1-D Gaussian weights for offsets -r..=r.
pub fn kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let mut k: Vec<f32> = (-r..=r).map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|w| *w /= s);
    k
}

/// Blur `img` (h x w x bands) in place with standard deviation `sigma` pixels.
/// `tmp` and `row` are scratch space.
pub fn gaussian_blur(
    img: &mut [f32],
    h: usize,
    w: usize,
    bands: usize,
    sigma: f32,
    tmp: &mut Vec<f32>,
    row: &mut Vec<f32>,
) {
    if sigma <= 0.0 {
        return;
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as isize;
    let row_len = w * bands;
    tmp.clear();
    tmp.resize(h * row_len, 0.0);
    // Horizontal: pad each row by reflection, then out[j] = sum_t k[t] * padded[j + t*bands],
    // contiguous in j so it vectorises.
    let padded_len = (w + 2 * r as usize) * bands;
    row.clear();
    row.resize(padded_len, 0.0);
    for (src, dst) in img.chunks_exact(row_len).zip(tmp.chunks_exact_mut(row_len)) {
        for x in 0..w + 2 * r as usize {
            let sx = reflect(x as isize - r, w);
            row[x * bands..(x + 1) * bands].copy_from_slice(&src[sx * bands..(sx + 1) * bands]);
        }
        dst.fill(0.0);
        for (t, &kt) in k.iter().enumerate() {
            let shifted = &row[t * bands..t * bands + row_len];
            for (d, &v) in dst.iter_mut().zip(shifted) {
                *d += kt * v;
            }
        }
    }
    // Vertical: weighted sums of reflected rows.
    for (y, dst) in img.chunks_exact_mut(row_len).enumerate() {
        dst.fill(0.0);
        for (t, &kt) in k.iter().enumerate() {
            let sy = reflect(y as isize + t as isize - r, h);
            for (d, &v) in dst.iter_mut().zip(&tmp[sy * row_len..(sy + 1) * row_len]) {
                *d += kt * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, 5)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect(-7, 1), 0);
    }

    #[test]
    fn blur_keeps_constants_and_the_mean_of_a_symmetric_image_and_smooths_an_impulse() {
        let (h, w, b) = (9, 11, 2);
        let mut img = vec![0.3; h * w * b];
        gaussian_blur(&mut img, h, w, b, 1.5, &mut Vec::new(), &mut Vec::new());
        assert!(img.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let mut imp = vec![0.0; h * w * b];
        imp[(4 * w + 5) * b] = 1.0;
        gaussian_blur(&mut imp, h, w, b, 1.0, &mut Vec::new(), &mut Vec::new());
        let centre = imp[(4 * w + 5) * b];
        let k = kernel(1.0);
        assert!((centre - k[3] * k[3]).abs() < 1e-6, "centre {centre}");
        assert!(imp[(4 * w + 6) * b] < centre && imp[(4 * w + 6) * b] > 0.0);
        // The other band stays zero: bands do not mix.
        assert!(imp.iter().skip(1).step_by(2).all(|&v| v == 0.0));
        let total: f32 = imp.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "mass {total}");
    }
}
