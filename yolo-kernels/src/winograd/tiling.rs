//! How a convolution's tiles are cut into blocks of whole tile rows, and the output pointer the
//! blocks share. Nothing here depends on the tile size: it only sees the output tile side `m`
//! and the number of transformed planes.

/// Target size of one block's transformed input, in floats (a few MB, so that a block's
/// transform, GEMMs and inverse transform stay in the outer caches).
const BLOCK_FLOATS: usize = 1 << 19;

/// How the tiles of a `b x h x w` map are cut into blocks of whole tile rows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiling {
    /// Tile rows and columns per image: `ceil(h / m)`, `ceil(w / m)` for output tiles of `m`.
    pub(super) th: usize,
    pub(super) tw: usize,
    /// Tile rows per block (the last block may have fewer).
    rows: usize,
    /// Total tile rows over the batch.
    total_rows: usize,
}

impl Tiling {
    /// Blocks of about [`BLOCK_FLOATS`] transformed values but at least `min_tiles` tiles (the
    /// GEMMs' inner size; thinner blocks re-read the transformed kernel too often), in a multiple
    /// of the thread count for balance when there are enough tile rows.
    pub(super) fn new(
        (m, planes): (usize, usize),
        (b, h, w): (usize, usize, usize),
        widest: usize,
        min_tiles: usize,
    ) -> Tiling {
        let (th, tw) = (h.div_ceil(m), w.div_ceil(m));
        let total_rows = b * th;
        let threads = rayon::current_num_threads().max(1);
        let tiles = (BLOCK_FLOATS / (planes * widest.max(1))).max(min_tiles);
        let max_rows = tiles.div_ceil(tw.max(1)).max(1);
        let blocks = total_rows.div_ceil(max_rows).div_ceil(threads) * threads;
        let rows = total_rows.div_ceil(blocks.min(total_rows).max(1)).max(1);
        Tiling {
            th,
            tw,
            rows,
            total_rows,
        }
    }

    /// Number of blocks.
    pub(super) fn blocks(&self) -> usize {
        self.total_rows.div_ceil(self.rows)
    }

    /// Global tile rows `r0..r1` of block `i`.
    pub(super) fn block(&self, i: usize) -> (usize, usize) {
        let r0 = i * self.rows;
        (r0, (r0 + self.rows).min(self.total_rows))
    }
}

/// A raw output pointer shared by the blocks of one call, which write disjoint tile rows.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32, pub(super) usize);
// SAFETY: only used inside one `output_transform` call per block, and blocks write disjoint rows.
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: shared references only hand the pointer to blocks with disjoint rows.
unsafe impl Sync for OutPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiling_covers_every_tile_row_once() {
        for &(b, h, w, c) in &[
            (4, 13, 13, 1024),
            (1, 416, 416, 32),
            (3, 7, 5, 8),
            (1, 1, 1, 1),
        ] {
            let t = Tiling::new((2, 16), (b, h, w), c, 64);
            let mut next = 0;
            for i in 0..t.blocks() {
                let (r0, r1) = t.block(i);
                assert_eq!(r0, next);
                assert!(r1 > r0);
                next = r1;
            }
            assert_eq!(next, b * h.div_ceil(2));
        }
    }
}
