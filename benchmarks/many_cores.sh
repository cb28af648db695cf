#!/usr/bin/env bash
# The speed issue's many-core check as one command, for a borrowed machine with many cores and a
# short lease: build maqueta for this machine's python3, then
#   1. the kernel tests on this CPU (its instruction set may differ from the one CI runs on),
#   2. thread scaling against PyTorch at 1, 2, 4, 8 and 16 threads (scaling.py: the zoo and bench_lenet5.py),
#   3. MPI processes against threads on all the cores (bench_distributed.py).
# Each step has its own time limit and writes into OUT as it goes, so a lease that runs out still
# leaves what was measured. WHEELS, if given, is a folder of wheels to install first (mpi4py and
# mpich where the machine lacks them). Needs python3 with numpy, torch, pybind11, scikit-build-core,
# cmake, ninja, pytest and pytest-xdist, and a C++ compiler.
#
#     bash benchmarks/many_cores.sh OUT [WHEELS]
set -u
out=${1:?usage: bash benchmarks/many_cores.sh OUT [WHEELS]}
wheels=${2:-}
budget=${MANY_CORES_SECONDS:-570}   # the whole script's wall-clock limit
cd "$(dirname "$0")/.."
mkdir -p "$out"
exec > >(tee "$out/many_cores.log") 2>&1
export PYTHONUNBUFFERED=1
cores=$(nproc)
# seconds for a step that must leave `$1` seconds to those after it (at least 10)
limit() { local s=$((budget - SECONDS - $1)); echo $((s > 10 ? s : 10)); }

echo "== the machine ($SECONDS s)"
lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|L2|L3)"
echo "vector units: $(grep -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | xargs)"
echo "nproc $cores; cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo none)"
python3 -c "import sys, numpy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__,
            'torch threads', torch.get_num_threads())"
c++ --version | head -1

site=/tmp/maqueta-site
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/maqueta-wheels \
        "$wheels"/*.whl || echo "== warning: the wheels did not install"
    export PATH="/tmp/maqueta-wheels/bin:$PATH"
    export PYTHONPATH=/tmp/maqueta-wheels
fi

# The build took 160 s on the first such machine (16 cores of a slow, shared Xeon): a second call
# on a machine still warm reuses it unless MANY_CORES_REBUILD is set.
if [ -n "${MANY_CORES_REBUILD:-}" ] || ! [ -d "$site/maqueta" ]; then
    echo "== build ($SECONDS s)"
    CMAKE_BUILD_PARALLEL_LEVEL=$cores timeout 300 python3 -m pip install -q --no-deps --no-build-isolation \
        --no-cache-dir --upgrade --target "$site" -C build-dir=/tmp/maqueta-build . || { echo "== the build failed"; exit 1; }
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import maqueta; print(maqueta.build_info())" || exit 1

# Correctness first, and cheap: this CPU's instruction set may differ from CI's. pytest-benchmark,
# where installed, refuses to run beside xdist, hence -p no:benchmark.
echo "== 1. kernel tests on this CPU ($SECONDS s)"
parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n $cores")
# shellcheck disable=SC2086
timeout 90 python3 -m pytest -q -x -p no:cacheprovider -p no:benchmark $parallel tests/test_conv2d.py \
    tests/test_conv_padding.py tests/test_maxpool2d.py tests/test_linear.py tests/test_layer_kernels.py \
    tests/test_torch_kernels.py tests/test_batchnorm_folding.py tests/test_lanes.py tests/test_runtime.py \
    || echo "== the kernel tests stopped or failed (exit $?)"

# The extremes first, so that a run cut short still says how far each library scales; each count
# takes 60-90 s there. MANY_CORES_THREADS picks others (a second call for the rest).
echo "== 2. thread scaling against PyTorch ($SECONDS s)"
# shellcheck disable=SC2086  # MANY_CORES_SCALING: extra scaling.py arguments, for a smoke run
timeout "$(limit 60)" python3 benchmarks/scaling.py --threads "${MANY_CORES_THREADS:-1,16,4,8,2}" \
    --out "$out/scaling.json" ${MANY_CORES_SCALING:-} \
    || echo "== scaling.py stopped (exit $?); scaling.json holds the steps it finished"

echo "== 3. MPI processes against threads on $cores cores ($SECONDS s)"
processes=$(python3 -c "print(','.join(str(p) for p in (1, 4, 16) if p <= $cores))")
timeout "$(limit 5)" python3 benchmarks/bench_distributed.py --cores "$cores" --processes "$processes" \
    --batches 256 --images 30000 --repeats 3 --out "$out/distributed.json" || echo "== bench_distributed.py stopped (exit $?)"
echo "== done ($SECONDS s)"
