#!/bin/sh
# Entrypoint of every lopt image: runs the given command, adding
# --auth-token-file when a non-empty token file is mounted, so that the same
# Compose file and manifests serve with and without a token.
#   LOPT_AUTH_TOKEN_FILE  where the token is (default /run/secrets/lopt_token,
#                         where Compose mounts the secret `lopt_token`)
set -eu
f=${LOPT_AUTH_TOKEN_FILE:-/run/secrets/lopt_token}
if [ -s "$f" ]; then
  set -- "$@" --auth-token-file "$f"
fi
exec "$@"
