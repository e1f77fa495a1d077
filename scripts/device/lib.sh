# shellcheck shell=bash
# Functions shared by the device proofs prove-containers.sh and prove-containerd.sh (sourced by both, after they
# set OUT, RES, C and PY). Not a script of its own.

# step TEXT...: a heading in the log, with the time.
step() { printf '\n===== %s (%s)\n' "$*" "$(date +%T)"; }
rc() { echo "(exit $?)"; }

# table: $OUT/table.md from the rows of $RES (mode, path, workload, exit code, last line).
table() {
    [ -s "$RES" ] || return 0
    {
        echo "| mode | path | workload | exit | last line |"
        echo "| --- | --- | --- | ---: | --- |"
        while IFS=$'\t' read -r m p w c l; do
            printf '| %s | `%s` | %s | %s | %s |\n' "$m" "$p" "$w" "$c" "$l"
        done <"$RES"
    } >"$OUT/table.md"
}

# serve_mirror LOG: the signed mirror fixture ($C/mirror) served on 127.0.0.1:8765 unless it is already, its
# server's output into LOG; exits the proof when it does not come up within 10 s.
serve_mirror() {
    (exec 3<>/dev/tcp/127.0.0.1/8765) 2>/dev/null && return 0
    (cd "$C/mirror" && setsid "$PY" -m http.server 8765 --bind 127.0.0.1 >"$1" 2>&1 </dev/null &)
    for _ in $(seq 1 40); do (exec 3<>/dev/tcp/127.0.0.1/8765) 2>/dev/null && return 0; sleep 0.25; done
    echo "the mirror fixture did not start"; exit 1
}
