//! The griddy-Gibbs kernel on targets with known answers: it leaves a correlated Gaussian
//! exactly invariant however coarse its grid (the Metropolis–Hastings test corrects the
//! interpolated proposal), moves far along the ridge when sheared by the ridge slopes, and
//! weights two modes of different widths correctly in one update.

use popcosmos_api::{DType, Device, HostRng, RandomSource, Result, Tensor};
use popcosmos_samplers::{GridChart, GridState, grid_gibbs_update, ridge_slopes};

/// Identity chart over a density given as a host function of one row.
struct Chart {
    grid: Vec<f64>,
    density: fn(&[f64]) -> (f64, f64),
}

impl Chart {
    fn eval(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, a, d) = x.dims3()?;
        let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let (lp, ll): (Vec<f32>, Vec<f32>) = v
            .chunks_exact(d)
            .map(|row| {
                let (p, l) = (self.density)(row);
                (p as f32, l as f32)
            })
            .unzip();
        Ok((
            Tensor::from_vec(lp, (n, a), &Device::Cpu)?,
            Tensor::from_vec(ll, (n, a), &Device::Cpu)?,
        ))
    }
}

impl GridChart for Chart {
    fn to_chart(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, a, _) = x.dims3()?;
        Ok((x.clone(), Tensor::zeros((n, a), DType::F32, &Device::Cpu)?))
    }
    fn from_chart(&self, chi: &Tensor) -> Result<Tensor> {
        Ok(chi.clone())
    }
    fn log_prior_and_like(&self, chi: &Tensor, _galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        self.eval(chi)
    }
    fn axis(&self) -> usize {
        0
    }
    fn grid(&self) -> &[f64] {
        &self.grid
    }
}

fn linspace(lo: f64, hi: f64, k: usize) -> Vec<f64> {
    (0..k)
        .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
        .collect()
}

/// z ~ 𝒩(0, 1), y1 = 0.9 z + 0.2 ε1, y2 = −0.5 z + 0.5 ε2: a thin ridge in z.
fn ridge(row: &[f64]) -> (f64, f64) {
    let (z, y1, y2) = (row[0], row[1], row[2]);
    let prior = -0.5 * z * z;
    let like = -0.5 * ((y1 - 0.9 * z) / 0.2).powi(2) - 0.5 * ((y2 + 0.5 * z) / 0.5).powi(2);
    (prior, like)
}

fn ridge_draws(rng: &mut HostRng, n: usize) -> Result<Tensor> {
    let e = rng.normal(&(n, 1, 3).into(), &Device::Cpu)?;
    let v = e.flatten_all()?.to_vec1::<f32>()?;
    let rows: Vec<f32> = v
        .chunks_exact(3)
        .flat_map(|r| [r[0], 0.9 * r[0] + 0.2 * r[1], -0.5 * r[0] + 0.5 * r[2]])
        .collect();
    Ok(Tensor::from_vec(rows, (n, 1, 3), &Device::Cpu)?)
}

fn state_of(chart: &Chart, position: Tensor) -> Result<GridState> {
    let (log_prior, log_like) = chart.eval(&position)?;
    Ok(GridState {
        position,
        log_prior,
        log_like,
    })
}

fn column(t: &Tensor, j: usize) -> Vec<f64> {
    t.narrow(2, j, 1)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// One update of one column at β = 1; the new state and its acceptance rate.
fn update(
    chart: &Chart,
    state: &GridState,
    slopes: &[f64],
    rng: &mut HostRng,
) -> Result<(GridState, f64)> {
    let galaxies = Tensor::zeros(1, DType::U32, &Device::Cpu)?;
    let eval = |x: &Tensor| chart.eval(x);
    let mut uniforms = |k: usize| (0..k).map(|_| rng.next_f64()).collect::<Vec<f64>>();
    let (next, acc) = grid_gibbs_update(
        chart,
        &eval,
        state,
        &galaxies,
        &[1.0],
        slopes,
        &mut uniforms,
    )?;
    let rate = acc.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?;
    Ok((next, rate))
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n)
}

#[test]
fn a_coarse_grid_leaves_a_correlated_gaussian_invariant_and_the_shear_moves_far() -> Result<()> {
    // 11 grid points for a unit-variance axis: the interpolated proposal is poor, so only the
    // Metropolis–Hastings correction keeps the target.
    let chart = Chart {
        grid: linspace(-5.0, 5.0, 11),
        density: ridge,
    };
    let n = 4000;
    let mut rng = HostRng::seed_from_u64(11);
    for shear in [false, true] {
        // Slopes from an independent exact sample, so each particle's kernel is fixed.
        let slopes = if shear {
            ridge_slopes(&ridge_draws(&mut rng, 2000)?, 0)?
        } else {
            vec![0.0; 3]
        };
        let mut state = state_of(&chart, ridge_draws(&mut rng, n)?)?;
        let start = column(&state.position, 0);
        let mut acceptance = 0.0;
        let updates = 8;
        for _ in 0..updates {
            let (next, rate) = update(&chart, &state, &slopes, &mut rng)?;
            acceptance += rate / updates as f64;
            state = next;
        }
        let (z, y1) = (column(&state.position, 0), column(&state.position, 1));
        let (mz, vz) = mean_var(&z);
        let (m1, v1) = mean_var(&y1);
        let cov = z
            .iter()
            .zip(&y1)
            .map(|(a, b)| (a - mz) * (b - m1))
            .sum::<f64>()
            / n as f64;
        // Exact: mean 0, var z 1, var y1 0.85, cov 0.9; 4 standard errors of n = 4000 draws.
        let se = (2.0 / n as f64).sqrt();
        assert!(
            mz.abs() < 4.0 / (n as f64).sqrt(),
            "shear {shear}: mean z {mz}"
        );
        assert!((vz - 1.0).abs() < 4.0 * se, "shear {shear}: var z {vz}");
        assert!(
            (v1 - 0.85).abs() < 4.0 * se * 0.85,
            "shear {shear}: var y1 {v1}"
        );
        assert!((cov - 0.9).abs() < 0.06, "shear {shear}: cov {cov}");
        let moved = z
            .iter()
            .zip(&start)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / n as f64;
        println!("shear {shear}: acceptance {acceptance:.3}, mean |Δz| {moved:.3}, var z {vz:.3}");
        if shear {
            // Along the ridge the conditional is the marginal: near-independent draws
            // (E|z − z′| = 2/√π ≈ 1.13 for independent unit normals).
            assert!(moved > 0.8, "sheared mean |Δz| {moved}");
        } else {
            // Across it the conditional sd is only ~0.2.
            assert!(moved < 0.4, "plain mean |Δz| {moved}");
        }
    }
    Ok(())
}

/// 0.3 𝒩(−2, 0.05²) + 0.7 𝒩(1.5, 0.3²): two modes of very different widths.
fn two_widths(row: &[f64]) -> (f64, f64) {
    let z = row[0];
    let comp = |w: f64, m: f64, s: f64| w / s * (-0.5 * ((z - m) / s).powi(2)).exp();
    (0.0, (comp(0.3, -2.0, 0.05) + comp(0.7, 1.5, 0.3)).ln())
}

#[test]
fn modes_of_different_widths_get_their_weights_in_one_update() -> Result<()> {
    let chart = Chart {
        grid: linspace(-4.0, 4.0, 201),
        density: two_widths,
    };
    let n = 4000;
    let mut rng = HostRng::seed_from_u64(5);
    // Every particle starts in the wide mode.
    let state = state_of(&chart, Tensor::full(1.5f32, (n, 1, 1), &Device::Cpu)?)?;
    let (next, acceptance) = update(&chart, &state, &[0.0], &mut rng)?;
    let z = column(&next.position, 0);
    let narrow = z.iter().filter(|&&v| v < 0.0).count() as f64 / n as f64;
    let sigma = (0.3f64 * 0.7 / n as f64).sqrt();
    println!(
        "narrow-mode weight {narrow:.4} (truth 0.3, σ_MC {sigma:.4}), acceptance {acceptance:.3}"
    );
    assert!(
        (narrow - 0.3).abs() < 3.0 * sigma,
        "narrow-mode weight {narrow}"
    );
    assert!(acceptance > 0.9, "acceptance {acceptance}");
    Ok(())
}
