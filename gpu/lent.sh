# Sourced by the scripts for a lent GPU machine (gpu/recipes.sh, gpu/shape.sh): the library from src/, MONAI, cc3d
# and edt from the wheels in .whl/ where the machine lacks them (docs/gpu.md), and machine_header for the top of a
# result file (the card, the CPU, the versions).
export PYTHONUNBUFFERED=1 PYTHONPATH="src:${PYTHONPATH:-}"
if [ -d .whl ] && ! python3 -c "import monai, cc3d, edt" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH="src:/tmp/site"
fi

machine_header() {
    date -u
    nvidia-smi -L 2>/dev/null
    lscpu | grep -E "Model name|^CPU\(s\)"
    python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__,
'cpu native bf16', torch.ops.mkldnn._is_mkldnn_bf16_supported())"
}
