#!/bin/bash
# Runs one evaluation manifest (docs/validation.md, "Real galaxies: SMC vs ensemble") in the
# current folder, which holds kids_eval.csv (scripts/photoz-subsets.py) and cosmos2020_demo.csv.
# Usage: POPCOSMOS=path/to/popcosmos-cli [MAXB=N] scripts/smc-eval-run.sh NAME kids|cosmos SAMPLER_YAML SEED LIBRARY
name=$1; survey=$2; sampler=$3; seed=$4; lib=$5
# The survey's lines; the sampler, initialisation and output lines are shared.
if [ $survey = kids ]; then
head='survey: {name: kids}
catalogue: {path: kids_eval.csv, id_column: id, units: nanomaggies, truth_columns: [zspec], missing_values: [-99.0, 1.0e+29]}
sps: {kind: photulator, weights: "builtin:photulator_kids9", emission_lines: true}
prior: {kind: prospector-alpha}'
else
head='survey: {name: cosmos, calibration: leistedt23}
catalogue: {path: cosmos2020_demo.csv, id_column: id, units: mjy, flux_pattern: "flux_{band}", error_pattern: "fluxerr_{band}", upper_limits: negative_error, truth_columns: [zspec]}
sps: {kind: photulator, emission_lines: true}
prior: {kind: prospector-alpha}
likelihood: {kind: student-t, nu: 2}'
fi
cat > $name.yaml <<EOT
$head
sampler: $sampler
init: {library_size: $lib}
output: {dir: $name}
seed: $seed
galaxies_per_batch: 50
EOT
rm -rf $name
start=$(date +%s)
RAYON_NUM_THREADS=${THREADS:-1} ${POPCOSMOS:-popcosmos-cli} run $name.yaml --quiet ${MAXB:+--max-batches $MAXB} > $name.log 2>&1
echo "wall $(( $(date +%s) - start )) s" >> $name.log
