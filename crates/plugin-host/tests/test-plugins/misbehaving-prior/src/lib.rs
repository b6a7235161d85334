//! A prior plugin that misbehaves in the way its configuration string asks, so the host's
//! checks can be tested: `wrong-length`, `panic`, `nan`, `plus-infinity`, `sample-short`,
//! `sample-nan`, `dim3`, `fail-create`, `panic-create`; anything else behaves
//! (standard normal in all 16 parameters).

use popcosmos_plugin_abi::{PriorPlugin, declare_prior_plugin};

pub struct Misbehaving {
    mode: String,
}

impl PriorPlugin for Misbehaving {
    fn create(config: &str) -> Result<Self, String> {
        match config {
            "fail-create" => Err("this configuration is rejected on purpose".into()),
            "panic-create" => panic!("panic in create on purpose"),
            _ => Ok(Self {
                mode: config.to_string(),
            }),
        }
    }

    fn name(&self) -> String {
        format!("misbehaving({})", self.mode)
    }

    fn dim(&self) -> usize {
        if self.mode == "dim3" { 3 } else { 16 }
    }

    fn log_prob(&self, phi: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let mut lp: Vec<f32> = phi
            .chunks_exact(16)
            .map(|r| -0.5 * r.iter().map(|x| x * x).sum::<f32>())
            .collect();
        match self.mode.as_str() {
            "wrong-length" => lp.truncate(n - 1),
            "panic" => panic!("log_prob panics on purpose (batch of {n})"),
            "nan" => lp[n - 1] = f32::NAN,
            "plus-infinity" => lp[0] = f32::INFINITY,
            _ => {}
        }
        Ok(lp)
    }

    fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>, String> {
        let mut v: Vec<f32> = (0..n * 16)
            .map(|i| ((i as u64 ^ seed) % 7) as f32 - 3.0)
            .collect();
        match self.mode.as_str() {
            "sample-short" => v.truncate(n * 16 - 1),
            "sample-nan" => v[5] = f32::NAN,
            _ => {}
        }
        Ok(v)
    }
}

declare_prior_plugin!(Misbehaving);
