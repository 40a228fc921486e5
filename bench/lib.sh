# Shared by the benchmarks: `source bench/lib.sh`, then `bench_start`.

# bench_start: the preamble every benchmark shares. Builds the release binaries, sets $bin
# (where they are), $work (a scratch directory under $BENCH_DIR, default /var/tmp) and $pids
# (background processes), and on exit runs the script's `before_cleanup` when it defines
# one, kills $pids and removes $work, whatever state the run stopped in.
bench_start() {
  cargo build --release --locked --bin airgap -p airgap-cli --bin airgap-testkit -p testkit >/dev/null 2>&1
  bin=$PWD/target/release
  work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" airgap-bench.XXXXXX)
  pids=()
  trap 'rc=$?; bench_cleanup; exit "$rc"' EXIT
}

bench_cleanup() {
  set +e  # best effort: every step runs
  declare -F before_cleanup >/dev/null && before_cleanup
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
  return 0
}

# A CA and a leaf for 127.0.0.1 under $work (ca.crt, tls.crt, tls.key, certs/ for skopeo) and
# an htpasswd file for distribution (bench:bench, bcrypt).
make_pki() {
  (
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' > ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2 -extfile ext 2>/dev/null
    mkdir -p certs && cp ca.crt certs/
    htpasswd -Bbn bench bench > htpasswd
  )
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# distribution NAME: starts a fresh distribution registry (TLS, htpasswd) and sets $reg_port.
distribution() {
  local dir=$work/$1 p; p=$(port); mkdir -p "$dir"
  cat > "$dir/config.yml" <<CFG
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $dir/storage}}
http: {addr: 127.0.0.1:$p, tls: {certificate: $work/tls.crt, key: $work/tls.key}}
auth: {htpasswd: {realm: bench, path: $work/htpasswd}}
CFG
  docker-registry serve "$dir/config.yml" >/dev/null 2>&1 & pids+=($!)
  wait_port "$p"; reg_port=$p
}

# measure NAME CMD...: one run; wall time and peak RSS into ${wall[NAME]} and ${rss[NAME]}.
declare -A wall rss
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r w r < "$work/time"; wall[$name]=$w rss[$name]=$r
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) b = 0.001; printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k / 1024}'; }
