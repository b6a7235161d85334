"""PyTorch re-implementation of the reference 26-band photulator stack (speculator
Photulator.magnitudes as in spec §2.1: 26 sequential per-band networks, torch elementwise
activation), used as the same-run baseline for `popcosmos-cli bench emulator`
(scripts/bench-vs-reference.sh).

    python reference_photulator.py THREADS BATCH SECONDS WEIGHTS.safetensors
        -> one JSON line: median seconds per call and galaxy-evaluations/s (inputs U(0, 1)^15)
    python reference_photulator.py THREADS 1 0 WEIGHTS.safetensors IN.npy OUT.npy
        -> absolute magnitudes [n, 26] for the photulator inputs θ15 (θ without N, dust2 → √dust2) in IN.npy
           (checked: reproduces tests/fixtures/photulator_fixture.safetensors `absmag` exactly)
"""
import sys, time, json
import torch
from safetensors.torch import load_file

threads = int(sys.argv[1]); batch = int(sys.argv[2]); seconds = float(sys.argv[3])
torch.set_num_threads(threads)
t = load_file(sys.argv[4])
nb = 26
bands = []
for b in range(nb):
    p = f"band.{b}"
    layers = []
    for l in range(5):
        q = f"{p}.layer.{l}"
        layers.append((t[f"{q}.weight"].T.contiguous(), t[f"{q}.bias"], t[f"{q}.alpha"], t[f"{q}.beta"]))
    bands.append((t[f"{p}.input_shift"], t[f"{p}.input_scale"], layers,
                  t[f"{p}.output_shift"], t[f"{p}.output_scale"]))

def magnitudes(theta):
    out = []
    for shift, scale, layers, oshift, oscale in bands:
        x = torch.div(torch.sub(theta, shift), scale)
        for w, bias, alpha, beta in layers:
            x = torch.add(torch.matmul(x, w), bias)
            x = torch.mul(torch.add(beta, torch.mul(torch.sigmoid(torch.mul(alpha, x)), torch.sub(1.0, beta))), x)
        out.append(torch.add(torch.mul(x, oscale), oshift))
    return torch.cat(out, dim=-1)

if len(sys.argv) > 5:  # correctness: magnitudes for given inputs
    import numpy as np
    x = torch.from_numpy(np.load(sys.argv[5]).astype(np.float32))
    with torch.no_grad():
        np.save(sys.argv[6], magnitudes(x).numpy())
    sys.exit(0)
g = torch.Generator().manual_seed(1)
theta = torch.rand(batch, 15, generator=g)
times = []
with torch.no_grad():
    magnitudes(theta)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(times) < 3:
        s = time.perf_counter(); magnitudes(theta); times.append(time.perf_counter() - s)
times.sort(); med = times[len(times) // 2]
print(json.dumps({"impl": "torch-reference", "threads": threads, "batch": batch,
                  "median_s": med, "galaxies_per_s": batch / med, "calls": len(times)}))
