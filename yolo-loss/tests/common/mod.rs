//! Helpers shared by the yolo-loss integration tests.
#![allow(dead_code)]

use candle_core::{Device, Tensor, Var};
use yolo_loss::LossParts;

/// NCHW `(n, c, h, w)` buffer to NHWC order.
pub fn nchw_to_nhwc(data: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = data[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    out
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

/// A tiny deterministic generator (xorshift) for test data, N(0,1)-ish via sums of uniforms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.uniform()).sum::<f32>() - 6.0
    }
}

/// One assigned slot of a synthetic y_true: image, row, column, anchor slot, box (x, y, w, h)
/// relative to the input, class.
pub struct Obj {
    pub b: usize,
    pub j: usize,
    pub i: usize,
    pub a: usize,
    pub xywh: [f32; 4],
    pub class: usize,
}

/// A Keras-layout y_true `(m, gh, gw, 3, 5+C)` with the given slots set.
pub fn y_true(m: usize, gh: usize, gw: usize, c: usize, objs: &[Obj]) -> Tensor {
    let k = 5 + c;
    let mut v = vec![0f32; m * gh * gw * 3 * k];
    for o in objs {
        let s = (((o.b * gh + o.j) * gw + o.i) * 3 + o.a) * k;
        v[s..s + 4].copy_from_slice(&o.xywh);
        v[s + 4] = 1.0;
        v[s + 5 + o.class] = 1.0;
    }
    Tensor::from_vec(v, (m, gh, gw, 3, k), &Device::Cpu).unwrap()
}

/// Random raw outputs as Vars, NCHW `(m, 3*(5+C), gh, gw)`, values `scale * N(0,1)`.
pub fn raw_vars(m: usize, c: usize, grids: &[(usize, usize)], scale: f32, seed: u64) -> Vec<Var> {
    let mut rng = Rng::new(seed);
    grids
        .iter()
        .map(|&(gh, gw)| {
            let n = m * 3 * (5 + c) * gh * gw;
            let v: Vec<f32> = (0..n).map(|_| scale * rng.normal()).collect();
            Var::from_vec(v, (m, 3 * (5 + c), gh, gw), &Device::Cpu).unwrap()
        })
        .collect()
}

/// All scalars of a LossParts in one Vec: total, then per layer xy, wh, confidence, class.
pub fn flat_parts(p: &LossParts) -> Vec<f32> {
    let mut v = vec![scalar(&p.total)];
    for l in 0..p.xy.len() {
        for t in [&p.xy[l], &p.wh[l], &p.confidence[l], &p.class[l]] {
            v.push(scalar(t));
        }
    }
    v
}

pub fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// keras-yolo3's YOLOv3 anchors (`model_data/yolo_anchors.txt`).
pub const YOLO_ANCHORS: [[f32; 2]; 9] = [
    [10., 13.],
    [16., 30.],
    [33., 23.],
    [30., 61.],
    [62., 45.],
    [59., 119.],
    [116., 90.],
    [156., 198.],
    [373., 326.],
];

/// keras-yolo3's tiny anchors (`tiny_yolo_anchors.txt`).
pub const TINY_ANCHORS: [[f32; 2]; 6] = [
    [10., 14.],
    [23., 27.],
    [37., 58.],
    [81., 82.],
    [135., 169.],
    [344., 319.],
];

/// An object at relative box `xywh` in image `b`, anchor slot `a`, on a (gh, gw) grid.
pub fn obj(b: usize, a: usize, gh: usize, gw: usize, xywh: [f32; 4], class: usize) -> Obj {
    let i = ((xywh[0] * gw as f32) as usize).min(gw - 1);
    let j = ((xywh[1] * gh as f32) as usize).min(gh - 1);
    Obj {
        b,
        j,
        i,
        a,
        xywh,
        class,
    }
}

/// The raw outputs behind `vars`.
pub fn tensors(vars: &[Var]) -> Vec<Tensor> {
    vars.iter().map(|v| v.as_tensor().clone()).collect()
}

/// The gradient of `parts.total` with respect to each of `vars`, flattened.
pub fn grads_of(parts: &LossParts, vars: &[Var]) -> Vec<Vec<f32>> {
    let g = parts.total.backward().unwrap();
    vars.iter()
        .map(|v| to_vec(g.get(v.as_tensor()).expect("gradient of every raw output")))
        .collect()
}
