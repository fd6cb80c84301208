#!/usr/bin/env bash
# results_after_end.sh in the secured farm (the ACL plugin's drain).
FARM_SECURE=1 exec bash "$(dirname "${BASH_SOURCE[0]}")/results_after_end.sh"
