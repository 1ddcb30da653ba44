#!/bin/bash
# Timelines of analyze and eval on the GPU machine (issues 14 and 16), two calls on one warm machine:
#   base  (carry .gpu/pack .gpu/cal .gpu/data .gpu/dist.tar.xz .gl) Node, onnxruntime-node 1.30,
#         dist; the 7B shape (Q/K bytes only: analyze reads nothing else) and the 1.1B shape;
#         analyze (cpu) with FK_SPECTRUM_TRACE, and PyTorch's best spectrum path in the same run
#   variants (carry as base; sets up when needed) the worker Gram graphs and worker counts
#   final-cpu (carry as base, optionally plus .gpu/dist-prev.tar.xz), then final-cuda (carry .gpucuda only)
#   final3 (carry as base, plus .gpu/dist-prev.tar.xz) the final build against 4 heads a task and 29d642d
#   threads (carry as base) workers with two onnxruntime threads each, and 13 workers
#   tune2 (carry as base) heads per task and spare cores, interleaved
#   notes (carry as base), then notes-cuda (carry .gpucuda only): an explicit GPU backend's notes
#   backlog (carry as base, plus .gpu/dist-prev.tar.xz) the pool's backlog against the previous build, CPU profiles
#   workers-read (carry as base) the workers reading their own rows: worker counts, graphs, main-thread path
#   cuda  (carry .gpucuda only) onnxruntime-node 1.29 with the CUDA EP: analyze --backend cuda
#         traced, and the 1.1B eval in fresh processes (provider start-up split off, profiled)
set -u
cd "$(dirname "$0")/../.."
phase=$1
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache-trace ORT_DISABLE_TELEMETRY=1
H=.gpu/data/heldout.txt M=/tmp/w/llama-1.1b-synthetic
run() { python3 bench/gpu/runs.py /tmp/node /tmp/m7 $OUT/analyze.jsonl "$@" >> $OUT/$phase.txt 2>&1; }
setup() {
  xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
  mkdir -p /tmp/ort130 && tar xJf .gpu/pack/ort.tar.xz -C /tmp/ort130 && tar xJf .gpu/dist.tar.xz
  ln -sfn /tmp/ort130/node_modules node_modules
  { date -u; nproc; uptime; } >> $OUT/$phase.txt
  [ -d /tmp/m7 ] || /tmp/node .gpu/cal/generate.js mistral-7b /tmp/m7 --qk-only >> $OUT/$phase.txt 2>&1
  [ -n "${SKIP_1B:-}" ] || [ -d $M ] || /tmp/node .gpu/cal/generate.js llama-1.1b $M >> $OUT/$phase.txt 2>&1
  cat /tmp/m7/*.safetensors > /dev/null
  [ -n "${SKIP_1B:-}" ] || cat $M/*.safetensors > /dev/null
}
if [ "$phase" = workers-read ]; then
  # the workers reading their own rows (no layer bytes cross threads): worker counts and Gram
  # graphs against the main-thread path, interleaved, and PyTorch's best path in the same run
  SKIP_1B=1 setup
  for r in 1 2 3; do
    run 'default' 1 FK_SPECTRUM_TRACE=$OUT/trace-default-$r.json -- --backend cpu
    run 'spare 0 (16 workers)' 1 FK_SPECTRUM_SPARE_CORES=0 -- --backend cpu
    run 'spare 2 (14 workers)' 1 FK_SPECTRUM_SPARE_CORES=2 -- --backend cpu
    run 'half' 1 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu
    run 'half, spare 0' 1 FK_SPECTRUM_WORKER_GRAPH=half FK_SPECTRUM_SPARE_CORES=0 -- --backend cpu
    run 'main-thread Gram' 1 FK_SPECTRUM_GRAM=main -- --backend cpu
    run 'auto' 1 -- --backend auto
  done
  run 'not primed' 2 FK_SPECTRUM_PRIME=0 -- --backend cpu
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = graphs ]; then
  # the Gram graph and spare cores, against the previous commit's build (.gpu/dist-prev.tar.xz), interleaved
  SKIP_1B=1 setup
  tar xJf .gpu/dist-prev.tar.xz
  for r in 1 2 3; do
    run 'previous build' 1 FK_BENCH_CLI=dist-prev/cli.js -- --backend cpu
    run 'gemm, spare 4' 1 -- --backend cpu
    run 'gemm, spare 2' 1 FK_SPECTRUM_SPARE_CORES=2 -- --backend cpu
    run 'half, spare 4' 1 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu
    run 'half, spare 3' 1 FK_SPECTRUM_WORKER_GRAPH=half FK_SPECTRUM_SPARE_CORES=3 -- --backend cpu
    run 'half, spare 2' 1 FK_SPECTRUM_WORKER_GRAPH=half FK_SPECTRUM_SPARE_CORES=2 FK_SPECTRUM_TRACE=$OUT/trace-half2-$r.json -- --backend cpu
  done
elif [ "$phase" = backlog ]; then
  # tasks held in the pool's backlog (at most two per worker) against the previous commit's build
  # (every task assigned when posted, three layers ahead), interleaved; one CPU profile per thread
  SKIP_1B=1 setup
  tar xJf .gpu/dist-prev.tar.xz
  for r in 1 2 3 4; do
    run 'backlog' 1 FK_SPECTRUM_TRACE=$OUT/trace-backlog-$r.json -- --backend cpu
    run 'previous build' 1 FK_BENCH_CLI=dist-prev/cli.js -- --backend cpu
    run 'auto' 1 -- --backend auto
  done
  mkdir -p /tmp/cpuprof && /tmp/node --cpu-prof --cpu-prof-dir=/tmp/cpuprof dist/cli.js analyze /tmp/m7 --backend cpu >> $OUT/$phase.txt 2>&1
  python3 bench/gpu/cpuprof_summary.py /tmp/cpuprof 8 > $OUT/cpuprof-summary.txt 2>&1
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = notes ]; then
  # what an explicit GPU backend's run says about its start-up (ort 1.30: webgpu; then the cuda
  # phase's environment: run `notes-cuda` with .gpucuda carried)
  SKIP_1B=1 setup
  for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  run 'webgpu' 1 -- --backend webgpu
  run 'cpu' 1 -- --backend cpu
elif [ "$phase" = notes-cuda ]; then
  [ -x /tmp/node ] || { echo "error: run a set-up phase first"; exit 3; }
  . bench/gpu/cuda-env.sh && use_ort_cuda
  run 'ort 1.29: cuda' 2 -- --backend cuda
  run 'ort 1.29: cpu' 1 -- --backend cpu
elif [ "$phase" = tune2 ]; then
  # heads per task and spare cores with the workers' own reads and the backlog, interleaved
  SKIP_1B=1 setup
  for r in 1 2 3 4; do
    run 'default (4 heads a task, 12 workers)' 1 -- --backend cpu
    run '2 heads a task' 1 FK_SPECTRUM_PART_HEADS=2 -- --backend cpu
    run '8 heads a task' 1 FK_SPECTRUM_PART_HEADS=8 -- --backend cpu
    run '13 workers' 1 FK_SPECTRUM_SPARE_CORES=3 -- --backend cpu
    run '2 heads a task, 13 workers' 1 FK_SPECTRUM_PART_HEADS=2 FK_SPECTRUM_SPARE_CORES=3 -- --backend cpu
  done
elif [ "$phase" = final3 ]; then
  # the final build (2 heads a task on many-core hosts) against 4 heads a task and this session's
  # starting build, auto (nothing measured) interleaved, PyTorch's best path in the same run
  SKIP_1B=1 setup
  tar xJf .gpu/dist-prev.tar.xz
  for r in 1 2 3 4; do
    run 'auto' 1 -- --backend auto
    run 'cpu' 1 FK_SPECTRUM_TRACE=$OUT/trace-final3-$r.json -- --backend cpu
    run '4 heads a task' 1 FK_SPECTRUM_PART_HEADS=4 -- --backend cpu
    run 'session start build (29d642d)' 1 FK_BENCH_CLI=dist-prev/cli.js -- --backend cpu
  done
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = threads ]; then
  # fewer workers with two onnxruntime threads each, and 13 workers, against the default (12 x 1)
  SKIP_1B=1 setup
  for r in 1 2 3 4; do
    run 'default (12 workers x 1 thread)' 1 -- --backend cpu
    run '6 workers x 2 threads' 1 FK_SPECTRUM_WORKER_THREADS=2 -- --backend cpu --threads 6
    run '8 workers x 2 threads' 1 FK_SPECTRUM_WORKER_THREADS=2 -- --backend cpu --threads 8
    run '13 workers x 1 thread' 1 FK_SPECTRUM_SPARE_CORES=3 -- --backend cpu
  done
elif [ "$phase" = variants ]; then
  # the worker Gram graphs (FK_SPECTRUM_WORKER_GRAPH) and worker counts, interleaved rounds
  setup
  for r in 1 2 3; do
    for g in batched gemm half; do
      run "$g" 1 FK_SPECTRUM_WORKER_GRAPH=$g FK_SPECTRUM_TRACE=$OUT/trace-$g-$r.json -- --backend cpu
      run "$g threads 12" 1 FK_SPECTRUM_WORKER_GRAPH=$g -- --backend cpu --threads 12
    done
  done
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = check ]; then
  # the defaults (gemm graph, cores - 4 workers, onnxruntime primed) against the previous ones, interleaved
  setup
  for r in 1 2 3; do
    run 'default' 1 FK_SPECTRUM_TRACE=$OUT/trace-default-$r.json -- --backend cpu
    run 'previous (batched, 16 workers, not primed)' 1 FK_SPECTRUM_WORKER_GRAPH=batched FK_SPECTRUM_PRIME=0 -- --backend cpu --threads 16
    run 'auto' 1 -- --backend auto
  done
  run 'default, not primed' 2 FK_SPECTRUM_PRIME=0 -- --backend cpu
  run 'half' 2 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu
  run 'threads 10' 1 -- --backend cpu --threads 10
  run 'threads 14' 1 -- --backend cpu --threads 14
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = cpu16 ]; then
  setup
  for r in 1 2; do
    run 'cpu' 1 -- --backend cpu
    run 'half' 1 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu
    run 'threads 10' 1 -- --backend cpu --threads 10
    run 'half, threads 10' 1 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu --threads 10
  done
elif [ "$phase" = cuda16 ]; then
  # the CUDA Gram (bfloat16 widened by the value table, no TF32), calibrated auto, accuracy
  [ -x /tmp/node ] || { echo "error: run a set-up phase first"; exit 3; }
  . bench/gpu/cuda-env.sh && use_ort_cuda
  KEEP_JSON=/tmp/analyze-cuda.json run 'cuda' 1 FK_SPECTRUM_TRACE=$OUT/trace-cuda-1.json -- --backend cuda
  for d in 1 2 3; do run "cuda prefetch $d" 1 FK_SPECTRUM_PREFETCH=$d FK_SPECTRUM_TRACE=$OUT/trace-cuda-p$d.json -- --backend cuda; done
  run 'cpu' 2 -- --backend cpu
  run 'auto --calibrate' 1 -- --backend auto --calibrate
  run 'auto (remembered)' 3 -- --backend auto
  run 'cuda' 2 -- --backend cuda
  mkdir -p /tmp/sprof && run 'cuda profiled' 1 FK_ORT_PROFILE=/tmp/sprof/p -- --backend cuda
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --check /tmp/analyze-cuda.json --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
  python3 bench/gpu/profile_ops.py '/tmp/sprof/p*.json' --top 20 > $OUT/profile-summary.txt 2>&1
elif [ "$phase" = setup ]; then
  setup
  for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
elif [ "$phase" = webgpu-eval ]; then
  # fused RMSNorms on the WebGPU EP: the trained fixture's perplexity, and the 1.1B's speed, fused or not
  setup
  for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  w() { /tmp/node .gpu/cal/eval-model.js "$@" | cut -c1-700 >> $OUT/webgpu-eval.jsonl 2>> $OUT/$phase.txt; }
  w .gpu/data/mistral-bytes $H webgpu:auto,webgpu:float32,cpu:auto
  FK_EVAL_FUSED=0 w .gpu/data/mistral-bytes $H webgpu:auto
  w $M $H webgpu:auto:64:16
  FK_EVAL_FUSED=0 w $M $H webgpu:auto:64:16
  mkdir -p /tmp/wprof && FK_ORT_PROFILE=/tmp/wprof/p w .gpu/data/mistral-bytes $H webgpu:auto:16:16
  python3 bench/gpu/profile_ops.py '/tmp/wprof/p*.json' > $OUT/profile-webgpu.txt 2>&1
elif [ "$phase" = final-cpu ]; then
  # issue 16's bar, onnxruntime-node 1.30 (CPU + WebGPU): auto (nothing measured) vs cpu vs webgpu,
  # interleaved with the previous build when .gpu/dist-prev.tar.xz was carried, PyTorch's best in the same run
  SKIP_1B=1 setup
  [ -f .gpu/dist-prev.tar.xz ] && tar xJf .gpu/dist-prev.tar.xz
  for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  for r in 1 2 3; do
    run 'auto' 1 -- --backend auto
    run 'cpu' 1 FK_SPECTRUM_TRACE=$OUT/trace-final-$r.json -- --backend cpu
    [ -d dist-prev ] && run 'previous build, cpu' 1 FK_BENCH_CLI=dist-prev/cli.js -- --backend cpu
  done
  run 'webgpu' 1 -- --backend webgpu
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig,gram --json $OUT/torch-gram.json >> $OUT/$phase.txt 2>&1
elif [ "$phase" = final-cuda ]; then
  # the same with onnxruntime-node 1.29 and its CUDA EP: calibration, then auto as remembered
  [ -x /tmp/node ] || { echo "error: run a set-up phase first"; exit 3; }
  . bench/gpu/cuda-env.sh && use_ort_cuda
  export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache-final-cuda VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  run 'auto, nothing measured' 1 -- --backend auto
  run 'auto --calibrate' 1 -- --backend auto --calibrate
  for r in 1 2 3; do run 'auto (remembered)' 1 -- --backend auto; run 'cpu' 1 -- --backend cpu; done
  run 'cuda' 2 -- --backend cuda
  run 'cuda, BitCast widening' 1 FK_SPECTRUM_GPU_WIDENING=bitcast -- --backend cuda
  mkdir -p /tmp/bprof && run 'cuda, BitCast widening, profiled' 1 FK_SPECTRUM_GPU_WIDENING=bitcast FK_ORT_PROFILE=/tmp/bprof/p -- --backend cuda
  python3 bench/gpu/profile_ops.py '/tmp/bprof/p*.json' --top 20 > $OUT/profile-bitcast.txt 2>&1
  cat $FACTORED_KEYS_CACHE_DIR/spectrum-backend.json >> $OUT/$phase.txt
elif [ "$phase" = base ]; then
  setup
  for i in 1 2 3; do run "cpu $i" 1 FK_SPECTRUM_TRACE=$OUT/trace-cpu-$i.json -- --backend cpu; done
  run 'auto' 2 -- --backend auto
  run 'cpu threads 12' 1 FK_SPECTRUM_TRACE=$OUT/trace-cpu-t12.json -- --backend cpu --threads 12
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig --json $OUT/torch-gram.json >> $OUT/base.txt 2>&1
elif [ "$phase" = cuda ]; then
  [ -x /tmp/node ] || { echo "error: run the base phase first"; exit 3; }
  . bench/gpu/cuda-env.sh && use_ort_cuda
  one() { /tmp/node .gpu/cal/eval-model.js $M $H cuda:auto:255:${B:-16} | cut -c1-900 | sed "s/^/$1 /" >> $OUT/eval.jsonl 2>> $OUT/cuda.txt; }
  for i in 1 2 3; do one "fresh-$i"; FK_EVAL_FUSED=0 one "unfused-$i"; done
  FK_BENCH_PREWARM=1 one prewarm
  B=32 one batch32
  mkdir -p /tmp/prof && FK_ORT_PROFILE=/tmp/prof/p one profiled
  python3 scripts/reference/eval_speed.py $M $H --batch 16 --dtypes float32,bfloat16 > $OUT/torch-eval.jsonl 2>> $OUT/cuda.txt
  python3 bench/gpu/profile_ops.py '/tmp/prof/p*.json' --last --top 40 > $OUT/profile-summary.txt 2>&1
  # the 7B shape in full (eval reads every weight), GPU memory sampled
  [ -f /tmp/m7full/.complete ] || /tmp/node .gpu/cal/generate.js mistral-7b /tmp/m7full >> $OUT/cuda.txt 2>&1
  cat /tmp/m7full/*.safetensors > /dev/null
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $OUT/gpumem-7b.txt & P=$!
  /tmp/node .gpu/cal/eval-model.js /tmp/m7full $H cuda:auto > $OUT/eval-7b.jsonl 2>> $OUT/cuda.txt
  kill $P
fi
