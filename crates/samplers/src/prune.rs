//! Burn-in repair for ensembles: walkers stuck in a minor mode are moved onto good walkers.
//!
//! Why: a walker that lands in a local mode tens of nats below the rest of the ensemble
//! almost never leaves it under stretch/DE moves (their proposals interpolate between
//! walkers), yet it keeps contributing its draws, which widens intervals and inflates R̂.
//! Prospector and emcee users handle this by re-seeding such walkers from the good ones
//! during burn-in; since it only changes the *starting* ensemble of the post-burn-in run, the
//! sampling that follows stays a valid MCMC.

use popcosmos_api::{DType, RandomSource, Result, Shape, Tensor};

/// Replace, per galaxy, every walker whose log-density is more than `max_deficit` below the
/// ensemble median (or is NaN/−∞) by a copy of a walker drawn uniformly from the best half,
/// plus `jitter`·𝒩(0, I). `position` is `[walkers, galaxies, dim]`, `log_prob`
/// `[walkers, galaxies]`. Returns the new positions and the number of walkers replaced
/// per galaxy.
pub fn prune_stuck_walkers(
    position: &Tensor,
    log_prob: &Tensor,
    max_deficit: f64,
    jitter: f64,
    rng: &mut dyn RandomSource,
) -> Result<(Tensor, Vec<u32>)> {
    let (w, g, d) = position.dims3()?;
    let device = position.device();
    let lp = log_prob.to_dtype(DType::F32)?;
    // NaN → −∞ so it sorts last and counts as stuck.
    let lp = lp
        .eq(&lp)?
        .where_cond(&lp, &lp.ones_like()?.affine(0.0, f64::NEG_INFINITY)?)?;
    let by_galaxy = lp.t()?.contiguous()?; // [G, W]
    let (sorted, order) = by_galaxy.sort_last_dim(false)?; // descending
    let median = sorted.narrow(1, w / 2, 1)?; // [G, 1]
    let threshold = median.affine(1.0, -max_deficit)?;
    let stuck = by_galaxy.broadcast_lt(&threshold)?; // [G, W]
    // Donor for every slot: a uniformly drawn rank in the best half.
    let half = (w / 2).max(1);
    let ranks: Vec<u32> = rng.indices(g * w, half);
    let ranks = Tensor::from_vec(ranks, (g, w), device)?;
    let donor = order.gather(&ranks, 1)?; // [G, W] walker indices
    // Row of (walker, galaxy) in the flattened [W·G, D] positions.
    let gal = Tensor::arange(0u32, g as u32, device)?
        .unsqueeze(1)?
        .broadcast_as((g, w))?;
    let rows = ((donor.to_dtype(DType::U32)? * g as f64)?.to_dtype(DType::U32)? + gal)?;
    let rows = rows.t()?.contiguous()?.flatten_all()?; // walker-major, like `position`
    let flat = position.reshape((w * g, d))?;
    let donor_pos = flat.index_select(&rows, 0)?.reshape((w, g, d))?;
    let noise = rng.normal(&Shape::from((w, g, d)), device)?;
    let donor_pos = (donor_pos + (noise.to_dtype(position.dtype())? * jitter)?)?;
    let stuck_wg = stuck.t()?.contiguous()?; // [W, G] u8
    let mask = stuck_wg
        .unsqueeze(2)?
        .broadcast_as((w, g, d))?
        .contiguous()?;
    let new = mask.where_cond(&donor_pos, position)?;
    let counts = stuck_wg.to_dtype(DType::U32)?.sum(0)?.to_vec1::<u32>()?;
    Ok((new, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng};

    #[test]
    fn stuck_walkers_move_onto_the_best_half_and_others_stay() {
        let dev = Device::Cpu;
        let (w, g, d) = (8usize, 3usize, 2usize);
        // Galaxy 0: walkers 6, 7 stuck (−50, NaN); galaxy 1: none; galaxy 2: walker 0 at −∞.
        let mut lp = vec![0f32; w * g];
        let mut pos = vec![0f32; w * g * d];
        for wi in 0..w {
            for gi in 0..g {
                lp[wi * g + gi] = -(wi as f32) * 0.5;
                for k in 0..d {
                    pos[(wi * g + gi) * d + k] = (100 * wi + 10 * gi + k) as f32;
                }
            }
        }
        lp[6 * g] = -50.0;
        lp[7 * g] = f32::NAN;
        lp[2] = f32::NEG_INFINITY;
        let lp_t = Tensor::from_vec(lp.clone(), (w, g), &dev).unwrap();
        let pos_t = Tensor::from_vec(pos.clone(), (w, g, d), &dev).unwrap();
        let mut rng = HostRng::seed_from_u64(3);
        let (new, counts) = prune_stuck_walkers(&pos_t, &lp_t, 10.0, 0.0, &mut rng).unwrap();
        assert_eq!(counts, vec![2, 0, 1]);
        let new = new.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Best half of each galaxy by log-density.
        let mut best_half = vec![vec![]; g];
        for gi in 0..g {
            let mut idx: Vec<usize> = (0..w).collect();
            let key = |i: usize| {
                let v = lp[i * g + gi];
                if v.is_nan() { f32::NEG_INFINITY } else { v }
            };
            idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
            best_half[gi] = idx[..w / 2].to_vec();
        }
        for wi in 0..w {
            for gi in 0..g {
                let at = (wi * g + gi) * d;
                let stuck = (gi == 0 && wi >= 6) || (gi == 2 && wi == 0);
                if stuck {
                    // A copy of some best-half walker of the *same* galaxy.
                    let donor = (new[at] as usize) / 100;
                    assert!(best_half[gi].contains(&donor), "g{gi} w{wi} got {donor}");
                    assert_eq!(new[at], pos[(donor * g + gi) * d]);
                    assert_eq!(new[at + 1], pos[(donor * g + gi) * d + 1]);
                } else {
                    assert_eq!(&new[at..at + d], &pos[at..at + d]);
                }
            }
        }
    }
}
