#!/bin/sh
# git on the host changes a repository; git in the "guest" reads it through a Ferry mount
# served with --cache always. Every read must see the host's latest state at once.
# usage: gitcoherence.sh SOURCE MOUNT      (prints PASS/FAIL lines; exits non-zero on failure)
set -u
src=$1/repo; mnt=$2/repo
fail=0
check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: expected [$2], got [$3]"; fail=1; fi
}
settle() { sleep 0.1; }   # the issue's bound: a host change is visible within 100 ms
host() { git -C "$src" -c user.name=host -c user.email=host@example.org "$@" >/dev/null 2>&1; }
guest() { git -c safe.directory='*' -C "$mnt" "$@" 2>&1; }

mkdir -p "$src" && host init -q -b main && for i in 1 2 3; do echo "line $i" > "$src/file$i"; done
host add . && host commit -q -m "first"
check "guest sees the first commit" "first" "$(guest log -1 --format=%s)"
check "guest status is clean" "" "$(guest status --porcelain)"

echo "changed on the host" >> "$src/file1"
settle
check "guest sees the host's unstaged edit" " M file1" "$(guest status --porcelain)"
host commit -q -am "second"
settle
check "guest sees the host's new commit" "second" "$(guest log -1 --format=%s)"
check "guest status is clean again" "" "$(guest status --porcelain)"

host checkout -q -b other && host rm -q file2 && echo new > "$src/file4" && host add file4 && host commit -q -m "other"
host checkout -q main
settle
check "guest sees the branch switch" "main" "$(guest rev-parse --abbrev-ref HEAD)"
check "guest tree matches main" "file1 file2 file3" "$(ls "$mnt" | tr '\n' ' ' | sed 's/ $//')"
host checkout -q other
settle
check "guest tree matches other" "file1 file3 file4" "$(ls "$mnt" | tr '\n' ' ' | sed 's/ $//')"
check "guest bytes match the host" "$(cat "$src/file1")" "$(cat "$mnt/file1")"
check "guest status is clean after checkouts" "" "$(guest status --porcelain)"
check "guest fsck" "ok" "$(guest fsck --no-progress >/dev/null 2>&1 && echo ok)"
exit $fail
