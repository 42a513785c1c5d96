#!/bin/sh
# detached.sh [PROC]: lists the account's detached work in a shell pod, one
# line per process, "PID COMM". bastion runs it as an exec,
# /bin/sh -c "$(cat detached.sh)" bastion (see detached.go); PROC (/proc)
# is for the tests. It uses only
# the shell's builtins, so that it starts no process of its own and needs
# nothing from the image beyond a POSIX shell.
#
# Every process in the pod is the account's (the pod runs as its uid).
# Not detached work, the pod's own:
#   - PID 1 (the pod's sleeper) and its session (its sleep);
#   - the processes the container runtime exec'd (their parent is outside
#     the pod's PID namespace: PPID 0): sessions' shells, bastion-helper,
#     this scan and other probes;
#   - the processes still in the session of such a live exec'd process (a
#     session that is open, or one a dead bastion left behind), unless
#     they ignore SIGHUP (nohup): a hang-up would end them.
# Detached work is everything else: what left its session (setsid, the
# tmux and screen servers and what runs in them), what outlived its
# session's shell (a job left running at logout), and nohup'd processes.
# Zombies do not count.
proc=${1:-/proc} lead=' ' own=''
for d in "$proc"/[0-9]*; do
  read -r st < "$d/stat" 2>/dev/null || continue
  # The fields after "(comm) ": state, ppid, pgrp, session, ...
  # shellcheck disable=SC2086 # split on purpose
  set -- ${st##*) }
  p=${d##*/}
  [ "$p" = 1 ] && own=$4
  [ "$2" = 0 ] && [ "$1" != Z ] && lead="$lead$p "
done
for d in "$proc"/[0-9]*; do
  read -r st < "$d/stat" 2>/dev/null || continue
  comm=${st#*(} comm=${comm%) *}
  # shellcheck disable=SC2086 # split on purpose
  set -- ${st##*) }
  p=${d##*/}
  case $1 in Z) continue ;; esac
  [ "$p" = 1 ] || [ "$2" = 0 ] || [ "$4" = "$own" ] && continue
  case $lead in
  *" $4 "*)
    ign=''
    while read -r k v; do
      [ "$k" = SigIgn: ] && ign=$v && break
    done 2>/dev/null < "$d/status"
    # SIGHUP is bit 0 of the mask: its last hex digit is odd.
    case $ign in *[13579bdfBDF]) ;; *) continue ;; esac
    ;;
  esac
  echo "$p $comm"
done
exit 0
