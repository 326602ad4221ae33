//! Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p
//! from a seeded generator (the same seed, weights and prompt give the same text).

use super::EngineError;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// 0 is greedy (the most likely token, the lowest id on a tie); above 0 the logits are
    /// divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };

    pub fn validate(&self) -> Result<(), EngineError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(EngineError::Sampling(format!(
                "temperature must be a finite number ≥ 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::Sampling(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::GREEDY
    }
}

/// splitmix64: small, fast, and the same numbers on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x7061_7a61_725f_696e) // "pazar_in"
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest logit, the lowest on a tie (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() && !l.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// The next token under `s`. `scratch` is reused between calls.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng, scratch: &mut Vec<(u32, f32)>) -> u32 {
    if s.temperature == 0.0 || s.top_k == 1 {
        return argmax(logits);
    }
    scratch.clear();
    scratch.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l)),
    );
    if scratch.is_empty() {
        return 0;
    }
    // Most likely first; ties by id, so the order (and so the draw) is fixed.
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if s.top_k > 0 && s.top_k < scratch.len() {
        scratch.select_nth_unstable_by(s.top_k - 1, by_logit);
        scratch.truncate(s.top_k);
    }
    let cut_by_p = s.top_p < 1.0;
    if cut_by_p {
        scratch.sort_unstable_by(by_logit);
    }
    let max = scratch.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
    let inv_t = 1.0 / f64::from(s.temperature);
    let mut total = 0.0f64;
    for c in scratch.iter_mut() {
        let p = ((f64::from(c.1) - f64::from(max)) * inv_t).exp();
        c.1 = p as f32;
        total += p;
    }
    if cut_by_p {
        let want = f64::from(s.top_p) * total;
        let mut acc = 0.0f64;
        let mut keep = scratch.len();
        for (i, c) in scratch.iter().enumerate() {
            acc += f64::from(c.1);
            if acc >= want {
                keep = i + 1;
                break;
            }
        }
        scratch.truncate(keep);
        total = acc.min(total);
    }
    let mut u = rng.uniform() * total;
    for c in scratch.iter() {
        u -= f64::from(c.1);
        if u < 0.0 {
            return c.0;
        }
    }
    scratch.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit_and_the_lowest_id_on_a_tie() {
        assert_eq!(argmax(&[0.1, 3.0, -1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy_and_a_seed_repeats_its_draws() {
        let logits = [0.3f32, 2.0, 1.9, -4.0];
        let mut scratch = Vec::new();
        let mut rng = Rng::new(1);
        let k1 = Sampling {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        };
        assert_eq!(sample(&logits, &k1, &mut rng, &mut scratch), 1);
        let p = Sampling {
            top_k: 0,
            top_p: 1e-6,
            ..k1
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &p, &mut rng, &mut scratch), 1);
        }
        let free = Sampling {
            top_k: 0,
            top_p: 1.0,
            ..k1
        };
        let draw = |seed| {
            let mut r = Rng::new(seed);
            let mut sc = Vec::new();
            (0..50)
                .map(|_| sample(&logits, &free, &mut r, &mut sc))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Top-k 2 never picks the two least likely tokens.
        let k2 = Sampling { top_k: 2, ..free };
        assert!((0..200)
            .all(|_| sample(&logits, &k2, &mut rng, &mut scratch) <= 2
                && sample(&logits, &k2, &mut rng, &mut scratch) != 0));
    }
}
