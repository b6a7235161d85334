#!/usr/bin/env python3
"""Fixed-rule subsets of the shared spec-z catalogues for the survey photo-z validation
(docs/validation.md, "KiDS and HSC+CFHT photo-z"): every K-th row that has a spectroscopic
redshift, then alternate rows go to the calibration half (even positions) and the
evaluation half (odd positions). Usage: photoz-subsets.py SHARED_DATA_DIR OUT_DIR"""
import csv, sys, os

SETS = {
    # name: (file, every K-th spec-z row)
    "kids": ("kids_kv450_steppz/kids_kv450_steppz.csv", 39),
    "clauds": ("clauds_hsc_cosmos_ugrizy/clauds_hsc_cosmos_ugrizy.csv", 11),
}

def main(src, out):
    os.makedirs(out, exist_ok=True)
    for name, (path, k) in SETS.items():
        with open(os.path.join(src, path)) as f:
            r = csv.DictReader(f)
            rows = [row for row in r if row["zspec"] not in ("", "nan")]
            fields = r.fieldnames
        if "row_id" in fields and "id" not in fields:
            fields = ["id"] + fields
            for row in rows:
                row["id"] = row["row_id"]
        sub = rows[::k]
        for half, part in (("all", sub), ("calib", sub[0::2]), ("eval", sub[1::2])):
            with open(os.path.join(out, f"{name}_{half}.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(part)
            print(name, half, len(part))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
