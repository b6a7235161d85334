//! Consistency models (`popcosmos_priors::consistency`): the boundary condition, consistency
//! distillation of a small diffusion teacher on a correlated 2-D Gaussian, the file round
//! trip, and the classifier two-sample test.

mod support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use popcosmos_api::{HostRng, RandomSource, Shape, testing::max_abs_diff};
use popcosmos_priors::consistency::{
    self, CdLoss, ClassifierOptions, ConsistencyModel, TeacherStep, TrainOptions, Trainer,
};
use popcosmos_priors::diffusion::{self, DiffusionModel, OdeSolver};
use support::{
    file_metadata, gaussian_draws, moments, note, reseed_trainer, toy_diffusion_options,
};

fn bundled_teacher() -> DiffusionModel {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/models/popcosmos_prior_diffusion.safetensors"
    );
    DiffusionModel::load(path, &Device::Cpu).unwrap()
}

/// A small diffusion teacher on the 2-D Gaussian: `steps` denoising score-matching steps
/// from initial weights that are seeded here (written into a checkpoint that the trainer
/// resumes from), so the teacher is the same on every run.
fn toy_teacher(steps: usize) -> DiffusionModel {
    let opts = diffusion::TrainOptions {
        batch_size: 512,
        learning_rate: 1e-2,
        ema_decay: 0.98,
        ..toy_diffusion_options(steps)
    };
    let dev = Device::Cpu;
    let mut t =
        diffusion::Trainer::new(&gaussian_draws(20_000, 1), None, vec![], vec![], opts, &dev)
            .unwrap();
    // Seeded initial weights: rewrite the step-0 checkpoint's raw and EMA weights.
    reseed_trainer(&mut t, |tensors| {
        let mut rng = HostRng::seed_from_u64(20);
        let mut raw: Vec<String> = tensors
            .keys()
            .filter(|k| k.starts_with("train.raw."))
            .cloned()
            .collect();
        raw.sort();
        for name in raw {
            let v = &tensors[&name];
            let w = if name.ends_with("weight") {
                (rng.normal(v.shape(), &dev).unwrap() * (2.0 / v.dim(1).unwrap() as f64).sqrt())
                    .unwrap()
            } else {
                (rng.uniform(v.shape(), &dev).unwrap().affine(0.2, -0.1)).unwrap()
            };
            let ema = format!("score_net.{}", &name["train.raw.".len()..]);
            if let Some(e) = tensors.get_mut(&ema) {
                *e = w.clone();
            }
            tensors.insert(name, w);
        }
    });
    let mut rng = HostRng::seed_from_u64(3);
    for _ in 0..steps {
        t.step(&mut rng).unwrap();
    }
    t.model().unwrap()
}

/// A seeded, untrained (32×32) consistency model for `teacher` (8 cheap teacher draws).
fn untrained_consistency_model(teacher: &DiffusionModel) -> ConsistencyModel {
    let data = consistency::teacher_samples(
        teacher,
        8,
        8,
        &OdeSolver::Euler { steps: 4 },
        &mut HostRng::seed_from_u64(1),
    )
    .unwrap();
    let opts = TrainOptions {
        hidden: vec![32, 32],
        ..TrainOptions::default()
    };
    Trainer::with_samples(teacher, &data, opts)
        .unwrap()
        .model()
        .unwrap()
}

/// f_θ(x, ε) = x bit for bit, for an untrained (seeded) model on the bundled 16-D teacher,
/// whatever x; at t > ε the network contributes.
#[test]
fn boundary_condition_is_exact() {
    let teacher = bundled_teacher();
    let cm = untrained_consistency_model(&teacher);
    let eps = cm.sde().epsilon();
    let mut rng = HostRng::seed_from_u64(7);
    let x = (rng.normal(&Shape::from((64, 16)), &Device::Cpu).unwrap() * 5.0).unwrap();
    let f = cm.denoise(&x, &vec![eps; 64]).unwrap();
    let (xv, fv): (Vec<f32>, Vec<f32>) = (
        x.flatten_all().unwrap().to_vec1().unwrap(),
        f.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert!(xv.iter().zip(&fv).all(|(a, b)| a.to_bits() == b.to_bits()));
    let c = cm.coefficients(eps);
    assert_eq!((c.skip, c.out), (1.0, 0.0));
    for t in [2e-3, 0.1, 1.0] {
        let g = cm.denoise(&x, &vec![t; 64]).unwrap();
        assert!(max_abs_diff(&g, &x) > 1e-3, "t = {t}");
    }
}

/// Distil a 400-step teacher on the 2-D Gaussian and compare 1-, 2- and 4-step samples
/// with the teacher's own ODE samples (what is being distilled).
#[test]
fn distils_a_small_teacher() {
    let teacher = toy_teacher(600);
    let mut rng = HostRng::seed_from_u64(11);
    let opts = TrainOptions {
        hidden: vec![64, 64],
        steps: 1500,
        batch_size: 256,
        learning_rate: 5e-3,
        ema_decay: 0.995,
        n_data: 8000,
        teacher_step: TeacherStep::Heun,
        // A Gaussian has no far outliers: the plain L2 metric of Song et al. (the default
        // pseudo-Huber metric is for the heavy-tailed 16-D prior).
        loss: CdLoss::L2,
        seed: 5,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&teacher, opts.clone(), &mut rng).unwrap();
    let mut first = 0.0;
    let mut last = 0.0;
    for s in 0..opts.steps {
        let l = trainer.step(&mut rng).unwrap();
        if s < 50 {
            first += l / 50.0;
        }
        if s + 50 >= opts.steps {
            last += l / 50.0;
        }
    }
    let cm = trainer.model().unwrap();
    eprintln!("CD loss: first 50 steps {first:.4}, last 50 {last:.5}");

    let n = 8000;
    let base = rng.normal(&Shape::from((n, 2)), &Device::Cpu).unwrap();
    let (t_x, _) = teacher
        .sample_ode(&base, None, &OdeSolver::Rk4 { steps: 40 })
        .unwrap();
    let (tm, ts, _) = moments(&t_x);
    eprintln!(
        "teacher   mean ({:.3}, {:.3}) sd ({:.3}, {:.3})",
        tm[0], tm[1], ts[0], ts[1]
    );
    let mut errs = Vec::new();
    for steps in [1, 2, 4] {
        let x = cm.sample(n, steps, &mut rng).unwrap();
        let (m, s, _) = moments(&x);
        // Mean error in teacher sd units and relative sd error, worst coordinate.
        let err_m = (0..2)
            .map(|j| (m[j] - tm[j]).abs() / ts[j])
            .fold(0.0, f64::max);
        let err_s = (0..2)
            .map(|j| (s[j] / ts[j] - 1.0).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{steps}-step    mean ({:.3}, {:.3}) sd ({:.3}, {:.3})  |Δmean|/sd {err_m:.4}  |Δsd|/sd {err_s:.4}",
            m[0], m[1], s[0], s[1]
        );
        errs.push((err_m, err_s));
    }
    // The evaluation helper on the same pair: KS and classifier AUC per step count.
    let report = consistency::compare_to_teacher(&cm, &teacher, 2000, &mut rng).unwrap();
    eprintln!("{report}");
    assert_eq!(report.rows.len(), 4);
    assert_eq!(
        report.rows.iter().map(|r| r.nfe).collect::<Vec<_>>(),
        [160, 1, 2, 4]
    );
    for r in &report.rows {
        assert!(r.auc < 0.6 && r.ks_max < 0.08, "{report}");
    }

    // Sampling noise alone (n = 8000 each side): SE of Δmean/sd = √(2/n) = 0.016, of
    // Δsd/sd ≈ √(1/n) = 0.011 (Gaussian).
    let (m1, s1) = errs[0];
    assert!(m1 < 0.06 && s1 < 0.06, "1-step: {errs:?}");
    for &(m, s) in &errs[1..] {
        assert!(m < 0.06 && s < 0.06, "{errs:?}");
        // at least as good as one step, up to the sampling noise of the comparison
        assert!(m.max(s) <= m1.max(s1) + 0.03, "{errs:?}");
    }
}

/// A saved model loads with the same config and gives the same samples for the same seed;
/// a checkpoint resumes to the same state.
#[test]
fn save_load_round_trip() {
    let teacher = toy_teacher(0);
    let mut rng = HostRng::seed_from_u64(1);
    let opts = TrainOptions {
        hidden: vec![16, 16],
        steps: 10,
        batch_size: 64,
        n_data: 256,
        data_solver: OdeSolver::Euler { steps: 10 },
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&teacher, opts.clone(), &mut rng).unwrap();
    for _ in 0..10 {
        trainer.step(&mut rng).unwrap();
    }
    let cm = trainer.model().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cm.safetensors");
    cm.save(&path, &note()).unwrap();
    let meta = file_metadata(&path);
    assert_eq!(meta["format"], consistency::FORMAT);
    assert_eq!(meta["note"], "test");
    let loaded = ConsistencyModel::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), cm.config());
    for steps in [1, 2, 4] {
        let a = cm
            .sample(100, steps, &mut HostRng::seed_from_u64(9))
            .unwrap();
        let b = loaded
            .sample(100, steps, &mut HostRng::seed_from_u64(9))
            .unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{steps} steps");
    }
    // Not a consistency model → a format error naming the expected format.
    let dpath = dir.path().join("diff.safetensors");
    diffusion::write_model(
        &teacher,
        diffusion::model_tensors(&teacher).unwrap(),
        HashMap::new(),
        &dpath,
    )
    .unwrap();
    let err = ConsistencyModel::load(&dpath, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains(consistency::FORMAT), "{err}");

    // Checkpoint / resume: same step, same EMA model; the checkpoint itself loads as a model.
    let ck = dir.path().join("ck.safetensors");
    trainer.save(&ck, &HashMap::new()).unwrap();
    let mut resumed = Trainer::new(&teacher, opts, &mut HostRng::seed_from_u64(1)).unwrap();
    resumed.resume(&ck).unwrap();
    assert_eq!(resumed.step_count(), 10);
    let r = resumed.model().unwrap();
    let from_ck = ConsistencyModel::load(&ck, &Device::Cpu).unwrap();
    for m in [r, from_ck] {
        let a = cm.sample(50, 2, &mut HostRng::seed_from_u64(4)).unwrap();
        let b = m.sample(50, 2, &mut HostRng::seed_from_u64(4)).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
}

/// The classifier two-sample test: ≈ 0.5 for two samples of one distribution, ≈ 1 for
/// well-separated ones, and it sees a pure scale difference (non-linear boundary).
#[test]
fn classifier_auc_separates() {
    let dev = Device::Cpu;
    let mut rng = HostRng::seed_from_u64(3);
    let n = 2000;
    let draw = |rng: &mut HostRng| rng.normal(&Shape::from((n, 4)), &dev).unwrap();
    let opts = ClassifierOptions::default();
    let (a, b) = (draw(&mut rng), draw(&mut rng));
    let same = consistency::classifier_auc(&a, &b, &opts, &mut rng).unwrap();
    let shift = Tensor::from_vec(vec![3.0f32, 0.0, 0.0, 0.0], 4, &dev).unwrap();
    let shifted = draw(&mut rng).broadcast_add(&shift).unwrap();
    let far = consistency::classifier_auc(&a, &shifted, &opts, &mut rng).unwrap();
    let wide = (draw(&mut rng) * 2.0).unwrap();
    let scale = consistency::classifier_auc(&a, &wide, &opts, &mut rng).unwrap();
    eprintln!("AUC same {same:.4}, shifted by 3σ {far:.4}, sd × 2 {scale:.4}");
    // Null: 1000 test rows per class, SE of the AUC = √((n₁+n₂+1)/(12 n₁ n₂)) = 0.013.
    assert!((same - 0.5).abs() < 0.05, "{same}");
    // Bayes AUCs: Φ(3/√2) = 0.983; P(F(4,4) < 4) = 0.90.
    assert!(far > 0.95, "{far}");
    assert!(scale > 0.8, "{scale}");
}

/// `prior: {kind: diffusion, fast_sampler: …}`: the prior's draws are the consistency
/// model's draws (same random stream), the log-density is untouched, and a model of the
/// wrong dimension or zero steps is refused with the file named.
#[test]
fn diffusion_prior_draws_with_its_consistency_sampler() {
    let teacher = bundled_teacher();
    let cm = untrained_consistency_model(&teacher);
    let dir = tempfile::tempdir().unwrap();
    let cm_path = dir.path().join("cm.safetensors");
    cm.save(&cm_path, &HashMap::new()).unwrap();
    let teacher_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/models/popcosmos_prior_diffusion.safetensors"
    );
    let spec: popcosmos_priors::PriorSpec = serde_json::from_value(serde_json::json!({
        "kind": "diffusion", "weights": "teacher",
        "log_prob": {"solver": {"method": "rk4", "steps": 2}},
        "fast_sampler": {"weights": cm_path.display().to_string(), "steps": 2}
    }))
    .unwrap();
    let loader = |w: &str, kind: &str| -> popcosmos_api::Result<(Vec<u8>, String)> {
        let path = if w == "teacher" {
            assert_eq!(kind, "diffusion");
            teacher_path.to_string()
        } else {
            assert_eq!(kind, "consistency");
            w.to_string()
        };
        Ok((std::fs::read(&path).unwrap(), path))
    };
    let prior = spec.build_with(&Device::Cpu, &loader).unwrap();
    let draws = prior
        .sample(300, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    let direct = cm.sample(300, 2, &mut HostRng::seed_from_u64(5)).unwrap();
    assert_eq!(max_abs_diff(&draws, &direct), 0.0);
    // The log-density is the diffusion model's, with or without the fast sampler.
    let plain: popcosmos_priors::PriorSpec = serde_json::from_value(
        serde_json::json!({"kind": "diffusion", "weights": "teacher",
            "log_prob": {"solver": {"method": "rk4", "steps": 2}}}),
    )
    .unwrap();
    let plain = plain.build_with(&Device::Cpu, &loader).unwrap();
    let x = draws.narrow(0, 0, 4).unwrap();
    let (a, b) = (prior.log_prob(&x).unwrap(), plain.log_prob(&x).unwrap());
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // A 2-D consistency model for the 16-D prior, and zero steps, are refused.
    let toy = Trainer::new(
        &toy_teacher(0),
        TrainOptions {
            hidden: vec![8],
            steps: 1,
            batch_size: 8,
            n_data: 16,
            data_solver: OdeSolver::Euler { steps: 2 },
            ..TrainOptions::default()
        },
        &mut HostRng::seed_from_u64(1),
    )
    .unwrap()
    .model()
    .unwrap();
    let wrap = |m: ConsistencyModel, steps: usize| {
        diffusion::DiffusionPrior::new(teacher.clone(), Default::default(), "t")
            .unwrap()
            .with_consistency_sampler(m, steps, "cm.safetensors")
            .err()
            .expect("refused")
            .to_string()
    };
    let e = wrap(toy, 1);
    assert!(e.contains("cm.safetensors") && e.contains("dim 2"), "{e}");
    let e = wrap(cm, 0);
    assert!(e.contains("steps must be >= 1"), "{e}");
    let bad: popcosmos_priors::PriorSpec = serde_json::from_value(
        serde_json::json!({"kind": "diffusion", "fast_sampler": {"steps": 0}}),
    )
    .unwrap();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("prior.fast_sampler.steps")
    );
}
