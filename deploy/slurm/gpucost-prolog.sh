#!/bin/sh
# Slurm Prolog for gpucost: registers the job with the node's agent (docs/slurm.md).
#
#   install -m 0755 deploy/slurm/gpucost-prolog.sh /etc/slurm/prolog.d/gpucost.sh
#   slurm.conf:  Prolog=/etc/slurm/prolog.d/*    (or the file itself)
#
# A wrapper, because Prolog= runs a program with no arguments. `gpucost job start` reads
# SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_UID and SLURM_JOB_GPUS, and never fails: a prolog
# that fails drains the node and requeues the job, so this script exits 0 whatever happens
# (what went wrong is in slurmd's log). If the agent cannot be reached, the registration is
# kept in /var/lib/gpucost/spool/ and applied when the agent is back.
#
# Slurm runs prologs with no search path set (prolog_epilog.html): paths are absolute.
GPUCOST="${GPUCOST:-/usr/local/bin/gpucost}"
"$GPUCOST" job start
exit 0
