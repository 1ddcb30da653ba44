# Sourced by the GPU scripts (cuda-h200.sh, tune-h200.sh, profile-h200.sh, calibrate-7b.sh), run
# from the repository root: onnxruntime-node 1.29 with its CUDA EP (.gpucuda/, prepare-cuda.sh),
# unpacked once per machine, and the CUDA libraries of the machine's torch wheels.
unpack_ort_cuda() {
  mkdir -p /tmp/ort129
  [ -f /tmp/ort129/node_modules/onnxruntime-node/package.json ] || xz -dc .gpucuda/ort129-cuda.tar.xz | tar xf - -C /tmp/ort129
}
torch_cuda_libs() {
  python3 -c 'import nvidia, os, glob; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/**/lib*.so*", recursive=True)})))'
}
# node_modules -> onnxruntime-node 1.29 with CUDA; LD_LIBRARY_PATH gains cuBLAS, cudart and the rest
use_ort_cuda() {
  unpack_ort_cuda || return 1
  ln -sfn /tmp/ort129/node_modules node_modules
  export LD_LIBRARY_PATH="$(torch_cuda_libs):${LD_LIBRARY_PATH:-}"
}
