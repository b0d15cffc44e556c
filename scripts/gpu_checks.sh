#!/usr/bin/env bash
# GPU checks, run on a lent CUDA machine from the repository root; results land in $OUT.
# Wheels the machine lacks (diffusers, omegaconf, antlr4, PyMCubes, trimesh, matplotlib, gsplat) travel
# in .gpuwhl/. Every benchmark runs the sound default acceptance rule (tolerance 0.15 exact-step^2).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .gpuwhl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpuwhl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"
STEPS=${STEPS:-600}
echo "== bench generate (tiny prior, batched executor, window 8)"
timeout "${T_GENERATE:-140}" python3 -m dreampropeller bench generate --prompt "a red cube" --steps "$STEPS" \
  --window 8 --executor batched --json "$OUT/bench_generate_cuda.json" 2>&1 | tail -8
echo "== bench prior (SD 2.1-base UNet, random weights, fp16)"
timeout "${T_PRIOR:-70}" python3 -m dreampropeller bench prior --json "$OUT/bench_prior_cuda.json" 2>&1 | tail -12
echo "== VSD propelled vs sequential (SD 2.1-base-shaped random models), authors' worker LoRA mode"
timeout "${T_VSD:-70}" python3 -m dreampropeller bench vsd --prior random --steps 200 --modes worker --json "$OUT/bench_vsd_worker_cuda.json" 2>&1 | tail -6
echo "== VSD synchronized LoRA mode"
timeout "${T_VSD2:-60}" python3 -m dreampropeller bench vsd --prior random --steps 200 --modes synchronized --json "$OUT/bench_vsd_sync_cuda.json" 2>&1 | tail -6
echo "== torch vs gsplat rasterizer (images and gradients; gsplat compiles its kernels on first use)"
timeout "${T_RASTER:-240}" python3 -m dreampropeller.scene.gaussian_raster --check 2>&1 | tail -20 \
  | tee "$OUT/gaussian_raster_check.txt"
echo "== bench generate, 3D Gaussians (dreamgaussian config, window 8)"
timeout "${T_GAUSS:-150}" python3 -m dreampropeller bench generate --prompt "a red cube" --window 8 \
  --executor batched --representation gaussians --config dreamgaussian \
  --json "$OUT/bench_generate_gaussians_cuda.json" 2>&1 | tail -8
echo "== done"
