#!/bin/sh
# Stand-in kubectl for tests.
set -eu
printf '%s\n' "$@" > "$RECORD/kubectl.$$.args"
dir=""; kubeconfig=""
while [ $# -gt 0 ]; do
  case "$1" in
    --filename) dir=$2; shift 2;;
    --kubeconfig) kubeconfig=$2; shift 2;;
    *) shift;;
  esac
done
[ -f "$kubeconfig" ] || { echo "no kubeconfig $kubeconfig" >&2; exit 2; }
[ -f "$dir/00-namespaces.yaml" ] || { echo "no namespaces in $dir" >&2; exit 2; }
(cd "$dir" && find . -type f | sort) > "$RECORD/kubectl.files"
