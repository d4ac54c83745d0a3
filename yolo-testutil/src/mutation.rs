//! Byte-level mutations of valid files for the parsers' property tests: bytes deleted, inserted
//! or replaced, spans duplicated, and "interesting" tokens (each test's own list, e.g. huge or
//! negative numbers) spliced in. A parser fed the result must return `Ok` or an error, never panic.

use proptest::prelude::*;

/// One edit of a byte string. Positions wrap around the string's current length when applied.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Removes up to `.1` bytes from position `.0`.
    Delete(usize, usize),
    /// Inserts the byte `.1` at position `.0`.
    Insert(usize, u8),
    /// Overwrites the byte at position `.0` with `.1`.
    Replace(usize, u8),
    /// Repeats the (up to) `.1` bytes from position `.0` right after themselves.
    Duplicate(usize, usize),
    /// Inserts token number `.1` of the caller's token list at position `.0`.
    Splice(usize, usize),
}

/// One mutation; `tokens` is the length of the token list that [`mutate`] will be given.
pub fn mutation(tokens: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (any::<usize>(), 0..tokens).prop_map(|(p, t)| Mutation::Splice(p, t)),
    ]
}

/// One to seven mutations, applied in order by [`mutate`].
pub fn mutations(tokens: usize) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(tokens), 1..8)
}

/// `base` with the mutations applied in order (positions wrap around the current length);
/// `tokens` is the list `Splice` indexes, and `limit` keeps the mutations inside the first `limit`
/// bytes (e.g. a header), when given.
pub fn mutate(base: &[u8], ms: &[Mutation], tokens: &[&str], limit: Option<usize>) -> Vec<u8> {
    let mut v = base.to_vec();
    for m in ms {
        let len = limit.unwrap_or(v.len()).min(v.len()).max(1);
        match *m {
            Mutation::Delete(p, n) => {
                let p = p % len;
                let end = (p + n).min(v.len());
                if p < end {
                    v.drain(p..end);
                }
            }
            Mutation::Insert(p, b) => v.insert(p % (len + 1).min(v.len() + 1), b),
            Mutation::Replace(p, b) => {
                if !v.is_empty() {
                    v[p % len] = b;
                }
            }
            Mutation::Duplicate(p, n) => {
                let p = p % len;
                let end = (p + n).min(v.len());
                let chunk = v[p.min(end)..end].to_vec();
                v.splice(end..end, chunk);
            }
            Mutation::Splice(p, t) => {
                let p = p % (len + 1).min(v.len() + 1);
                v.splice(p..p, tokens[t].bytes());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_wrap_and_stay_inside_the_limit() {
        let ms = [
            Mutation::Replace(7, b'x'),
            Mutation::Splice(0, 1),
            Mutation::Delete(100, 1),
        ];
        // Replace at 7 % 3 = 1 (axc), splice "bb" at 0 (bbaxc), delete at 100 % 5 = 0 (baxc).
        assert_eq!(mutate(b"abc", &ms, &["a", "bb"], None), b"baxc".to_vec());
        // Inside the first byte only: every position becomes 0.
        let v = mutate(b"abc", &[Mutation::Replace(5, b'z')], &[], Some(1));
        assert_eq!(v, b"zbc".to_vec());
    }
}
