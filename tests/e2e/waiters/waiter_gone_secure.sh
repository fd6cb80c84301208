#!/usr/bin/env bash
# waiter_gone.sh in the secured farm (the ACL plugin clears presences).
FARM_SECURE=1 exec bash "$(dirname "${BASH_SOURCE[0]}")/waiter_gone.sh"
