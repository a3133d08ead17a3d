#!/bin/sh
# Slurm Epilog for gpucost: tells the node's agent the job has ended, and how (docs/slurm.md).
#
#   install -m 0755 deploy/slurm/gpucost-epilog.sh /etc/slurm/epilog.d/gpucost.sh
#   slurm.conf:  Epilog=/etc/slurm/epilog.d/*    (or the file itself)
#
# A wrapper, because Epilog= runs a program with no arguments. `gpucost job end` finds the
# outcome itself: SLURM_JOB_EXIT_CODE2 when it is a plain non-zero exit, else `scontrol show
# job` (at most 5 s; found on PATH or in /usr/bin, /usr/local/bin, /opt/slurm/bin), whose
# JobState, Reason and ExitCode tell succeeded, cancelled, preempted, or failed by time limit,
# OOM or node failure. It never fails: an epilog that fails drains the node, so this script
# exits 0 whatever happens. If the agent cannot be reached, the end is kept in
# /var/lib/gpucost/spool/ and applied, as of now, when the agent is back.
#
# Slurm runs epilogs with no search path set (prolog_epilog.html): paths are absolute. Add
# scontrol's folder here if it is elsewhere.
PATH="/usr/bin:/bin:/usr/local/bin:/opt/slurm/bin"
export PATH
GPUCOST="${GPUCOST:-/usr/local/bin/gpucost}"
"$GPUCOST" job end
exit 0
