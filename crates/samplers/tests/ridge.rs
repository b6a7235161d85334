//! The ridge move on a thin curved ridge in 16 dimensions, against plain differential
//! evolution: both must keep the target's moments (exact maths), and the ridge move must
//! decorrelate the ridge coordinate several times faster (measured autocorrelation time).

use popcosmos_api::{Device, HostRng, RandomSource, Result, Tensor};
use popcosmos_samplers::{
    DifferentialEvolutionMove, EnsembleSampler, Move, RidgeMove, RunConfig, autocorr_time, sample,
};

const DIM: usize = 16;
/// Independent replicates of the target; their spread gives the Monte Carlo errors.
const GALAXIES: usize = 6;
const WALKERS: usize = 64;
const STEPS: usize = 2000;
/// Width of the ridge across its curve.
const WIDTH: f64 = 0.05;

/// Curvature of coordinate i ≥ 1 along the ridge.
fn bend(i: usize) -> f64 {
    0.4 + 0.05 * i as f64
}

/// x₀ ~ 𝒩(0, 1), x_i | x₀ ~ 𝒩(b_i (x₀² − 1), WIDTH²): a parabolic ridge whose x₀ marginal is
/// exactly standard normal and whose other coordinates have mean 0.
fn log_density(x: &Tensor) -> Result<Tensor> {
    let x0 = x.narrow(2, 0, 1)?;
    let b = Tensor::from_vec(
        (1..DIM).map(|i| bend(i) as f32).collect::<Vec<_>>(),
        (1, 1, DIM - 1),
        x.device(),
    )?;
    let centre = x0.sqr()?.affine(1.0, -1.0)?.broadcast_mul(&b)?;
    let r = ((x.narrow(2, 1, DIM - 1)? - centre)? / WIDTH)?;
    let lp = ((x0.sqr()?.squeeze(2)? + r.sqr()?.sum(2)?)? * -0.5)?;
    Ok(lp)
}

fn normals(rng: &mut HostRng, n: usize) -> Vec<f64> {
    let t = rng.normal(&(n,).into(), &Device::Cpu).unwrap();
    t.to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Exact draws from the target, `[WALKERS, GALAXIES, DIM]`.
fn exact_draws(rng: &mut HostRng) -> Tensor {
    let z = normals(rng, WALKERS * GALAXIES * DIM);
    let mut v = Vec::with_capacity(WALKERS * GALAXIES * DIM);
    for row in z.chunks(DIM) {
        let x0 = row[0];
        v.push(x0 as f32);
        for (i, noise) in row.iter().enumerate().skip(1) {
            v.push((bend(i) * (x0 * x0 - 1.0) + WIDTH * noise) as f32);
        }
    }
    Tensor::from_vec(v, (WALKERS, GALAXIES, DIM), &Device::Cpu).unwrap()
}

/// Per galaxy: (mean of x₀, variance of x₀, τ of x₀) after `STEPS` steps of `mv`.
fn run(mv: Box<dyn Move>, seed: u64) -> Vec<(f64, f64, f64)> {
    let mut rng = HostRng::seed_from_u64(seed);
    let init = exact_draws(&mut rng);
    let kernel = EnsembleSampler::new(vec![(mv, 1.0)]).unwrap();
    let config = RunConfig {
        n_steps: STEPS,
        burn_in: 0,
        thin: 1,
    };
    let chain = sample(&kernel, init, &log_density, &mut rng, &config, None).unwrap();
    (0..GALAXIES)
        .map(|g| {
            // [walkers][draws] of x₀ for this galaxy.
            let series: Vec<f64> = (0..WALKERS)
                .flat_map(|w| (0..STEPS).map(move |s| (s, w)))
                .map(|(s, w)| chain.samples[((s * WALKERS + w) * GALAXIES + g) * DIM] as f64)
                .collect();
            let n = series.len() as f64;
            let mean = series.iter().sum::<f64>() / n;
            let var = series.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, var, autocorr_time(&series, WALKERS, 5.0))
        })
        .collect()
}

/// Mean over replicates and its standard error.
fn mean_and_error(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = v.collect();
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, sd / n.sqrt())
}

#[test]
fn ridge_move_keeps_a_curved_ridge_and_mixes_along_it_faster_than_de() {
    let ridge = run(Box::new(RidgeMove::new(0, 2).unwrap()), 12);
    let de = run(Box::new(DifferentialEvolutionMove::default()), 12);
    for (name, r) in [("ridge", &ridge), ("DE", &de)] {
        let (mean, mean_err) = mean_and_error(r.iter().map(|x| x.0));
        let (var, var_err) = mean_and_error(r.iter().map(|x| x.1));
        let (tau, _) = mean_and_error(r.iter().map(|x| x.2));
        eprintln!(
            "{name}: mean {mean:.3} ± {mean_err:.3}, var {var:.3} ± {var_err:.3}, τ {tau:.1}"
        );
    }
    // The target's x₀ marginal is exactly 𝒩(0, 1); errors from the replicates' spread.
    let (mean, mean_err) = mean_and_error(ridge.iter().map(|x| x.0));
    let (var, var_err) = mean_and_error(ridge.iter().map(|x| x.1));
    assert!(
        mean.abs() < 4.0 * mean_err + 0.01,
        "ridge mean {mean} ± {mean_err}"
    );
    assert!(
        (var - 1.0).abs() < 4.0 * var_err + 0.01,
        "ridge variance {var} ± {var_err}"
    );
    for (r, d) in ridge.iter().zip(&de) {
        assert!(r.2 * 2.0 < d.2, "ridge τ {} not 2× below DE's {}", r.2, d.2);
    }
}

#[test]
fn ridge_move_refuses_a_linear_curve_and_an_axis_outside_the_target() {
    assert!(RidgeMove::new(0, 1).is_err());
    assert!(RidgeMove::new(0, RidgeMove::MAX_DEGREE + 1).is_err());
    let mv = RidgeMove::new(DIM, 2).unwrap();
    let mut rng = HostRng::seed_from_u64(1);
    let x = exact_draws(&mut rng);
    let err = mv
        .propose(
            &mut rng,
            &x.narrow(0, 0, 32).unwrap(),
            &x.narrow(0, 32, 32).unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("axis 16"), "{err}");
}

#[test]
fn ridge_proposal_is_de_in_the_straightened_coordinates() {
    // On an exact parabola x₁ = x₀² (no width) the fitted curve is exact, so every proposal
    // lands back on the parabola, where plain DE leaves it.
    let mut rng = HostRng::seed_from_u64(5);
    let n = 32;
    let mut v = Vec::new();
    for x0 in normals(&mut rng, 2 * n) {
        v.extend([x0 as f32, (x0 * x0) as f32]);
    }
    let x = Tensor::from_vec(v, (2 * n, 1, 2), &Device::Cpu).unwrap();
    let (active, complement) = (x.narrow(0, 0, n).unwrap(), x.narrow(0, n, n).unwrap());
    let p = RidgeMove::new(0, 2)
        .unwrap()
        .propose(&mut rng, &active, &complement)
        .unwrap();
    let y = p.position.to_vec3::<f32>().unwrap();
    // Beyond the complement's range of x₀ the curve is held flat (clamped), so only moves
    // between points inside it stay exactly on the parabola.
    let c0: Vec<f32> = complement
        .to_vec3::<f32>()
        .unwrap()
        .iter()
        .map(|r| r[0][0])
        .collect();
    let lo = c0.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let hi = c0.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let inside = |v: f64| (lo..=hi).contains(&v);
    let start = active.to_vec3::<f32>().unwrap();
    for (row, from) in y.iter().zip(&start) {
        let (y0, y1) = (row[0][0] as f64, row[0][1] as f64);
        if !inside(y0) || !inside(from[0][0] as f64) {
            continue;
        }
        assert!((y1 - y0 * y0).abs() < 1e-3 * (1.0 + y0 * y0), "{y0} {y1}");
    }
    let moved = y
        .iter()
        .zip(active.to_vec3::<f32>().unwrap())
        .filter(|(a, b)| (a[0][0] - b[0][0]).abs() > 1e-4)
        .count();
    assert!(moved > n / 2);
    assert_eq!(
        p.log_factor.to_vec2::<f32>().unwrap(),
        vec![vec![0.0f32]; n]
    );
}
