#!/bin/bash
# Whole-process start-up cost, back to back, each line a fresh process under /usr/bin/time:
# funasr's package init vs funasr_import, `import torch`, `emo analyze` on one 10 s clip (fp32 and
# int8) from this checkout and from another one (e.g. a worktree of main), and funasr's
# AutoModel.generate on the same clip. int8 from this checkout runs twice: after deleting the
# model's int8 cache (MODEL_DIR/.emo-cache: quantises and writes it), then reading it.
# Results in OUT_DIR/*.err; a summary line each on stdout.
#
#   benchmarks/bench_startup.sh MODEL_DIR OTHER_CHECKOUT [OUT_DIR]
#   (MODEL_DIR: e.g. /tmp/emo-bench/large from bench_inference.py; PY defaults to ./.venv/bin/python)
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd); MODEL=$1; OTHER=$2; D=${3:-/tmp/emo-bench/startup}
PY=${PY:-$HERE/.venv/bin/python}
mkdir -p "$D"; D=$(cd "$D" && pwd)
PYTHONPATH=$HERE "$PY" -c "
import sys; sys.path.insert(0, '$HERE/benchmarks')
from bench_inference import synth_clip
import soundfile as sf
sf.write('$D/clip10.wav', synth_clip(10.0, seed=5), 16000, subtype='FLOAT')
"
t() { local name=$1; shift; /usr/bin/time -f "$name wall_s=%e peak_rss_kb=%M" "$@" > "$D/$name.out" 2> "$D/$name.err"; tail -1 "$D/$name.err"; }
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
t import_funasr_full env PYTHONPATH="$HERE" "$PY" -c "import funasr.models.emotion2vec.model"
t import_emotion2vec_only env PYTHONPATH="$HERE" "$PY" -c "from emo_assets.lib.model.funasr_import import funasr_class as c; c('model_classes','Emotion2vec'); c('tokenizer_classes','CharTokenizer')"
t import_torch "$PY" -c "import torch"
# Run from the checkout itself: `python -m` puts the current folder first on sys.path, before PYTHONPATH.
analyze() { local name=$1 checkout=$2 prec=$3; (cd "$checkout" && t "$name" env PYTHONPATH="$checkout" EMO_PRECISION=$prec EMO_DEVICE=cpu "$PY" -m emo_assets.cli analyze "$D/clip10.wav" --model "$MODEL" --out "$D/out_$name"); }
analyze analyze_other_fp32 "$OTHER" fp32
analyze analyze_this_fp32 "$HERE" fp32
analyze analyze_other_int8 "$OTHER" int8
# int8 from this checkout: with no cache (quantises and writes $MODEL/.emo-cache), then reading it
rm -rf "$MODEL/.emo-cache"
analyze analyze_this_int8_nocache "$HERE" int8
analyze analyze_this_int8_cached "$HERE" int8
t funasr_generate "$PY" -c "
from funasr import AutoModel
m = AutoModel(model='$MODEL', device='cpu', disable_update=True, disable_pbar=True, log_level='ERROR')
m.generate('$D/clip10.wav', granularity='utterance', extract_embedding=True)"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
