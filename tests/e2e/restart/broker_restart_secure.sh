#!/usr/bin/env bash
# broker_restart.sh in the secured farm (TLS, passwords, the ACL plugin).
FARM_SECURE=1 exec bash "$(dirname "${BASH_SOURCE[0]}")/broker_restart.sh"
