//! Denoising score-matching training recovers a known density: a correlated 2-D Gaussian
//! whose log-density and moments are exact. Also checkpoint/resume and the prior wrapper.

mod support;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{HostRng, Prior, RandomSource, Shape, testing::max_abs_diff};
use popcosmos_priors::diffusion::{DiffusionModel, LogProbOptions, OdeSolver, Trainer};
use support::{L, MU, gaussian_draws as draws, moments, toy_diffusion_options as options};

fn log_density(x: &[f64]) -> f64 {
    // Solve L u = x − μ; ln p = −½|u|² − ln(2π) − ln det L.
    let u0 = (x[0] - MU[0]) / L[0][0];
    let u1 = (x[1] - MU[1] - L[1][0] * u0) / L[1][1];
    -0.5 * (u0 * u0 + u1 * u1) - (2.0 * std::f64::consts::PI).ln() - (L[0][0] * L[1][1]).ln()
}

fn train(steps: usize) -> (Trainer, DiffusionModel) {
    let mut t = Trainer::new(
        &draws(20_000, 1),
        None,
        vec![],
        vec![],
        options(steps),
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = HostRng::seed_from_u64(3);
    for _ in 0..steps {
        t.step(&mut rng).unwrap();
    }
    let m = t.model().unwrap();
    (t, m)
}

/// ln q(x) from the probability-flow ODE vs the exact Gaussian ln p(x) on held-out draws,
/// and the moments of ODE samples vs (μ, Σ).
#[test]
fn learns_a_correlated_gaussian() {
    let (_, model) = train(1500);
    let x = draws(200, 99);
    let lp = model
        .log_prob(&x, None, &LogProbOptions::default(), None)
        .unwrap();
    let ln_scale: f64 = model
        .x_scale()
        .to_dtype(DType::F64)
        .unwrap()
        .log()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let lq: Vec<f64> = lp.log_prob.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let xs: Vec<Vec<f64>> = x.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let diffs: Vec<f64> = xs
        .iter()
        .zip(&lq)
        .map(|(x, q)| (q - ln_scale) - log_density(x))
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let mad = diffs.iter().map(|d| d.abs()).sum::<f64>() / diffs.len() as f64;
    eprintln!("ln q − ln p: mean {mean:.4}, mean |·| {mad:.4}");
    // Forward KL ≈ −mean(ln q − ln p) ≥ 0 up to noise; a well-fit model is within ~0.1 nat.
    assert!(mean.abs() < 0.1 && mad < 0.2, "mean {mean}, mean abs {mad}");

    let mut rng = HostRng::seed_from_u64(4);
    let n = 4000;
    let base = rng.normal(&Shape::from((n, 2)), &Device::Cpu).unwrap();
    let (s, _) = model
        .sample_ode(&base, None, &OdeSolver::Rk4 { steps: 60 })
        .unwrap();
    let ([m0, m1], [sd0, sd1], rho) = moments(&s);
    eprintln!("sample mean ({m0:.3}, {m1:.3}) sd ({sd0:.3}, {sd1:.3}) rho {rho:.3}");
    // Standard errors with n = 4000: mean 0.03 / 0.02, sd ~1%, ρ ~0.003; allow ~3σ + fit error.
    assert!((m0 - 1.0).abs() < 0.1 && (m1 + 2.0).abs() < 0.07);
    // (The fit itself is ~5% wide in sd after 1500 steps; runs vary at the 1e−3 level.)
    assert!((sd0 / 2.0 - 1.0).abs() < 0.08 && (sd1 / 1.3 - 1.0).abs() < 0.08);
    assert!((rho - 1.2 / 1.3).abs() < 0.02, "rho {rho}");

    // Reverse-SDE sampling (Euler–Maruyama predictor + one Langevin corrector step).
    let s = model.sample_sde(n, None, 200, 1, 0.16, &mut rng).unwrap();
    let ([m0, m1], [sd0, sd1], rho) = moments(&s);
    eprintln!("SDE sample mean ({m0:.3}, {m1:.3}) sd ({sd0:.3}, {sd1:.3}) rho {rho:.3}");
    assert!((m0 - 1.0).abs() < 0.12 && (m1 + 2.0).abs() < 0.09);
    assert!((sd0 / 2.0 - 1.0).abs() < 0.08 && (sd1 / 1.3 - 1.0).abs() < 0.08);
    assert!((rho - 1.2 / 1.3).abs() < 0.03, "rho {rho}");

    // Hutchinson: unbiased for the exact log-density; average 400 probes at one point.
    let x1 = x.narrow(0, 0, 1).unwrap().repeat((400, 1)).unwrap();
    let exact = model
        .log_prob(
            &x1.narrow(0, 0, 1).unwrap(),
            None,
            &LogProbOptions::default(),
            None,
        )
        .unwrap();
    let exact: f64 = exact
        .log_prob
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    let opts = LogProbOptions {
        divergence: popcosmos_priors::diffusion::Divergence::Hutchinson,
        ..Default::default()
    };
    let h = model.log_prob(&x1, None, &opts, Some(&mut rng)).unwrap();
    let h: Vec<f64> = h.log_prob.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let mean = h.iter().sum::<f64>() / h.len() as f64;
    let se = (h.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
        / (h.len() as f64 - 1.0)
        / h.len() as f64)
        .sqrt();
    eprintln!("Hutchinson {mean:.4} ± {se:.4} vs exact {exact:.4}");
    assert!(
        se > 0.0 && (mean - exact).abs() < 4.0 * se + 0.01,
        "{mean} ± {se} vs {exact}"
    );
}

/// A checkpoint written at step k and resumed gives the same EMA model, and the saved file
/// loads as a model with identical outputs; the prior wrapper rejects non-16-D models.
#[test]
fn checkpoint_round_trip() {
    let (t, model) = train(50);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    t.save(&path, &Default::default()).unwrap();
    let loaded = DiffusionModel::load(&path, &Device::Cpu).unwrap();
    let mut resumed = Trainer::new(
        &draws(20_000, 1),
        None,
        vec![],
        vec![],
        options(50),
        &Device::Cpu,
    )
    .unwrap();
    resumed.resume(&path).unwrap();
    assert_eq!(resumed.step_count(), 50);
    let x = draws(8, 5);
    let tv = vec![0.3; 8];
    for m in [loaded, resumed.model().unwrap()] {
        let d = max_abs_diff(
            &m.ode_drift(&tv, &x, None).unwrap(),
            &model.ode_drift(&tv, &x, None).unwrap(),
        );
        assert_eq!(d, 0.0);
    }
    let err =
        popcosmos_priors::diffusion::DiffusionPrior::new(model, LogProbOptions::default(), "toy")
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("16 latent parameters"), "{err}");
    // A file without training metadata is refused by resume, naming the file.
    let plain = dir.path().join("plain.safetensors");
    let tensors = popcosmos_priors::diffusion::model_tensors(&t.model().unwrap()).unwrap();
    popcosmos_priors::diffusion::write_model(
        &t.model().unwrap(),
        tensors,
        Default::default(),
        &plain,
    )
    .unwrap();
    let mut again = Trainer::new(
        &draws(1000, 1),
        None,
        vec![],
        vec![],
        options(5),
        &Device::Cpu,
    )
    .unwrap();
    let e = again.resume(&plain).err().unwrap().to_string();
    assert!(
        e.contains("plain.safetensors") && e.contains("checkpoint"),
        "{e}"
    );
}

/// The 16-D prior wrapper: shapes `[walkers, galaxies, 16]`, −∞ for non-finite rows, and
/// batch independence of each row's value.
#[test]
fn prior_wrapper_shapes_and_guards() {
    let mut rng = HostRng::seed_from_u64(8);
    let data = rng.normal(&Shape::from((2000, 16)), &Device::Cpu).unwrap();
    let mut o = options(30);
    o.batch_size = 64;
    let mut t = Trainer::new(&data, None, vec![], vec![], o, &Device::Cpu).unwrap();
    for _ in 0..30 {
        t.step(&mut rng).unwrap();
    }
    let prior = popcosmos_priors::diffusion::DiffusionPrior::new(
        t.model().unwrap(),
        LogProbOptions {
            solver: OdeSolver::Rk4 { steps: 20 },
            ..Default::default()
        },
        "toy16",
    )
    .unwrap();
    let phi = rng.normal(&Shape::from((3, 2, 16)), &Device::Cpu).unwrap();
    let lp = prior.log_prob(&phi).unwrap();
    assert_eq!(lp.dims(), &[3, 2]);
    let flat: Vec<f32> = lp.flatten_all().unwrap().to_vec1().unwrap();
    assert!(flat.iter().all(|v| v.is_finite()));
    let one = prior
        .log_prob(&phi.get(1).unwrap().get(0).unwrap().unsqueeze(0).unwrap())
        .unwrap();
    let one: Vec<f32> = one.to_vec1().unwrap();
    assert!((one[0] - flat[2]).abs() < 1e-4, "{} vs {}", one[0], flat[2]);
    let mut v: Vec<f32> = phi.flatten_all().unwrap().to_vec1().unwrap();
    v[16 * 3 + 5] = f32::NAN;
    let bad = prior
        .log_prob(&Tensor::from_vec(v, (3, 2, 16), &Device::Cpu).unwrap())
        .unwrap();
    let bad: Vec<f32> = bad.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(bad[3], f32::NEG_INFINITY);
    assert!(bad.iter().enumerate().all(|(i, x)| i == 3 || x.is_finite()));
    let s = prior.sample(5, &mut rng, &Device::Cpu).unwrap();
    assert_eq!(s.dims(), &[5, 16]);
}

/// Conditional training p(x | c): x = (c + 0.5 z₁, −c + 0.5 z₂) with c ~ U(−2, 2); ODE samples
/// at fixed c must centre on (c, −c) with sd 0.5.
#[test]
fn learns_a_conditional_density() {
    let n = 20_000;
    let mut rng = HostRng::seed_from_u64(21);
    let c: Vec<f32> = (0..n)
        .map(|_| (rng.next_f64() * 4.0 - 2.0) as f32)
        .collect();
    let z: Vec<f32> = rng
        .normal(&Shape::from((n, 2)), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let x: Vec<f32> = (0..n)
        .flat_map(|i| [c[i] + 0.5 * z[2 * i], -c[i] + 0.5 * z[2 * i + 1]])
        .collect();
    let x = Tensor::from_vec(x, (n, 2), &Device::Cpu).unwrap();
    let ct = Tensor::from_vec(c, (n, 1), &Device::Cpu).unwrap();
    let mut t = Trainer::new(
        &x,
        Some(&ct),
        vec![],
        vec!["c".into()],
        options(1200),
        &Device::Cpu,
    )
    .unwrap();
    for _ in 0..1200 {
        t.step(&mut rng).unwrap();
    }
    let model = t.model().unwrap();
    assert_eq!(model.config().conditional_dim, 1);
    for cv in [-1.5f32, 1.0] {
        let m = 2000;
        let cond = Tensor::full(cv, (m, 1), &Device::Cpu).unwrap();
        let base = rng.normal(&Shape::from((m, 2)), &Device::Cpu).unwrap();
        let (s, _) = model
            .sample_ode(&base, Some(&cond), &OdeSolver::Rk4 { steps: 40 })
            .unwrap();
        let s: Vec<Vec<f64>> = s.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
        for (k, want) in [(0usize, cv as f64), (1, -(cv as f64))] {
            let mean = s.iter().map(|r| r[k]).sum::<f64>() / m as f64;
            let sd = (s.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / m as f64).sqrt();
            eprintln!("c = {cv}: x{k} mean {mean:.3} (want {want}), sd {sd:.3} (want 0.5)");
            assert!(
                (mean - want).abs() < 0.08 && (sd - 0.5).abs() < 0.08,
                "c {cv} x{k}: {mean} {sd}"
            );
        }
    }
    // Missing conditions are an error naming the need.
    let e = model.sample_ode(
        &Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        None,
        &OdeSolver::Rk4 { steps: 2 },
    );
    assert!(e.err().unwrap().to_string().contains("conditioning"));
}

/// `fit`: the seeded hold-out split, a run resumed from its checkpoint starts at the
/// checkpoint's step, and too few rows are refused.
#[test]
fn fit_resumes_from_its_checkpoint() {
    use popcosmos_priors::diffusion::{FitOptions, fit};
    let x: Vec<f32> = draws(400, 1).flatten_all().unwrap().to_vec1().unwrap();
    let names = vec!["a".to_string(), "b".to_string()];
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ck.safetensors");
    let opts = |steps, resume| FitOptions {
        train: options(steps),
        holdout: 0.1,
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: 10,
        resume,
        metadata: Default::default(),
    };
    let run = |o: &FitOptions| {
        let mut seen = Vec::new();
        let f = fit(
            &x,
            None,
            names.clone(),
            vec![],
            o,
            &Device::Cpu,
            &mut |s, _| seen.push(s),
        );
        (f.unwrap(), seen)
    };
    let (whole, _) = run(&opts(20, false));
    assert_eq!(whole.metadata["train_rows"], "360");
    run(&opts(10, false));
    let (resumed, seen) = run(&opts(20, true));
    assert_eq!((seen[0], resumed.steps), (10, 20));
    assert!(resumed.heldout_loss.is_finite() && resumed.metadata["train_step"] == "20");
    let few = fit(
        &x[..100],
        None,
        names,
        vec![],
        &opts(5, false),
        &Device::Cpu,
        &mut |_, _| {},
    );
    assert!(few.err().unwrap().to_string().contains("only 50 rows"));
}
