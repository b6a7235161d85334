//! Convergence diagnostics on the host in f64, per galaxy and parameter.
//!
//! * **R̂**: rank-normalised split-R̂ of Vehtari et al. (2021), the maximum of the bulk R̂
//!   (on rank-normal z-scores) and the tail R̂ (on the z-scores of |x − median|).
//! * **Bulk ESS** on the rank-normalised split chains and **tail ESS** (the smaller ESS of
//!   the indicators x ≤ q₀.₀₅ and x ≤ q₀.₉₅), both with Geyer's initial monotone sequence
//!   estimator exactly as in ArviZ's `ess(method="bulk"/"tail")`.
//! * **τ**: emcee's integrated autocorrelation time — the autocorrelation function of every
//!   chain (walker) normalised by its own lag-0 value, averaged over chains, summed up to
//!   the automatic window M = min{m : m ≥ c τ(m)}, c = 5. Chains that never moved are left
//!   out of the average (τ = ∞ when all of them are stuck). emcee advises trusting τ only
//!   when the chain is longer than ~50 τ.
//!
//! Chains are laid out `[chains][draws]` for the single-series functions. For an ensemble
//! sampler each walker is treated as one chain; walkers are **not independent** (each moves
//! using the others' positions), so R̂ and ESS are optimistic there — τ is the more honest
//! measure of mixing for an ensemble.
//!
//! The cost is dominated by one sort per parameter (the folded ranks are merged from it in
//! linear time) and the lag sums, which stop at the Geyer / window truncation; galaxies run in
//! parallel with rayon.

use popcosmos_api::stats::quantile_sorted;
use rayon::prelude::*;

use crate::run::Chain;

/// What counts as converged; failing galaxies are flagged, not dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Largest acceptable rank-normalised split-R̂.
    pub max_rhat: f64,
    /// Smallest acceptable bulk ESS.
    pub min_ess_bulk: f64,
    /// Smallest acceptable tail ESS.
    pub min_ess_tail: f64,
    /// Smallest acceptable acceptance fraction.
    pub min_acceptance: f64,
    /// Largest acceptable acceptance fraction (a sampler accepting everything is not moving
    /// far enough, e.g. a too-small HMC step).
    pub max_acceptance: f64,
    /// Smallest acceptable number of draws per autocorrelation time (emcee advises 50);
    /// 0 disables the check.
    pub min_draws_per_tau: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_rhat: 1.05,
            min_ess_bulk: 400.0,
            min_ess_tail: 400.0,
            min_acceptance: 0.1,
            max_acceptance: 1.0,
            min_draws_per_tau: 0.0,
        }
    }
}

impl Thresholds {
    /// Human-readable list of the checks `d` fails (empty when it passes).
    pub fn flags(&self, d: &Diagnostics) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((i, v)) = worst(&d.rhat, |a, b| a > b)
            && above(v, self.max_rhat)
        {
            out.push(format!("rhat {v:.3} > {} (parameter {i})", self.max_rhat));
        }
        if let Some((i, v)) = worst(&d.ess_bulk, |a, b| a < b)
            && below(v, self.min_ess_bulk)
        {
            out.push(format!(
                "bulk ESS {v:.1} < {} (parameter {i})",
                self.min_ess_bulk
            ));
        }
        if let Some((i, v)) = worst(&d.ess_tail, |a, b| a < b)
            && below(v, self.min_ess_tail)
        {
            out.push(format!(
                "tail ESS {v:.1} < {} (parameter {i})",
                self.min_ess_tail
            ));
        }
        if let Some(a) = d.acceptance {
            if below(a, self.min_acceptance) {
                out.push(format!("acceptance {a:.3} < {}", self.min_acceptance));
            }
            if a > self.max_acceptance {
                out.push(format!("acceptance {a:.3} > {}", self.max_acceptance));
            }
        }
        if self.min_draws_per_tau > 0.0
            && let Some((i, tau)) = worst(&d.autocorr_time, |a, b| a > b)
            && below(d.draws as f64, self.min_draws_per_tau * tau)
        {
            out.push(format!(
                "{} draws < {} × tau {tau:.1} (parameter {i})",
                d.draws, self.min_draws_per_tau
            ));
        }
        out
    }
}

/// `v > limit`, or NaN.
fn above(v: f64, limit: f64) -> bool {
    v.is_nan() || v > limit
}

/// `v < limit`, or NaN.
fn below(v: f64, limit: f64) -> bool {
    v.is_nan() || v < limit
}

/// The worst entry by `worse` (NaN is worst of all), with its index.
fn worst(values: &[f64], worse: impl Fn(f64, f64) -> bool) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in values.iter().enumerate() {
        best = match best {
            None => Some((i, v)),
            Some((_, b)) if b.is_nan() => best,
            Some(_) if v.is_nan() => Some((i, v)),
            Some((_, b)) if worse(v, b) => Some((i, v)),
            keep => keep,
        };
    }
    best
}

/// Diagnostics of one galaxy; vectors are indexed by parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    /// Rank-normalised split-R̂, max(bulk, tail).
    pub rhat: Vec<f64>,
    /// Bulk effective sample size.
    pub ess_bulk: Vec<f64>,
    /// Tail effective sample size.
    pub ess_tail: Vec<f64>,
    /// emcee integrated autocorrelation time, in draws (of the thinned chain).
    pub autocorr_time: Vec<f64>,
    /// Acceptance fraction, if known.
    pub acceptance: Option<f64>,
    /// Draws per chain.
    pub draws: usize,
    /// Number of chains (walkers).
    pub chains: usize,
}

impl Diagnostics {
    /// Largest R̂ over parameters (NaN if any is NaN).
    pub fn max_rhat(&self) -> f64 {
        worst(&self.rhat, |a, b| a > b).map_or(f64::NAN, |w| w.1)
    }
    /// Smallest bulk ESS over parameters.
    pub fn min_ess_bulk(&self) -> f64 {
        worst(&self.ess_bulk, |a, b| a < b).map_or(f64::NAN, |w| w.1)
    }
    /// Smallest tail ESS over parameters.
    pub fn min_ess_tail(&self) -> f64 {
        worst(&self.ess_tail, |a, b| a < b).map_or(f64::NAN, |w| w.1)
    }
    /// Largest autocorrelation time over parameters.
    pub fn max_autocorr_time(&self) -> f64 {
        worst(&self.autocorr_time, |a, b| a > b).map_or(f64::NAN, |w| w.1)
    }
    /// The checks of `thresholds` this galaxy fails.
    pub fn flags(&self, thresholds: &Thresholds) -> Vec<String> {
        thresholds.flags(self)
    }
}

/// Diagnostics of one galaxy from `samples` laid out `[draws][chains][dim]`.
pub fn diagnose_galaxy(
    samples: &[f64],
    draws: usize,
    chains: usize,
    dim: usize,
    acceptance: Option<f64>,
) -> Diagnostics {
    assert_eq!(
        samples.len(),
        draws * chains * dim,
        "samples must be [draws][chains][dim]"
    );
    let table = ZTable::new(split_size(chains, draws));
    let mut series = vec![0.0; chains * draws];
    let mut out = empty(dim, draws, chains, acceptance);
    for p in 0..dim {
        for c in 0..chains {
            for t in 0..draws {
                series[c * draws + t] = samples[(t * chains + c) * dim + p];
            }
        }
        push(
            &mut out,
            &param_diagnostics(&series, chains, &table, Want::ALL),
        );
    }
    out
}

/// Diagnostics of every galaxy of a chain (walkers as chains), in parallel over galaxies.
pub fn diagnose_chain(chain: &Chain) -> Vec<Diagnostics> {
    let (kept, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    let table = ZTable::new(split_size(w, kept));
    (0..g)
        .into_par_iter()
        .map(|galaxy| {
            let mut out = empty(d, kept, w, chain.acceptance.get(galaxy).copied());
            let mut series = vec![0.0; w * kept];
            for p in 0..d {
                for c in 0..w {
                    for t in 0..kept {
                        series[c * kept + t] =
                            chain.samples[((t * w + c) * g + galaxy) * d + p] as f64;
                    }
                }
                push(&mut out, &param_diagnostics(&series, w, &table, Want::ALL));
            }
            out
        })
        .collect()
}

fn empty(dim: usize, draws: usize, chains: usize, acceptance: Option<f64>) -> Diagnostics {
    Diagnostics {
        rhat: Vec::with_capacity(dim),
        ess_bulk: Vec::with_capacity(dim),
        ess_tail: Vec::with_capacity(dim),
        autocorr_time: Vec::with_capacity(dim),
        acceptance,
        draws,
        chains,
    }
}

fn push(out: &mut Diagnostics, p: &ParamDiagnostics) {
    out.rhat.push(p.rhat);
    out.ess_bulk.push(p.ess_bulk);
    out.ess_tail.push(p.ess_tail);
    out.autocorr_time.push(p.autocorr_time);
}

/// Rank-normalised split-R̂ (max of bulk and tail) of `x` `[chains][draws]`.
pub fn rhat(x: &[f64], chains: usize) -> f64 {
    let table = ZTable::new(split_size(chains, x.len() / chains.max(1)));
    param_diagnostics(
        x,
        chains,
        &table,
        Want {
            rhat: true,
            ..Want::NONE
        },
    )
    .rhat
}

/// Bulk ESS of `x` `[chains][draws]`.
pub fn ess_bulk(x: &[f64], chains: usize) -> f64 {
    let table = ZTable::new(split_size(chains, x.len() / chains.max(1)));
    param_diagnostics(
        x,
        chains,
        &table,
        Want {
            ess_bulk: true,
            ..Want::NONE
        },
    )
    .ess_bulk
}

/// Tail ESS of `x` `[chains][draws]`.
pub fn ess_tail(x: &[f64], chains: usize) -> f64 {
    let table = ZTable::empty();
    param_diagnostics(
        x,
        chains,
        &table,
        Want {
            ess_tail: true,
            ..Want::NONE
        },
    )
    .ess_tail
}

/// emcee integrated autocorrelation time of `x` `[chains][draws]` with window constant `c`
/// (emcee uses c = 5).
pub fn autocorr_time(x: &[f64], chains: usize, c: f64) -> f64 {
    if chains == 0 || x.len() < chains || x.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    integrated_time(x, chains, c)
}

struct ParamDiagnostics {
    rhat: f64,
    ess_bulk: f64,
    ess_tail: f64,
    autocorr_time: f64,
}

/// Which statistics [`param_diagnostics`] computes (the others are NaN).
#[derive(Debug, Clone, Copy)]
struct Want {
    rhat: bool,
    ess_bulk: bool,
    ess_tail: bool,
    tau: bool,
}

impl Want {
    const NONE: Want = Want {
        rhat: false,
        ess_bulk: false,
        ess_tail: false,
        tau: false,
    };
    const ALL: Want = Want {
        rhat: true,
        ess_bulk: true,
        ess_tail: true,
        tau: true,
    };
}

/// Number of values after splitting every chain in two halves (odd draws drop the middle).
fn split_size(chains: usize, draws: usize) -> usize {
    2 * chains * (draws / 2)
}

/// Φ⁻¹((r − 3/8)/(S + 1/4)) for integer ranks r = 1..S, computed once per size S.
struct ZTable {
    size: usize,
    z: Vec<f64>,
}

impl ZTable {
    fn new(size: usize) -> Self {
        let z = (1..=size).map(|r| rank_to_z(r as f64, size)).collect();
        Self { size, z }
    }

    fn empty() -> Self {
        Self {
            size: 0,
            z: Vec::new(),
        }
    }

    /// z-score of a doubled rank 2r (odd values are tie averages).
    fn get(&self, doubled_rank: usize) -> f64 {
        if doubled_rank.is_multiple_of(2) {
            self.z[doubled_rank / 2 - 1]
        } else {
            rank_to_z(doubled_rank as f64 / 2.0, self.size)
        }
    }
}

fn rank_to_z(rank: f64, size: usize) -> f64 {
    normal_quantile((rank - 0.375) / (size as f64 + 0.25))
}

fn param_diagnostics(x: &[f64], chains: usize, table: &ZTable, want: Want) -> ParamDiagnostics {
    let draws = x.len() / chains.max(1);
    let half = draws / 2;
    let mut out = ParamDiagnostics {
        rhat: f64::NAN,
        ess_bulk: f64::NAN,
        ess_tail: f64::NAN,
        autocorr_time: f64::NAN,
    };
    if chains == 0 || half < 2 || x.iter().any(|v| !v.is_finite()) {
        return out;
    }
    // Split chains: first and last `half` draws of each chain → [2 chains][half].
    let mut split = Vec::with_capacity(2 * chains * half);
    for c in x.chunks_exact(draws) {
        split.extend_from_slice(&c[..half]);
        split.extend_from_slice(&c[draws - half..]);
    }
    let m = 2 * chains;
    let size = split.len();

    let order = sort_order(&split);
    let sorted: Vec<f64> = order.iter().map(|&i| split[i as usize]).collect();

    let mut z = vec![0.0; size];
    if want.rhat || want.ess_bulk {
        assert_eq!(size, table.size, "z-table built for another size");
        // Bulk: z-scores of the ranks.
        assign_z(&order, &sorted, table, &mut z);
        if want.ess_bulk {
            out.ess_bulk = ess_plain(&z, m);
        }
    }
    if want.rhat {
        let rhat_bulk = rhat_plain(&z, m);
        // Tail: ranks of |x − median|, merged in linear time from the sorted order.
        let med = quantile_sorted(&sorted, 0.5);
        let p = sorted.partition_point(|&v| v < med);
        let (mut i, mut j) = (p, p); // left side walks down from p − 1, right side up from p.
        let mut folded_order = Vec::with_capacity(size);
        let mut folded_sorted = Vec::with_capacity(size);
        while folded_order.len() < size {
            let take_left = if i == 0 {
                false
            } else if j == size {
                true
            } else {
                med - sorted[i - 1] <= sorted[j] - med
            };
            if take_left {
                i -= 1;
                folded_order.push(order[i]);
                folded_sorted.push(med - sorted[i]);
            } else {
                folded_order.push(order[j]);
                folded_sorted.push(sorted[j] - med);
                j += 1;
            }
        }
        assign_z(&folded_order, &folded_sorted, table, &mut z);
        let rhat_tail = rhat_plain(&z, m);
        out.rhat = if rhat_bulk.is_nan() || rhat_tail.is_nan() {
            f64::NAN
        } else {
            rhat_bulk.max(rhat_tail)
        };
    }
    if want.ess_tail {
        // Tail ESS: indicators of the 5 % and 95 % quantiles.
        let mut ess_tail = f64::INFINITY;
        for q in [0.05, 0.95] {
            let qv = quantile_sorted(&sorted, q);
            for (zi, &v) in z.iter_mut().zip(&split) {
                *zi = if v <= qv { 1.0 } else { 0.0 };
            }
            ess_tail = ess_tail.min(ess_plain(&z, m));
        }
        out.ess_tail = ess_tail;
    }
    if want.tau {
        out.autocorr_time = integrated_time(x, chains, 5.0);
    }
    out
}

/// Ascending sort order of finite `values`: an LSD radix sort on order-preserving integer
/// keys. Linear time, and fast even in unoptimised (debug) builds, where a comparison sort
/// of 25 600 values costs ~0.1 s; byte positions shared by all keys are skipped.
fn sort_order(values: &[f64]) -> Vec<u32> {
    let n = values.len();
    let mut keys: Vec<u64> = values
        .iter()
        .map(|&v| {
            let b = v.to_bits();
            if b >> 63 == 1 { !b } else { b | (1 << 63) }
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut keys_next = vec![0u64; n];
    let mut order_next = vec![0u32; n];
    for shift in (0..64).step_by(8) {
        let mut start = [0usize; 256];
        for &k in &keys {
            start[((k >> shift) & 0xff) as usize] += 1;
        }
        if start.contains(&n) {
            continue;
        }
        let mut acc = 0;
        for s in start.iter_mut() {
            let c = *s;
            *s = acc;
            acc += c;
        }
        for (&k, &o) in keys.iter().zip(&order) {
            let b = ((k >> shift) & 0xff) as usize;
            keys_next[start[b]] = k;
            order_next[start[b]] = o;
            start[b] += 1;
        }
        std::mem::swap(&mut keys, &mut keys_next);
        std::mem::swap(&mut order, &mut order_next);
    }
    order
}

/// Write rank z-scores (average ranks for ties) into `z`, given the sort order and the sorted
/// values.
fn assign_z(order: &[u32], sorted: &[f64], table: &ZTable, z: &mut [f64]) {
    let n = order.len();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && sorted[end] == sorted[start] {
            end += 1;
        }
        // Ranks start+1 ..= end; doubled average rank = start + 1 + end.
        let zv = table.get(start + 1 + end);
        for &k in &order[start..end] {
            z[k as usize] = zv;
        }
        start = end;
    }
}

/// Σ aᵢ bᵢ over the common length, unrolled by 8 (keeps debug builds usable).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let (mut s0, mut s1) = (0.0, 0.0);
    for (x, y) in ca.zip(cb) {
        s0 += x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3];
        s1 += x[4] * y[4] + x[5] * y[5] + x[6] * y[6] + x[7] * y[7];
    }
    for (x, y) in ra.iter().zip(rb) {
        s0 += x * y;
    }
    s0 + s1
}

/// Mean and sample variance (ddof = 1).
fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mut sum = 0.0;
    for v in x {
        sum += v;
    }
    let mean = sum / n;
    let mut ss = 0.0;
    for v in x {
        ss += (v - mean) * (v - mean);
    }
    (mean, ss / (n - 1.0))
}

/// Classic (Gelman–Rubin, non-split) R̂ of `x` `[m][n]`.
fn rhat_plain(x: &[f64], m: usize) -> f64 {
    let n = x.len() / m;
    let (means, vars): (Vec<f64>, Vec<f64>) = x.chunks_exact(n).map(mean_var).unzip();
    let between = n as f64 * mean_var(&means).1;
    let within = vars.iter().sum::<f64>() / m as f64;
    ((between / within + n as f64 - 1.0) / n as f64).sqrt()
}

/// Geyer initial-monotone-sequence ESS of `x` `[m][n]` (ArviZ `_ess`).
fn ess_plain(x: &[f64], m: usize) -> f64 {
    let n = x.len() / m;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-15 {
        return x.len() as f64;
    }
    let mut means = Vec::with_capacity(m);
    let mut centered = Vec::with_capacity(x.len());
    for c in x.chunks_exact(n) {
        let (mu, _) = mean_var(c);
        means.push(mu);
        centered.extend(c.iter().map(|v| v - mu));
    }
    // Mean over chains of the biased autocovariance at lag k.
    let acov = |k: usize| -> f64 {
        let mut s = 0.0;
        for c in centered.chunks_exact(n) {
            s += dot(&c[..n - k], &c[k..]);
        }
        s / (n * m) as f64
    };
    let nf = n as f64;
    let mean_var_within = acov(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var_within * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += mean_var(&means).1;
    }
    let rho = |k: usize| 1.0 - (mean_var_within - acov(k)) / var_plus;

    let mut rho_t = vec![0.0; n];
    let mut even = 1.0;
    rho_t[0] = even;
    let mut odd = rho(1);
    rho_t[1] = odd;
    // Geyer's initial positive sequence.
    let mut t = 1usize;
    while t + 3 < n && even + odd > 0.0 {
        even = rho(t + 1);
        odd = rho(t + 2);
        if even + odd >= 0.0 {
            rho_t[t + 1] = even;
            rho_t[t + 2] = odd;
        }
        t += 2;
    }
    let max_t = t as isize - 2;
    if odd > 0.0 && max_t + 1 >= 0 {
        rho_t[(max_t + 1) as usize] = odd;
    }
    // Geyer's initial monotone sequence.
    let mut t = 1isize;
    while t <= max_t - 2 {
        let (a, b) = (t as usize - 1, t as usize);
        if rho_t[b + 1] + rho_t[b + 2] > rho_t[a] + rho_t[b] {
            rho_t[b + 1] = (rho_t[a] + rho_t[b]) / 2.0;
            rho_t[b + 2] = rho_t[b + 1];
        }
        t += 2;
    }
    let total = (m * n) as f64;
    let head: f64 = rho_t[..(max_t + 1).max(0) as usize].iter().sum();
    let next = rho_t
        .get((max_t + 1).max(0) as usize)
        .copied()
        .unwrap_or(0.0);
    let tau = (-1.0 + 2.0 * head + next).max(1.0 / total.log10());
    total / tau
}

/// emcee `integrated_time`: chain-averaged normalised ACF with the automatic window.
fn integrated_time(x: &[f64], chains: usize, c: f64) -> f64 {
    let n = x.len() / chains;
    let mut centered: Vec<f64> = Vec::with_capacity(x.len());
    let mut acov0 = Vec::with_capacity(chains);
    for ch in x.chunks_exact(n) {
        let (mu, _) = mean_var(ch);
        let start = centered.len();
        centered.extend(ch.iter().map(|v| v - mu));
        let a0 = dot(&centered[start..], &centered[start..]);
        if a0 > 0.0 {
            acov0.push(a0);
        } else {
            centered.truncate(start); // a chain that never moved carries no information
        }
    }
    if acov0.is_empty() {
        return f64::INFINITY;
    }
    let k = acov0.len() as f64;
    let mut tau = 1.0; // 2 Σ_{j ≤ lag} ρ_j − 1, starting with ρ_0 = 1.
    for lag in 1..n {
        let mut rho = 0.0;
        for (cc, a0) in centered.chunks_exact(n).zip(&acov0) {
            rho += dot(&cc[..n - lag], &cc[lag..]) / a0;
        }
        tau += 2.0 * rho / k;
        if lag as f64 >= c * tau {
            return tau;
        }
    }
    tau
}

/// Standard-normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306_167_813_6).abs() < 1e-7);
    }

    #[test]
    fn radix_sort_orders_like_total_cmp() {
        let mut x: Vec<f64> = (0..1000)
            .map(|i| (((i * 7919) % 1013) as f64 - 500.0) * 1.37e-3)
            .collect();
        x.extend([0.0, -0.0, 1e300, -1e300, 5e-324, -5e-324, 3.0, 3.0]);
        let order = sort_order(&x);
        let sorted: Vec<f64> = order.iter().map(|&i| x[i as usize]).collect();
        let mut expected = x.clone();
        expected.sort_by(f64::total_cmp);
        assert_eq!(sorted, expected);
    }

    #[test]
    fn folded_ranks_match_direct_sort() {
        // Tail R̂ via the linear merge equals tail R̂ from sorting |x − median| directly.
        let x: Vec<f64> = (0..400)
            .map(|i| ((i * 7919) % 401) as f64 * 0.37 - 50.0)
            .collect();
        let table = ZTable::new(split_size(4, 100));
        let p = param_diagnostics(&x, 4, &table, Want::ALL);
        let mut split = Vec::new();
        for c in x.chunks_exact(100) {
            split.extend_from_slice(&c[..50]);
            split.extend_from_slice(&c[50..]);
        }
        let mut s = split.clone();
        s.sort_by(f64::total_cmp);
        let med = quantile_sorted(&s, 0.5);
        let folded: Vec<f64> = split.iter().map(|v| (v - med).abs()).collect();
        let mut order: Vec<u32> = (0..folded.len() as u32).collect();
        order.sort_by(|&a, &b| folded[a as usize].total_cmp(&folded[b as usize]));
        let sorted: Vec<f64> = order.iter().map(|&i| folded[i as usize]).collect();
        let mut z = vec![0.0; folded.len()];
        assign_z(&order, &sorted, &table, &mut z);
        let tail = rhat_plain(&z, 8);
        assert!(p.rhat >= tail - 1e-12);
        let mut zb = vec![0.0; split.len()];
        let mut ob: Vec<u32> = (0..split.len() as u32).collect();
        ob.sort_by(|&a, &b| split[a as usize].total_cmp(&split[b as usize]));
        assign_z(&ob, &s, &table, &mut zb);
        let bulk = rhat_plain(&zb, 8);
        assert!((p.rhat - bulk.max(tail)).abs() < 1e-12);
    }
}
