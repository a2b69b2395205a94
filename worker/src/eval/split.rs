//! The deterministic train/test split of a labelled evaluation set: within each class, in
//! dataset order, every `test_every`-th sample goes to the test side (stratified, no
//! randomness, the same on every machine).

/// (train indices, test indices) into `labels`. Classes with a single sample stay in train.
pub fn split(labels: &[u32], test_every: usize) -> (Vec<usize>, Vec<usize>) {
    let every = test_every.max(2);
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut seen = vec![0usize; classes];
    let counts = labels.iter().fold(vec![0usize; classes], |mut c, &l| {
        c[l as usize] += 1;
        c
    });
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &l) in labels.iter().enumerate() {
        let k = &mut seen[l as usize];
        *k += 1;
        if counts[l as usize] > 1 && (*k).is_multiple_of(every) {
            test.push(i);
        } else {
            train.push(i);
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_and_deterministic() {
        let labels: Vec<u32> = (0..60).map(|i| (i % 3) as u32).chain([7]).collect();
        let (train, test) = split(&labels, 5);
        assert_eq!(train.len() + test.len(), labels.len());
        for c in 0..3 {
            assert_eq!(test.iter().filter(|&&i| labels[i] == c).count(), 4);
        }
        assert!(train.contains(&60), "a lone class stays in train");
        assert_eq!(split(&labels, 5), (train, test));
    }
}
