#!/usr/bin/env bash
# Issue 15's GPU checks as one prepared run for the `device` tool (an H200 whose python3 has torch, onnx,
# onnxruntime, numpy, pyyaml, tqdm, scikit-learn, pillow; not torch-pruning or pydantic, which travel as wheels).
#
# Here, once per session (the wheels are ignored by git and carried):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     torch-pruning==1.6.1 pydantic==2.11.10 pydantic-core==2.33.2 annotated-types==0.8.0 typing-inspection==0.4.2
#   (the versions this project tests with; pydantic and pydantic-core must stay a matching pair)
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# What comes back under $OUT: gpu.txt, tests.log, distill_scale_h200.json, bench.log, deploy_bf16.log and
# deploy_fp16.log. The multi-GPU torchrun (NCCL) check needs two GPUs: a one-GPU machine cannot run it.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "gpu_check: the carried wheels did not install (see the comment at the top)"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HOME=/tmp/gpu-home
mkdir -p "$HOME"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())" \
  | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/test_train_device.py tests/test_accel.py 2>&1 \
  | tail -25 | tee "$OUT/tests.log"
timeout 200 python3 benchmarks/distill_scale.py --device cuda --parts resnet18 overhead \
  --out "$OUT/distill_scale_h200.json" 2>&1 | tail -20 | tee "$OUT/bench.log"
for precision in bf16 fp16; do
  timeout 90 python3 -m edgecompress deploy --target arm --out "/tmp/gpu-out-$precision" --train-device cuda \
    --set distill.precision=$precision 2>&1 | tail -30 > "$OUT/deploy_$precision.log"
  echo "deploy $precision: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu.txt"
done
