//! Weighted k-nearest-neighbour classification on frozen features, as InstDisc (Wu et al.
//! 2018) and DINO evaluate self-supervised features: cosine similarity between L2-normalised
//! features, the k most similar training samples vote for their class with weight
//! exp(similarity / T), the class with the largest total wins. Defaults k = 20, T = 0.07.

use moco_kernels::cpu::linear::linear_fwd;
use rayon::prelude::*;

pub const DEFAULT_K: usize = 20;
pub const DEFAULT_T: f32 = 0.07;

/// Rows of `x` (`[n, d]`) scaled to unit length (zero rows stay zero).
pub fn l2_normalised(x: &[f32], d: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(d.max(1)).for_each(|r| {
        let n = r.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
        }
    });
    y
}

/// Predicted class of every test row. `train`/`test` are `[n, d]` features (normalised here);
/// ties in similarity are broken by the lower training index, ties in votes by the lower class.
pub fn knn_predict(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    d: usize,
    classes: usize,
    k: usize,
    temperature: f32,
) -> Vec<u32> {
    let n_train = train_labels.len();
    assert_eq!(train.len(), n_train * d, "train features must be [n, d]");
    let train = l2_normalised(train, d);
    let test = l2_normalised(test, d);
    let n_test = test.len() / d.max(1);
    let k = k.min(n_train).max(1);
    let mut preds = Vec::with_capacity(n_test);
    // Similarities in blocks of test rows, so memory stays block x n_train.
    const BLOCK: usize = 256;
    let mut sim = vec![0.0f32; BLOCK * n_train];
    for start in (0..n_test).step_by(BLOCK) {
        let rows = BLOCK.min(n_test - start);
        let s = &mut sim[..rows * n_train];
        linear_fwd(rows, d, n_train, &test[start * d..(start + rows) * d], &train, s);
        let block: Vec<u32> = s
            .par_chunks(n_train)
            .map(|row| {
                let mut order: Vec<u32> = (0..n_train as u32).collect();
                let by_sim = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                order.select_nth_unstable_by(k - 1, by_sim);
                let mut votes = vec![0.0f64; classes];
                for &j in &order[..k] {
                    votes[train_labels[j as usize] as usize] +=
                        ((row[j as usize] / temperature) as f64).exp();
                }
                (0..classes).fold(0, |best, c| if votes[c] > votes[best] { c } else { best }) as u32
            })
            .collect();
        preds.extend(block);
    }
    preds
}

/// Fraction of `pred` equal to `labels`.
pub fn accuracy(pred: &[u32], labels: &[u32]) -> f32 {
    if labels.is_empty() {
        return 0.0;
    }
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f32 / labels.len() as f32
}

/// Top-1 accuracy of the weighted kNN classifier.
#[allow(clippy::too_many_arguments)]
pub fn knn_top1(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    classes: usize,
    k: usize,
    temperature: f32,
) -> f32 {
    accuracy(&knn_predict(train, train_labels, test, d, classes, k, temperature), test_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_vote_with_exponential_weights() {
        // Train: three class-0 points near +x, one class-1 point exactly on the query's axis.
        let train = [1.0, 0.3, 1.0, 0.35, 1.0, 0.4, 0.0, 1.0];
        let labels = [0, 0, 0, 1];
        let q = [0.05, 1.0];
        // k = 1: the nearest (class 1) wins.
        assert_eq!(knn_predict(&train, &labels, &q, 2, 2, 1, 0.07), vec![1]);
        // k = 4, T = 0.07: exp(1/0.07) from the class-1 point outweighs three points at cos ~ 0.4.
        assert_eq!(knn_predict(&train, &labels, &q, 2, 2, 4, 0.07), vec![1]);
        // A hot temperature makes the vote nearly a head count: class 0 wins 3 to 1.
        assert_eq!(knn_predict(&train, &labels, &q, 2, 2, 4, 100.0), vec![0]);
    }

    #[test]
    fn separable_clusters_are_classified_perfectly() {
        let mut train = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3u32 {
            for i in 0..10 {
                let mut v = vec![0.01 * i as f32; 3];
                v[c as usize] = 1.0;
                train.extend(v);
                labels.push(c);
            }
        }
        let test = [0.9, 0.1, 0.0, 0.0, 0.2, 0.8, 0.1, 1.0, 0.0];
        assert_eq!(knn_top1(&train, &labels, &test, &[0, 2, 1], 3, 3, 20, 0.07), 1.0);
    }
}
