#!/usr/bin/env bash
# `./icefarm up --secure --port PORT`: up.sh's checks on the secured farm (TLS,
# passwords, the ACL plugin), through the CA and the user lines it prints.
exec bash "$(dirname "$0")/up.sh" --secure
