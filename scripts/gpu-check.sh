#!/usr/bin/env bash
# The CUDA check, in two halves.
#
#   scripts/gpu-check.sh prepare   # here, on a machine with Rust (no GPU needed): builds the CUDA
#                                  # binary for sm_90 (H100/H200), strips and compresses it, and lays
#                                  # it out with PyTorch's reference steps in gpu-carry/ (ignored by
#                                  # git; carried to the GPU machine, under 64 MiB).
#   scripts/gpu-check.sh run       # on the GPU machine (CUDA 13 driver R580+, PyTorch, no Rust):
#                                  # prints everything the CUDA issue asks for, and exits non-zero
#                                  # when the CUDA loss differs from the CPU loss by more than 1e-3.
#
# What `run` measures, in this order (about 5 minutes on an H200):
#   1. the first training step's loss (yolo_loss + L2) of tiny and YOLOv3 at 416, batch 2, on the CPU
#      and on CUDA, from the same seeded weights and images: relative difference <= 1e-3;
#   2. images per second and peak GPU memory (nvidia-smi, sampled every 50 ms, the process's whole
#      footprint) of YOLOv3 416 batch 16 all trainable, freeze_body=2 batch 32, bottleneck
#      extraction batch 32 and tiny 416 batch 32: ours in f32, PyTorch eager in f32 and in bf16
#      autocast, on the same GPU in the same run (`torch_steps.py` of ../shared/anchors).
#   Our bf16 (`--precision bf16`) is reported as unavailable until the binary accepts the option.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=gpu-carry

prepare() {
    set -e
    local shared=${YOLO_SHARED_DIR:-../shared}
    local cache=${YOLO_CUDA_CACHE:-$HOME/.cache/yolo-cuda}
    if [ ! -x "$cache/root/bin/nvcc" ]; then
        bash "$shared/cuda/setup_cuda_wheels.sh" "$cache/venv" "$cache/root"
    fi
    PATH="$cache/root/bin:$PATH" CUDA_ROOT="$cache/root" CUDA_COMPUTE_CAP=90 \
        CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2} \
        cargo build --release -p yolo-cli --features cuda --target-dir target-cuda
    mkdir -p "$CARRY"
    strip -o "$CARRY/yolo" target-cuda/release/yolo
    xz -T0 -9 -f "$CARRY/yolo"
    cp "$shared/anchors/torch_steps.py" "$shared/anchors/perf_common.py" "$CARRY/"
    du -sh "$CARRY"
}

# Adds the directories holding the CUDA 13 runtime libraries the binary links (cuBLAS, cuRAND,
# NVRTC) to LD_LIBRARY_PATH: the system toolkit's, or the ones PyTorch's wheels bring.
find_cuda_libs() {
    local dirs=""
    for root in /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu \
        $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
        [ -d "$root" ] || continue
        while IFS= read -r f; do
            dirs="$dirs:$(dirname "$f")"
        done < <(find "$root" -maxdepth 4 \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' \
            -o -name 'libnvrtc.so.13*' -o -name 'libcublasLt.so.13*' \) 2>/dev/null)
    done
    export LD_LIBRARY_PATH="${dirs#:}:${LD_LIBRARY_PATH:-}"
}

# Runs "$@" while sampling the GPU memory in use; prints the peak in MiB as `peak_gpu_mib N`.
with_peak_memory() {
    local log
    log=$(mktemp)
    (while true; do
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >>"$log" 2>/dev/null
        sleep 0.05
    done) &
    local sampler=$!
    "$@"
    local rc=$?
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    echo "peak_gpu_mib $(sort -n "$log" | tail -1)"
    rm -f "$log"
    return $rc
}

run() {
    local out=${OUT:-/tmp/gpu-check}
    mkdir -p "$out"
    local yolo="$out/yolo"
    if [ -f "$CARRY/yolo.xz" ]; then
        xz -dc "$CARRY/yolo.xz" >"$yolo" 2>/dev/null ||
            python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open('$CARRY/yolo.xz').read())" >"$yolo"
        chmod +x "$yolo"
    else
        echo "no $CARRY/yolo.xz: run \`scripts/gpu-check.sh prepare\` on the build machine first"
        return 2
    fi
    find_cuda_libs
    unset RUST_BACKTRACE RUST_LIB_BACKTRACE
    # No single case may eat the run: a case that takes longer is cut and reported as such.
    local T="timeout ${GPU_CHECK_CASE_TIMEOUT:-100}"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    "$yolo" info || true

    echo "== 1. CUDA loss against CPU loss (416, batch 2, first step, seeded)"
    local ok=0
    $T "$yolo" bench --device cpu --cases tiny,v3 --batch 2 --steps 1 --warmup 0 --no-gemm \
        --json "$out/loss_cpu.json" || ok=1
    $T "$yolo" bench --device cuda --cases tiny,v3 --batch 2 --steps 1 --warmup 0 --no-gemm \
        --json "$out/loss_cuda.json" || ok=1
    python3 - "$out/loss_cpu.json" "$out/loss_cuda.json" <<'EOF' || ok=1
import json, sys
cpu, gpu = (json.load(open(p))["results"] for p in sys.argv[1:3])
bad = 0
for c, g in zip(cpu, gpu):
    a, b = c["first_loss"], g["first_loss"]
    rel = abs(a - b) / max(abs(a), 1e-12)
    verdict = "ok" if rel <= 1e-3 else "DIFFERS"
    bad += rel > 1e-3
    print(f"{c['case']['name']:<6} cpu {a:.6f} cuda {b:.6f} relative {rel:.2e} {verdict}")
sys.exit(1 if bad else 0)
EOF

    echo "== 2. speed and peak GPU memory, ours (f32) and PyTorch eager (f32, bf16 autocast)"
    # case name, batch
    local cases="v3:16 v3-frozen:32 bottleneck:32 tiny:32"
    for cb in $cases; do
        local c=${cb%%:*} b=${cb##*:}
        echo "-- ours $c batch $b f32"
        with_peak_memory $T "$yolo" bench --device cuda --cases "$c" --batch "$b" --steps 5 --warmup 2 \
            --no-gemm --json "$out/ours_${c}_f32.json"
        if "$yolo" bench --help | grep -q -- --precision; then
            echo "-- ours $c batch $b bf16"
            with_peak_memory $T "$yolo" bench --device cuda --cases "$c" --batch "$b" --steps 5 \
                --warmup 2 --no-gemm --precision bf16 --json "$out/ours_${c}_bf16.json"
        else
            echo "-- ours $c batch $b bf16: unavailable (this binary has no --precision)"
        fi
        for amp in none bf16; do
            echo "-- torch $c batch $b amp=$amp"
            with_peak_memory $T python3 "$CARRY/torch_steps.py" --device cuda --cases "$c" --batch "$b" \
                --steps 5 --warmup 2 --amp "$amp" | tee "$out/torch_${c}_${amp}.jsonl" |
                python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("{"):
        d = json.loads(l)
        if d.get("kind") == "case":
            print({k: d.get(k) for k in ("case", "batch", "amp", "peak_gpu_mb", "loss_first")},
                  {k: v for k, v in d.items() if "img" in k or "median" in k})'
        done
    done

    echo "== summary: images per second (bottleneck: images per second of extraction), ours / PyTorch"
    python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def ours(c, p):
    try:
        return json.load(open(os.path.join(out, f"ours_{c}_{p}.json")))["results"][0]["images_per_s"]
    except (OSError, KeyError, IndexError, ValueError):
        return None
def torch(c, amp):
    try:
        for l in open(os.path.join(out, f"torch_{c}_{amp}.jsonl")):
            if l.startswith("{"):
                d = json.loads(l)
                if d.get("kind") == "case":
                    return d.get("images_per_s")
    except (OSError, ValueError):
        pass
    return None
f = lambda v: "-" if v is None else f"{v:.1f}"
r = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}"
print(f"{'case':<11} {'ours f32':>9} {'torch f32':>9} {'ratio':>6} {'ours bf16':>9} {'torch bf16':>10} {'ratio':>6}")
for c in ["v3", "v3-frozen", "bottleneck", "tiny"]:
    a, b, x, y = ours(c, "f32"), torch(c, "none"), ours(c, "bf16"), torch(c, "bf16")
    print(f"{c:<11} {f(a):>9} {f(b):>9} {r(a, b):>6} {f(x):>9} {f(y):>10} {r(x, y):>6}")
EOF
    return $ok
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: scripts/gpu-check.sh prepare|run" >&2
    exit 2
    ;;
esac
