#!/bin/sh
# Runs inside a guest that mounted a Ferry virtio-fs share at $1 (default /mnt).
# Prints "PASS name", "FAIL name: detail", "INFO ...", and "SHA256 name hash" lines for the host
# side of the test (VhostGuestTests) to compare; exits 1 if a check failed.
M=${1:-/mnt}
failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }
check() { name=$1; shift; if "$@" >/tmp/out 2>&1; then pass "$name"; else fail "$name" "$(head -c 300 /tmp/out)"; fi; }
cd "$M" || exit 1

# Files and directories.
check create sh -c "echo one > $M/a.txt && [ \"\$(cat $M/a.txt)\" = one ]"
check append sh -c "echo two >> $M/a.txt && [ \"\$(cat $M/a.txt | wc -l)\" = 2 ]"
check overwrite-middle sh -c "printf XY | dd of=$M/a.txt bs=1 seek=1 conv=notrunc 2>/dev/null && [ \"\$(head -c 3 $M/a.txt)\" = oXY ]"
check truncate sh -c "dd if=/dev/null of=$M/a.txt bs=1 seek=2 2>/dev/null; [ \$(stat -c %s $M/a.txt) = 2 ]"
check mkdir sh -c "mkdir -p $M/d1/d2/d3 && [ -d $M/d1/d2/d3 ]"
check rename sh -c "mv $M/a.txt $M/d1/b.txt && [ ! -e $M/a.txt ] && [ -f $M/d1/b.txt ]"
check rename-dir sh -c "mv $M/d1/d2 $M/d1/d2x && [ -d $M/d1/d2x/d3 ]"
check symlink sh -c "ln -s d1/b.txt $M/sl && [ \"\$(readlink $M/sl)\" = d1/b.txt ] && [ \"\$(cat $M/sl)\" = oX ]"
check hardlink sh -c "ln $M/d1/b.txt $M/hl && [ \$(stat -c %h $M/hl) = 2 ] && [ \$(stat -c %i $M/hl) = \$(stat -c %i $M/d1/b.txt) ]"
check unlink sh -c "rm $M/hl && [ ! -e $M/hl ] && [ \$(stat -c %h $M/d1/b.txt) = 1 ]"
check rmdir sh -c "rmdir $M/d1/d2x/d3 && [ ! -e $M/d1/d2x/d3 ]"
check readdir sh -c "for i in \$(seq 1 300); do : > $M/d1/f\$i; done; [ \$(ls $M/d1 | wc -l) = 302 ]"
check chmod sh -c "chmod 640 $M/d1/b.txt && [ \$(stat -c %a $M/d1/b.txt) = 640 ]"
check chown sh -c "chown 1000:1000 $M/d1/b.txt && [ \$(stat -c %u:%g $M/d1/b.txt) = 1000:1000 ]"
# As an ordinary user: files it creates are its own; it cannot chown or write root's files.
mkdir -p $M/user && chown 1000:1000 $M/user && chmod 755 $M/user
U="/usr/bin/setpriv --reuid=1000 --regid=1000 --clear-groups"
check user-create sh -c "$U sh -c 'echo u > $M/user/mine' && [ \$(stat -c %u:%g $M/user/mine) = 1000:1000 ]"
check user-chmod sh -c "$U chmod 600 $M/user/mine && [ \$(stat -c %a $M/user/mine) = 600 ]"
check user-chown-refused sh -c "! $U chown 0 $M/user/mine 2>/dev/null"
check user-write-refused sh -c "echo r > $M/rootfile && chmod 644 $M/rootfile && ! $U sh -c 'echo x >> $M/rootfile' 2>/dev/null"
# xattrs through syscall(2) (perl-base): setxattr 188, getxattr 191, listxattr 194, removexattr 197.
check xattr perl -e '
  my ($f, $name, $v) = ("'$M'/d1/b.txt", "user.ferry", "value-1");
  syscall(188, $f, $name, $v, length($v), 0) == 0 or die "setxattr: $!";
  my $buf = "\0" x 64; my $n = syscall(191, $f, $name, $buf, 64);
  $n == 7 && substr($buf, 0, 7) eq "value-1" or die "getxattr: $n $!";
  my $list = "\0" x 256; $n = syscall(194, $f, $list, 256);
  index($list, $name) >= 0 or die "listxattr: $list";
  syscall(197, $f, $name) == 0 or die "removexattr: $!";
  syscall(191, $f, $name, $buf, 64) < 0 or die "still there";'
# Leave one for the host to see.
perl -e 'my ($f, $n, $v) = ("'$M'/d1/b.txt", "user.left", "for-host"); syscall(188, $f, $n, $v, length($v), 0) == 0 or die "$!"'

# The host wrote host.bin before the boot: its hash, for the host to compare.
[ -f $M/host.bin ] && echo "SHA256 host.bin $(sha256sum < $M/host.bin | cut -d' ' -f1)"
# 64 MiB written in the guest (through the page cache, then synced).
if dd if=/dev/urandom of=/tmp/big bs=1M count=64 2>/dev/null && cp /tmp/big $M/big.bin && sync; then
    big=$(sha256sum < /tmp/big | cut -d' ' -f1)
    echo "SHA256 big.bin $big"
    rm -f /tmp/big
    check big-readback sh -c "echo 3 > /proc/sys/vm/drop_caches; [ \"\$(sha256sum < $M/big.bin | cut -d' ' -f1)\" = $big ]"
else
    fail big-write "dd/cp failed"
fi
# O_DIRECT: written and read back with direct I/O (busybox dd).
check odirect sh -c "dd if=/dev/urandom of=/tmp/d bs=4096 count=64 2>/dev/null && dd if=/tmp/d of=$M/direct.bin bs=4096 oflag=direct 2>/dev/null && dd if=$M/direct.bin of=/tmp/d2 bs=4096 iflag=direct 2>/dev/null && cmp /tmp/d /tmp/d2"
# fio with data verification (O_DIRECT, random writes then verify reads).
check fio-verify /usr/bin/fio --name=verify --filename=$M/fio.dat --size=8M --bs=4k --rw=randwrite --direct=1 \
    --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out
check fio-seq /usr/bin/fio --name=seq --filename=$M/fio2.dat --size=8M --bs=1M --rw=write --ioengine=libaio --iodepth=4 \
    --direct=1 --verify=md5 --do_verify=1 --verify_fatal=1 --output=/tmp/fio2.out
[ -f /tmp/fio.out ] && grep -E "WRITE:|READ:" /tmp/fio.out | sed 's/^/INFO fio-verify /'

# Locks against a host process (VhostGuestTests starts it; it holds flock and a write lock on
# [0,100) of lock files in the share until the guest asks it to release).
if [ -f $M/holder.ready ]; then
    perl /harness/locktest.pl $M || failed=1
fi
echo "DONE"
exit $failed
