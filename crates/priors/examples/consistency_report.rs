//! Distil the bundled diffusion prior into a consistency model and compare its 1-, 2- and
//! 4-step samplers with the teacher's ODE sampler (RK4, 40 steps): per-parameter KS, a
//! classifier two-sample test (ROC AUC) and wall time per sample on this machine.
//!
//! ```text
//! cargo run --release -p popcosmos-priors --example consistency_report -- OUT.safetensors \
//!     [--steps 3000] [--n-data 10000] [--n-eval 5000] [--batch 256] [--lr 3e-3] \
//!     [--n-points 18] [--loss huber|l2] [--huber-c 0.3] [--teacher TEACHER.safetensors]
//! ```
//! Defaults: the values shown and the bundled teacher; they take about five minutes on 2
//! CPU cores.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Device;
use popcosmos_api::HostRng;
use popcosmos_priors::consistency::{self, CdLoss, TrainOptions, Trainer};
use popcosmos_priors::diffusion::DiffusionModel;

fn main() -> anyhow::Result<()> {
    popcosmos_api::configure_cpu_threads();
    let mut args = std::env::args().skip(1);
    let mut out = "consistency.safetensors".to_string();
    let mut flags: HashMap<String, String> = HashMap::new();
    while let Some(a) = args.next() {
        match a.strip_prefix("--") {
            Some(key) => {
                let v = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--{key} needs a value"))?;
                flags.insert(key.to_string(), v);
            }
            None => out = a,
        }
    }
    let flag =
        |k: &str, default: &str| flags.get(k).cloned().unwrap_or_else(|| default.to_string());
    let steps: usize = flag("steps", "3000").parse()?;
    let n_data: usize = flag("n-data", "10000").parse()?;
    let n_eval: usize = flag("n-eval", "5000").parse()?;
    let teacher_path = flag(
        "teacher",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/models/popcosmos_prior_diffusion.safetensors"
        ),
    );
    let teacher = DiffusionModel::load(&teacher_path, &Device::Cpu)?;
    let opts = TrainOptions {
        steps,
        n_data,
        batch_size: flag("batch", "256").parse()?,
        learning_rate: flag("lr", "3e-3").parse()?,
        n_points: flag("n-points", "18").parse()?,
        loss: match flag("loss", "huber").as_str() {
            "l2" => CdLoss::L2,
            _ => CdLoss::PseudoHuber {
                c: flag("huber-c", "0.3").parse()?,
            },
        },
        ..TrainOptions::default()
    };
    eprintln!(
        "teacher {teacher_path}: {}-D; distilling {steps} steps, batch {}, N = {}, {n_data} teacher samples",
        teacher.config().dim,
        opts.batch_size,
        opts.n_points
    );
    let mut rng = HostRng::seed_from_u64(2024);
    let t0 = Instant::now();
    let mut trainer = Trainer::new(&teacher, opts.clone(), &mut rng)?;
    let t_data = t0.elapsed().as_secs_f64();
    eprintln!("teacher samples: {t_data:.1} s");
    let t1 = Instant::now();
    let mut window = 0.0;
    let every = (steps / 10).max(1);
    for s in 0..steps {
        window += trainer.step(&mut rng)?;
        if (s + 1) % every == 0 || s + 1 == steps {
            let k = if (s + 1) % every == 0 {
                every
            } else {
                (s + 1) % every
            };
            eprintln!(
                "step {:>6}: CD loss {:.5} ({:.1} s)",
                s + 1,
                window / k as f64,
                t1.elapsed().as_secs_f64()
            );
            window = 0.0;
        }
    }
    let t_train = t1.elapsed().as_secs_f64();
    let cm = trainer.model()?;
    let meta = HashMap::from([
        ("teacher".to_string(), teacher_path.clone()),
        ("train_options".to_string(), serde_json::to_string(&opts)?),
    ]);
    cm.save(&out, &meta)?;
    eprintln!("wrote {out}");

    let t2 = Instant::now();
    let report = consistency::compare_to_teacher(&cm, &teacher, n_eval, &mut rng)?;
    let t_eval = t2.elapsed().as_secs_f64();
    println!(
        "consistency distillation: {steps} steps (batch {}, lr {}, N = {}, Heun teacher step, {:?}, \
         continuous times), {n_data} teacher samples (RK4 40)",
        opts.batch_size, opts.learning_rate, opts.n_points, opts.loss
    );
    println!(
        "time: teacher samples {t_data:.0} s, training {t_train:.0} s, evaluation {t_eval:.0} s \
         (RAYON_NUM_THREADS={})\n",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );
    print!("{report}");
    Ok(())
}
