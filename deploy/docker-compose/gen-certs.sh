#!/usr/bin/env bash
# Certificates for the compose cluster in ./pki, made with openssl: a CA, one server/peer certificate per member
# (its service name, localhost and 127.0.0.1), and a client certificate for etcd-sentinel. The cfssl-made
# certificates of an existing cluster work the same way: put ca.pem, etcdN.pem/etcdN-key.pem and
# sentinel.pem/sentinel-key.pem here. The files are 0644 because the containers run as other users than
# yours: fine for a demonstration, not for real keys.
set -euo pipefail
cd "$(dirname "$0")"

if [ -e pki ]; then
  echo "gen-certs: $(pwd)/pki exists; remove it to make new certificates" >&2
  exit 1
fi
days=825
# Made in a scratch directory and renamed at the end: an interrupted run leaves no half-made pki/.
work="$(mktemp -d "$(pwd)/pki.tmp.XXXXXX")" || {
  echo "gen-certs: cannot create a directory in $(pwd)" >&2
  exit 1
}
trap 'rm -rf "$work"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
log="$work/openssl.log"
fail() {
  echo "gen-certs: $1 failed:" >&2
  cat "$log" >&2
  exit 1
}
cd "$work"

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=etcd-sentinel compose CA" \
  -keyout ca-key.pem -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$log" || fail "the CA"

issue() { # name, extendedKeyUsage, subjectAltName
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1-key.pem" -out "$1.csr" 2>"$log" ||
    fail "the key of $1"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" -out "$1.pem" \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' "$2" "$3") \
    2>"$log" || fail "the certificate of $1"
  rm -f "$1.csr"
}
for member in etcd1 etcd2 etcd3; do
  issue "$member" serverAuth,clientAuth "subjectAltName=DNS:$member,DNS:localhost,IP:127.0.0.1"
done
issue sentinel clientAuth ""
rm -f ca.srl "$log"
chmod 0644 ./*.pem
chmod 0755 .  # mktemp made it 0700; the containers read it as other users
cd ..
# -T: if pki/ appeared meanwhile, fail rather than move the new certificates inside it.
mv -T "$work" pki || exit 1
trap - EXIT
echo "gen-certs: CA, etcd1-3 and sentinel certificates in $(pwd)/pki"
