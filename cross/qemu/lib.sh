# shellcheck shell=bash
# Host-side helpers of cross/qemu/test and cross/qemu/boot-test (sourced; bash).
# Globals: HERE (cross/qemu), ONAIR_URL (the guest's forwarded HTTP), CTL (the forwarded control
# channel), ONAIR_WHEP_PYTHON (find_whep_python); ok/bad collect lines in RESULTS, bad sets FAIL.
RESULTS=() FAIL=0

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
now() { date +%s.%N; }
# sub A B: B - A in seconds, two decimals.
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ok() { echo "ok   $*"; RESULTS+=("ok   $*"); }
bad() { echo "FAIL $*"; RESULTS+=("FAIL $*"); FAIL=1; }
# The HTTP status of a GET of the guest's PATH ("000" or empty when nothing answers).
code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$ONAIR_URL$1" 2>/dev/null || true; }
# ctl CGI [BODY]: runs a control-channel CGI in the guest; sh takes a shell command as the body
# and answers its output, then "exit N".
ctl() { curl -fsS -m "${CTL_TIMEOUT:-20}" "$CTL/cgi-bin/$1" ${2:+--data-binary "$2"}; }
# ctl_sh COMMAND: runs COMMAND in the guest, prints its output, returns its exit status.
ctl_sh() {
  local out st
  out=$(ctl sh "$1") || return 1
  st=$(tail -1 <<<"$out")
  sed '$d' <<<"$out"
  [ "$st" = "exit 0" ]
}
# wait_code PATH WANT TIMEOUT: polls every 0.2 s; prints the seconds it took, fails on timeout.
wait_code() {
  local t0 c=''
  t0=$(now)
  while awk -v a="$t0" -v b="$(now)" -v t="$3" 'BEGIN { exit !(b - a < t) }'; do
    c=$(code "$1")
    [ "$c" = "$2" ] && { sub "$t0" "$(now)"; return 0; }
    sleep 0.2
  done
  echo "last $c"
  return 1
}

# Sets ONAIR_WHEP_PYTHON: the given one, else the venv ./dev test makes, else venv-aiortc.
find_whep_python() {
  local cache=${ONAIR_CACHE:-$HOME/.cache/onair} p
  if [ -z "${ONAIR_WHEP_PYTHON:-}" ]; then
    for p in "$cache"/venv-whep-*/bin/python "$cache/venv-aiortc/bin/python"; do
      if [ -x "$p" ] && "$p" -c 'import aiortc, av' 2>/dev/null; then ONAIR_WHEP_PYTHON=$p; break; fi
    done
  fi
  [ -n "${ONAIR_WHEP_PYTHON:-}" ] || {
    echo "no Python with aiortc: run ./dev test once, or set ONAIR_WHEP_PYTHON" >&2
    return 1
  }
  export ONAIR_WHEP_PYTHON
}

# whep NAME [SIZE]: one run of the independent WHEP client (tests/whep/whep_client.py) on
# $ONAIR_URL/whep: 30 frames of SIZE (640x480) within 30 s, vivid's 75% colour bars unless
# ONAIR_TEST_BARS=ignore, and Opus audio at -30 dBFS or louder (the guest's 440 Hz tone).
# Records ok/bad; sets WHEP_FIRST (epoch of the first frame).
whep() {
  local name=$1 size=${2:-640x480} out post rc verdict
  out=$(mktemp) post=$(mktemp)
  set +e
  "$ONAIR_WHEP_PYTHON" "$HERE/whep-timed.py" --post-time-file "$post" "$ONAIR_URL/whep" --frames 30 --within 30 \
    --expect-size "$size" --expect-audio --assume-matrix "${ONAIR_TEST_MATRIX:-bt601}" --json \
    ${ONAIR_WHEP_TOKEN:+--token "$ONAIR_WHEP_TOKEN"} >"$out"
  rc=$?
  set -e
  WHEP_FIRST=''
  verdict=$(python3 - "$out" "$(cat "$post" 2>/dev/null)" "${ONAIR_TEST_BARS:-check}" "$rc" <<'PY'
import json, sys
path, post, bars, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    d = json.load(open(path))
except Exception as e:
    print(f"FAIL\tno JSON from the client (exit {rc}): {e}\t")
    sys.exit()
v = d["viewers"][0]
errors = [e for e in v["errors"] if not (bars == "ignore" and e.startswith("bar colours"))]
if v.get("audio_dbfs") is None or v["audio_dbfs"] < -30:
    errors.append(f"audio at {v.get('audio_dbfs')} dBFS: the tone (-30 dBFS or louder) did not arrive")
    v["errors"].append(errors[-1])
first = float(post) + v["first_frame_s"] if post and "first_frame_s" in v else ""
desc = (f"{v.get('size', '?')} {v.get('codec', '')}, {v.get('frames', 0)} frames"
        f" (first {v.get('first_frame_s', '?')} s after POST), {v.get('audio_frames', 0)} audio frames"
        f" ({v.get('audio_dbfs')} dBFS), DELETE {v.get('delete')}")
if "bars" in v:
    desc += "; bars " + " ".join(f"{k}{tuple(c)}" for k, c in v["bars"].items()) + f" [{v.get('matrix')}]"
desc += "".join(f"; warning: {w}" for w in v["warnings"])
desc += "".join(f"; error: {e}" for e in v["errors"])
if bars == "ignore" and len(errors) != len(v["errors"]):
    desc += " (bar colours not checked: ONAIR_TEST_BARS=ignore)"
print(("FAIL" if errors else "ok") + "\t" + desc + "\t" + (f"{first:.3f}" if first else ""))
PY
)
  rm -f "$out" "$post"
  local status=${verdict%%$'\t'*} rest=${verdict#*$'\t'}
  # shellcheck disable=SC2034 # read by the callers
  WHEP_FIRST=${rest##*$'\t'}
  if [ "$status" = ok ]; then ok "WHEP $name: ${rest%$'\t'*}"; else bad "WHEP $name: ${rest%$'\t'*}"; return 1; fi
}

# summary TITLE CONSOLE_LOG: the ok/FAIL lines, PASS or FAILED with the console's last lines.
summary() {
  echo
  echo "=== $1 summary"
  printf '%s\n' "${RESULTS[@]}"
  if [ "$FAIL" = 0 ]; then
    echo "PASS"
  else
    echo "FAILED (console log excerpt follows)"
    grep -v '^ *dmesg:' "$2" 2>/dev/null | tail -40 | sed 's/^/  console: /'
  fi
}
