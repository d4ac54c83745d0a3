//! keras-yolo3's train/validation split: `np.random.seed(10101); np.random.shuffle(lines)`, then
//! the last `int(len * 0.1)` lines are validation (`train_bottleneck.py`).
//!
//! NumPy's legacy `RandomState` is MT19937 seeded with `init_genrand(seed)`, and `shuffle` is a
//! Fisher-Yates from the end whose index `j in [0, i]` comes from `random_interval`: mask the
//! 32-bit output to the smallest all-ones mask covering `i` and reject values above `i`. Both are
//! reproduced here so the same annotation file gives the same split as keras-yolo3.

/// MT19937 as NumPy's legacy `RandomState` uses it.
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    /// `np.random.seed(seed)` for an integer seed (`init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1812433253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `np.random.random_sample()`: a 53-bit double from two outputs.
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }

    /// NumPy's legacy `random_interval(max)`: uniform in `[0, max]` by masked rejection.
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.shuffle(items)` for a 1-D sequence.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u32) as usize;
            items.swap(i, j);
        }
    }
}

/// Splits `items` as keras-yolo3 does: shuffle with `seed`, validation = the last
/// `floor(len * val_split)` items. Returns `(train, val)`.
pub fn split_train_val<T: Clone>(items: &[T], seed: u32, val_split: f64) -> (Vec<T>, Vec<T>) {
    let mut v = items.to_vec();
    Mt19937::new(seed).shuffle(&mut v);
    let num_val = ((v.len() as f64) * val_split).floor() as usize;
    let num_train = v.len() - num_val;
    let val = v.split_off(num_train);
    (v, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.random.seed(0); np.random.random_sample(2)` is `[0.5488135039273248, 0.7151893663724195]`
    /// and `np.random.seed(5489)`'s first raw output is 3499211612 (the MT19937 reference value).
    #[test]
    fn mt19937_matches_numpy_random_state() {
        let mut r = Mt19937::new(0);
        assert_eq!(r.next_f64(), 0.5488135039273248);
        assert_eq!(r.next_f64(), 0.7151893663724195);
        assert_eq!(Mt19937::new(5489).next_u32(), 3499211612);
    }

    #[test]
    fn split_is_deterministic_permutation_with_last_ten_percent_validation() {
        let items: Vec<usize> = (0..25).collect();
        let (t, v) = split_train_val(&items, 10101, 0.1);
        assert_eq!(t.len(), 23);
        assert_eq!(v.len(), 2);
        let mut all: Vec<usize> = t.iter().chain(v.iter()).copied().collect();
        assert_ne!(all, items, "shuffled");
        all.sort();
        assert_eq!(all, items);
        assert_eq!(split_train_val(&items, 10101, 0.1), (t, v));
    }

    #[test]
    fn interval_stays_in_range() {
        let mut r = Mt19937::new(7);
        for max in [0u32, 1, 2, 5, 100, 1000] {
            for _ in 0..200 {
                assert!(r.interval(max) <= max);
            }
        }
    }
}
