//! The convolution with bf16 tile products on (AMX) against the same convolution in f32: forward
//! and both gradients, on the im2col path (1x1, 3x3 strided, the deep 3x3) and the Winograd path; products too narrow for the tiles stay exactly f32.
//! The switch is process-wide, so this file is its own test binary and its one test walks every
//! case in turn.

use candle_core::{Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_kernels as ops;

fn rand_tensor(rng: &mut StdRng, dims: &[usize]) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// `‖a - b‖ / ‖b‖`.
fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let n = b.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((d / n).sqrt())
}

/// `y = conv(x, w)`, `sum(y * r)`'s gradients with respect to `x` and `w`.
fn run(x: &Tensor, w: &Tensor, r: &Tensor, s: usize, p: usize) -> Result<[Tensor; 3]> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let y = ops::conv2d(xv.as_tensor(), wv.as_tensor(), s, p)?;
    let g = (&y * r)?.sum_all()?.backward()?;
    let gx = g.get(xv.as_tensor()).expect("x gradient").clone();
    let gw = g.get(wv.as_tensor()).expect("w gradient").clone();
    Ok([y, gx, gw])
}

#[test]
#[cfg_attr(no_amx, ignore = "this CPU has no AMX-BF16")]
fn tile_products_match_f32_within_bf16_rounding() -> Result<()> {
    assert!(ops::amx_bf16_available());
    let mut rng = StdRng::seed_from_u64(3);
    // (batch, c_in, c_out, h, w, kernel, stride, padding)
    // Every product here has at least 128 result rows (output channels forward and for the
    // kernel gradient, input channels x 9 or x 1 for the input gradient), so all take the tiles;
    // the last case's are too narrow and stay f32.
    let cases = [
        (2, 128, 128, 26, 26, 1, 1, 0),
        (2, 64, 128, 52, 52, 3, 2, 1),
        (2, 256, 512, 13, 13, 3, 1, 1),
        (1, 128, 128, 40, 40, 3, 1, 1),
        (3, 128, 160, 33, 31, 3, 1, 1),
        (2, 16, 32, 52, 52, 3, 2, 1),
    ];
    for (b, ci, co, h, w, k, s, p) in cases {
        let narrow = co < 128;
        let x = rand_tensor(&mut rng, &[b, ci, h, w])?;
        let wt = rand_tensor(&mut rng, &[co, ci, k, k])?;
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let r = rand_tensor(&mut rng, &[b, co, oh, ow])?;
        let want = run(&x, &wt, &r, s, p)?;
        let got = {
            let _tiles = ops::bf16_matmul_scope(true);
            assert!(ops::bf16_matmul());
            run(&x, &wt, &r, s, p)?
        };
        assert!(!ops::bf16_matmul(), "the scope restores f32 products");
        let case = format!("b{b} {ci}->{co} {h}x{w} k{k} s{s}");
        for (name, g, f) in [
            ("output", 0, 0),
            ("input gradient", 1, 1),
            ("kernel gradient", 2, 2),
        ] {
            let e = rel_l2(&got[g], &want[f])?;
            eprintln!("{case} {name}: relative L2 error {e:.2e}");
            if narrow {
                assert_eq!(
                    e, 0.0,
                    "{case} {name}: too narrow for the tiles, f32 as before"
                );
                continue;
            }
            // bf16 keeps 8 significant bits (relative rounding up to 2^-9 = 2e-3 per operand);
            // over many products of random signs the errors partly cancel.
            assert!(e < 8e-3, "{case} {name}: {e:e}");
            assert!(e > 1e-6, "{case} {name}: no bf16 rounding seen ({e:e})");
        }
    }
    Ok(())
}
