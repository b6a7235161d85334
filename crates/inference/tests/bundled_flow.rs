//! The bundled distilled flow (`prior: {kind: flow}`) is what its card says: a faithful,
//! normalised density of the population it was distilled from.

use candle_core::{DType, Device};
use popcosmos_api::{HostRng, Prior};
use popcosmos_inference::build_prior;
use popcosmos_models::HubConfig;
use popcosmos_priors::{PriorSpec, ProspectorAlphaPrior};

/// The flow was distilled from the bundled diffusion prior, itself trained on draws of the
/// Prospector-α prior. The forward KL(PA ‖ q) = E_PA[ln p̃_PA − ln q] − ln Z_PA, with the
/// normaliser of the (unnormalised) Prospector-α log-density estimated by importance
/// sampling from the flow, Z = E_q[p̃_PA / q], should be of the order of the chain
/// PA → diffusion (0.20 nats, docs/priors.md) → flow (0.35 nats); a broken or wrong file
/// gives many nats.
/// ln p of every row, as f64.
fn log_prob(prior: &dyn Prior, x: &candle_core::Tensor) -> Vec<f64> {
    prior
        .log_prob(x)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn bundled_flow_is_the_default_and_close_to_its_population() {
    let spec: PriorSpec = serde_saphyr::from_str("{kind: flow}").unwrap();
    let flow = build_prior(&spec, &Device::Cpu, &HubConfig::from_env()).unwrap();
    let pa = ProspectorAlphaPrior::new();
    let n = 2000;
    let x = pa
        .sample(n, &mut HostRng::seed_from_u64(4), &Device::Cpu)
        .unwrap();
    let lq = log_prob(flow.as_ref(), &x);
    let lp = log_prob(&pa, &x);
    assert!(
        lq.iter().all(|v| v.is_finite()),
        "flow gives a non-finite ln q"
    );
    let d: Vec<f64> = lp.iter().zip(&lq).map(|(p, q)| p - q).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let stderr = sd / (n as f64).sqrt();
    // Its own draws are finite with finite density; they estimate ln Z_PA.
    let m = 8000;
    let s = flow
        .sample(m, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    assert_eq!(s.dims(), &[m, 16]);
    let ls = log_prob(flow.as_ref(), &s);
    assert!(ls.iter().all(|v| v.is_finite()));
    let lps = log_prob(&pa, &s);
    let lw: Vec<f64> = lps.iter().zip(&ls).map(|(p, q)| p - q).collect();
    let max = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ln_z = max + (lw.iter().map(|v| (v - max).exp()).sum::<f64>() / m as f64).ln();
    let kl = mean - ln_z;
    println!(
        "E_PA[ln p~_PA - ln q_flow] = {mean:.3} ± {stderr:.3} (sd {sd:.2}); ln Z_PA = {ln_z:.3}; KL(PA || flow) = {kl:.3} nats"
    );
    assert!(kl > -0.1 && kl < 1.0, "forward KL(PA || flow) {kl} nats");
}
