//! The on-disk bottleneck cache of stage 0: the frozen network's feature maps for every image,
//! computed once in inference mode on letterboxed images, read back through a memory map.
//!
//! File layout (little endian):
//!
//! ```text
//! b"YOLOBNK1" | u64 header_len | header (JSON, CacheHeader) | zero pad to 64 | records
//! ```
//!
//! Every record has the same size: the maps `shapes[k] = [c, h, w]` one after another, each in
//! CHW order, as f32 or f16. Record `i` belongs to `entries[i]` (image path and letterboxed boxes,
//! so targets can be rebuilt without touching the images). The header's `fingerprint` is a SHA-256
//! of the frozen weights, the annotation lines, input shape, anchors and dtype: a cache is reused
//! only when it matches, unlike keras-yolo3's `bottlenecks.npz`, which is reused whenever it exists.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::temp_path;
use crate::config::CacheDtype;
use crate::error::{Result, TrainError};

const MAGIC: &[u8; 8] = b"YOLOBNK1";
const ALIGN: usize = 64;

/// One cached image: its path and its boxes after the letterbox (`[x_min, y_min, x_max, y_max,
/// class]` in input pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Image path from the annotation line.
    pub path: String,
    /// Letterboxed boxes.
    pub boxes: Vec<[f32; 5]>,
}

/// The JSON header of a cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHeader {
    /// Hex SHA-256 content key (see [`Fingerprint`]).
    pub fingerprint: String,
    /// Record dtype.
    pub dtype: CacheDtype,
    /// `[c, h, w]` of each cached map, in network order.
    pub shapes: Vec<[usize; 3]>,
    /// One entry per record.
    pub entries: Vec<CacheEntry>,
}

impl CacheHeader {
    /// Values per record.
    pub fn record_len(&self) -> usize {
        self.shapes.iter().map(|s| s[0] * s[1] * s[2]).sum()
    }

    fn elem_size(&self) -> usize {
        match self.dtype {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
        }
    }

    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        self.record_len() * self.elem_size()
    }
}

/// Builds the cache key from labelled pieces, so that changing any one changes the key.
pub struct Fingerprint(Sha256);

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    /// An empty key, tagged with the format version.
    pub fn new() -> Self {
        let mut h = Sha256::new();
        h.update(MAGIC);
        Fingerprint(h)
    }

    /// Adds a labelled byte string.
    pub fn bytes(&mut self, label: &str, data: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    /// Adds a labelled tensor (shape, dtype and values).
    pub fn tensor(&mut self, label: &str, t: &Tensor) -> Result<&mut Self> {
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut b = Vec::with_capacity(v.len() * 4 + 64);
        for d in t.dims() {
            b.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        b.extend_from_slice(format!("{:?}", t.dtype()).as_bytes());
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        Ok(self.bytes(label, &b))
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Streams records into a new cache file; the file appears (atomically) only on [`finish`].
///
/// [`finish`]: CacheWriter::finish
pub struct CacheWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    header: CacheHeader,
    written: usize,
}

impl CacheWriter {
    /// Starts writing `path` with `header` (which already lists every entry).
    pub fn create(path: &Path, header: CacheHeader) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
        }
        let tmp = temp_path(path);
        let f = File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        let json =
            serde_json::to_vec(&header).map_err(|e| TrainError::format(path, e.to_string()))?;
        let data_start = (16 + json.len()).div_ceil(ALIGN) * ALIGN;
        let io = |e| TrainError::io(&tmp, e);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&json).map_err(io)?;
        out.write_all(&vec![0u8; data_start - 16 - json.len()])
            .map_err(io)?;
        Ok(CacheWriter {
            path: path.to_path_buf(),
            tmp,
            out,
            header,
            written: 0,
        })
    }

    /// Appends one record: the maps of one image, `(c, h, w)` tensors matching the header shapes.
    pub fn push(&mut self, maps: &[Tensor]) -> Result<()> {
        if maps.len() != self.header.shapes.len() {
            return Err(TrainError::format(
                &self.path,
                format!(
                    "record has {} maps, header {}",
                    maps.len(),
                    self.header.shapes.len()
                ),
            ));
        }
        if self.written >= self.header.entries.len() {
            return Err(TrainError::format(&self.path, "more records than entries"));
        }
        for (m, s) in maps.iter().zip(&self.header.shapes) {
            if m.dims() != s {
                return Err(TrainError::format(
                    &self.path,
                    format!("map shape {:?}, header {:?}", m.dims(), s),
                ));
            }
            let v: Vec<f32> = m
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let mut buf = Vec::with_capacity(v.len() * 4);
            match self.header.dtype {
                CacheDtype::F32 => v
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
                CacheDtype::F16 => v
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&f16::from_f32(*x).to_le_bytes())),
            }
            self.out
                .write_all(&buf)
                .map_err(|e| TrainError::io(&self.tmp, e))?;
        }
        self.written += 1;
        Ok(())
    }

    /// Deletes the unfinished temporary file (a failed or interrupted build leaves nothing).
    pub fn abandon(self) {
        drop(self.out);
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// Flushes, fsyncs and renames the file into place; every entry must have its record.
    pub fn finish(self) -> Result<()> {
        if self.written != self.header.entries.len() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(TrainError::format(
                &self.path,
                format!(
                    "{} records written for {} entries",
                    self.written,
                    self.header.entries.len()
                ),
            ));
        }
        let f = self
            .out
            .into_inner()
            .map_err(|e| TrainError::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| TrainError::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| TrainError::io(&self.path, e))
    }
}

/// A cache file opened through a memory map.
pub struct BottleneckCache {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header: CacheHeader,
    data_start: usize,
}

impl BottleneckCache {
    /// Opens and validates `path` (magic, header, file size).
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| TrainError::io(path, e))?;
        // SAFETY: the file is written once to a temporary name and renamed into place; nothing
        // modifies it while mapped (a rebuild writes a new file and renames over it).
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| TrainError::io(path, e))?;
        if mmap.len() < 16 || &mmap[..8] != MAGIC {
            return Err(TrainError::format(
                path,
                "not a bottleneck cache (bad magic)",
            ));
        }
        let hlen = u64::from_le_bytes(mmap[8..16].try_into().unwrap_or([0; 8])) as usize;
        if 16 + hlen > mmap.len() {
            return Err(TrainError::format(path, "truncated header"));
        }
        let header: CacheHeader = serde_json::from_slice(&mmap[16..16 + hlen])
            .map_err(|e| TrainError::format(path, format!("header: {e}")))?;
        let data_start = (16 + hlen).div_ceil(ALIGN) * ALIGN;
        let need = data_start + header.record_bytes() * header.entries.len();
        if mmap.len() != need {
            return Err(TrainError::format(
                path,
                format!("size {} bytes, header implies {need}", mmap.len()),
            ));
        }
        Ok(BottleneckCache {
            path: path.to_path_buf(),
            mmap,
            header,
            data_start,
        })
    }

    /// Opens `path` only if it exists, is valid and carries `fingerprint`.
    pub fn open_matching(path: &Path, fingerprint: &str) -> Option<Self> {
        let c = Self::open(path).ok()?;
        (c.header.fingerprint == fingerprint).then_some(c)
    }

    /// The header.
    pub fn header(&self) -> &CacheHeader {
        &self.header
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.header.entries.len()
    }

    /// True when the cache has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `i`'s maps as f32 vectors (CHW).
    pub fn record(&self, i: usize) -> Result<Vec<Vec<f32>>> {
        if i >= self.len() {
            return Err(TrainError::format(
                &self.path,
                format!("record {i} out of {}", self.len()),
            ));
        }
        let rb = self.header.record_bytes();
        let mut off = self.data_start + i * rb;
        let mut out = Vec::with_capacity(self.header.shapes.len());
        for s in &self.header.shapes {
            let n = s[0] * s[1] * s[2];
            let v: Vec<f32> = match self.header.dtype {
                CacheDtype::F32 => self.mmap[off..off + 4 * n]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                CacheDtype::F16 => self.mmap[off..off + 2 * n]
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            };
            off += n * self.header.elem_size();
            out.push(v);
        }
        Ok(out)
    }

    /// The maps of records `indices`, stacked into `(B, c, h, w)` f32 tensors on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Vec<Tensor>> {
        let k = self.header.shapes.len();
        let mut per_map: Vec<Vec<f32>> = self
            .header
            .shapes
            .iter()
            .map(|s| Vec::with_capacity(indices.len() * s[0] * s[1] * s[2]))
            .collect();
        for &i in indices {
            for (dst, src) in per_map.iter_mut().zip(self.record(i)?) {
                dst.extend_from_slice(&src);
            }
        }
        let mut out = Vec::with_capacity(k);
        for (data, s) in per_map.into_iter().zip(&self.header.shapes) {
            out.push(Tensor::from_vec(
                data,
                (indices.len(), s[0], s[1], s[2]),
                device,
            )?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dtype: CacheDtype, n: usize) -> CacheHeader {
        CacheHeader {
            fingerprint: "abc".into(),
            dtype,
            shapes: vec![[2, 2, 2], [1, 4, 4]],
            entries: (0..n)
                .map(|i| CacheEntry {
                    path: format!("img{i}.jpg"),
                    boxes: vec![[1.0, 2.0, 3.0, 4.0, i as f32]],
                })
                .collect(),
        }
    }

    fn maps(i: usize) -> Vec<Tensor> {
        let a: Vec<f32> = (0..8).map(|k| (i * 100 + k) as f32 * 0.5).collect();
        let b: Vec<f32> = (0..16).map(|k| -((i * 100 + k) as f32) * 0.25).collect();
        vec![
            Tensor::from_vec(a, (2, 2, 2), &Device::Cpu).unwrap(),
            Tensor::from_vec(b, (1, 4, 4), &Device::Cpu).unwrap(),
        ]
    }

    #[test]
    fn cache_round_trips_records_and_batches() {
        for dtype in [CacheDtype::F32, CacheDtype::F16] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("bottleneck.cache");
            let mut w = CacheWriter::create(&p, header(dtype, 3)).unwrap();
            assert!(!p.exists(), "appears only when finished");
            for i in 0..3 {
                w.push(&maps(i)).unwrap();
            }
            w.finish().unwrap();
            let c = BottleneckCache::open(&p).unwrap();
            assert_eq!(c.len(), 3);
            assert_eq!(c.header().entries[2].boxes[0][4], 2.0);
            let r = c.record(1).unwrap();
            assert_eq!(
                r[0],
                maps(1)[0].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert_eq!(
                r[1],
                maps(1)[1].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            let b = c.batch(&[2, 0], &Device::Cpu).unwrap();
            assert_eq!(b[0].dims(), &[2, 2, 2, 2]);
            assert_eq!(b[1].dims(), &[2, 1, 4, 4]);
            assert_eq!(
                b[1].get(0)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                maps(2)[1].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert!(BottleneckCache::open_matching(&p, "abc").is_some());
            assert!(BottleneckCache::open_matching(&p, "abd").is_none());
        }
    }

    #[test]
    fn incomplete_or_corrupt_caches_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.cache");
        let mut w = CacheWriter::create(&p, header(CacheDtype::F32, 2)).unwrap();
        w.push(&maps(0)).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("1 records written for 2"));
        assert!(!p.exists());
        let mut w = CacheWriter::create(&p, header(CacheDtype::F32, 1)).unwrap();
        w.push(&maps(0)).unwrap();
        w.finish().unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 4).unwrap();
        let e = BottleneckCache::open(&p).err().unwrap().to_string();
        assert!(e.contains("header implies"), "{e}");
        std::fs::write(&p, b"garbage!garbage!").unwrap();
        assert!(BottleneckCache::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains("bad magic"));
    }

    #[test]
    fn fingerprint_changes_with_any_piece() {
        let t = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let key = |a: &[u8], t: &Tensor| {
            let mut f = Fingerprint::new();
            f.bytes("lines", a).tensor("w", t).unwrap();
            f.finish()
        };
        let k = key(b"x", &t);
        assert_eq!(k.len(), 64);
        assert_eq!(k, key(b"x", &t));
        assert_ne!(k, key(b"y", &t));
        assert_ne!(
            k,
            key(b"x", &Tensor::new(&[1.0f32, 2.5], &Device::Cpu).unwrap())
        );
    }
}
