#!/bin/sh
# Runs inside a guest whose Ferry share at $1 (default /mnt) is served with
# --translate-uid/--translate-gid map:1000:101000:1000 and forbid-guest:3000:1 (uid and gid).
# Prints "SEEN name uid:gid" (owners as the guest sees them) and "RESULT name status message"
# lines for VhostIDTranslationTests to compare with the host's view.
M=${1:-/mnt}
U="/usr/bin/setpriv --reuid=1001 --regid=1001 --clear-groups"
F="/usr/bin/setpriv --reuid=3000 --regid=3000 --clear-groups"
mkdir -p "$M/open" && chmod 777 "$M/open"
$U sh -c "echo x > $M/open/by-1001 && mkdir $M/open/dir-1001"
echo "SEEN by-1001 $(stat -c %u:%g $M/open/by-1001)"
echo "SEEN dir-1001 $(stat -c %u:%g $M/open/dir-1001)"
: > "$M/chowned" && chown 1005:1006 "$M/chowned"
echo "RESULT chown $?"
echo "SEEN chowned $(stat -c %u:%g $M/chowned)"
echo "SEEN host-made $(stat -c %u:%g $M/host-made)"
out=$($F ls "$M/open" 2>&1); echo "RESULT forbidden-ls $? $out"
out=$(chown 3000 "$M/chowned" 2>&1); echo "RESULT forbidden-chown $? $out"
echo DONE
