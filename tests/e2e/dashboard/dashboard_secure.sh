#!/usr/bin/env bash
# dashboard.sh in the secured farm: TLS, passwords, the ACL plugin; the page logs in.
DASH_SECURE=1 exec bash "$(dirname "${BASH_SOURCE[0]}")/dashboard.sh"
