#!/bin/sh
# kill.sh TOKEN SIGNAL: ends (SIGNAL END) or signals one SSH session's
# processes in a shell pod. bastion runs it as a second exec,
# /bin/sh -c "$(cat kill.sh)" bastion TOKEN SIGNAL (see exec.go).
#
# A session's processes are those whose environment carries
# BASTION_SESSION=TOKEN; the leaders among them (session ID = PID) are
# the processes the session's exec started. With a signal name, only the
# leaders get it. With END, every process of the leaders' sessions (even
# one that cleared its environment) gets SIGHUP and SIGCONT, as on a
# hung-up terminal; what is still there (not a zombie) after two seconds
# gets SIGKILL.
t=$1 sig=$2 all='' lead=''
# shellcheck disable=SC2013 # /proc/PID/environ: no spaces
for e in $(grep -lzxF "BASTION_SESSION=$t" /proc/[0-9]*/environ 2>/dev/null); do
  d=${e%/environ} p=${e#/proc/} p=${p%/environ}
  all="$all $p"
  read -r st < "$d/stat" 2>/dev/null || continue
  # The fields after "(comm) ": state, ppid, pgrp, session, ...
  # shellcheck disable=SC2086 # split on purpose
  set -- ${st##*) }
  [ "$4" = "$p" ] && lead="$lead $p"
done
[ -n "$all" ] || exit 0
if [ "$sig" != END ]; then
  # shellcheck disable=SC2086 # a list of PIDs
  [ -n "$lead" ] && kill -s "$sig" $lead 2>/dev/null
  exit 0
fi
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  read -r st < "$d/stat" 2>/dev/null || continue
  # shellcheck disable=SC2086 # split on purpose
  set -- ${st##*) }
  for l in $lead; do [ "$4" = "$l" ] && all="$all $p"; done
done
# shellcheck disable=SC2086 # a list of PIDs
{ kill -HUP $all; kill -CONT $all; } 2>/dev/null
i=0
while [ $i -lt 10 ]; do
  left=''
  for p in $all; do
    read -r st < "/proc/$p/stat" 2>/dev/null || continue
    # shellcheck disable=SC2086 # split on purpose
    set -- ${st##*) }
    [ "$1" = Z ] || left="$left $p"
  done
  [ -n "$left" ] || exit 0
  sleep 0.2
  i=$((i+1))
done
# shellcheck disable=SC2086 # a list of PIDs
kill -KILL $left 2>/dev/null
exit 0
