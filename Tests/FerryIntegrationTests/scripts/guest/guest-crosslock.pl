#!/usr/bin/perl
# Two guests on two Ferry servers sharing one SOURCE (VhostGuestTests.testLocksAcrossGuests).
# Usage: guest-crosslock.pl holder|contender DIR
# The holder takes flock and a write lock on [0,100) of DIR/cross.lck and keeps them until the
# contender is waiting for them. The contender checks that it cannot take them, then waits for
# them (F_SETLKW, blocking flock) and must get them once the holder lets go. Files in DIR
# coordinate the two (each guest sees the other's files within the 1 s cache timeout).
use strict;
use warnings;
use Fcntl qw(:DEFAULT :flock F_GETLK F_SETLK F_SETLKW F_WRLCK F_UNLCK SEEK_SET);
use POSIX qw(:errno_h);
$| = 1;
my ($role, $dir) = @ARGV;
sub flk { pack("s s x4 q q l x4", $_[0], SEEK_SET, $_[1], $_[2], 0) }
sub waitfor { my ($f, $secs) = @_; for (1 .. $secs * 10) { return 1 if -e $f; select(undef, undef, undef, 0.1) } return 0 }
sysopen(my $fh, "$dir/cross.lck", O_RDWR | O_CREAT) or die "open: $!\n";
my $failed = 0;
sub result { my ($ok, $name, $detail) = @_; printf "%s %s: %s\n", ($ok ? "PASS" : "FAIL"), $name, $detail; $failed++ unless $ok }
if ($role eq "holder") {
	flock($fh, LOCK_EX | LOCK_NB) or die "flock: $!\n";
	fcntl($fh, F_SETLK, flk(F_WRLCK, 0, 100)) or die "setlk: $!\n";
	open(my $m, ">", "$dir/holder-has-locks") or die; close $m;
	result(waitfor("$dir/contender-waiting", 240), "holder-saw-contender", "contender waiting");
	sleep 2;
	fcntl($fh, F_SETLK, flk(F_UNLCK, 0, 100)) or die "unlock: $!\n";
	flock($fh, LOCK_UN);
	result(waitfor("$dir/contender-done", 120), "holder-saw-contender-done", "contender finished");
} else {
	result(waitfor("$dir/holder-has-locks", 240), "contender-saw-holder", "holder ready");
	my $r = flock($fh, LOCK_EX | LOCK_NB);
	result(!$r && $! == EWOULDBLOCK, "flock-guest-vs-other-guest", $r ? "got a lock the other guest holds" : "refused: $!");
	$r = fcntl($fh, F_SETLK, flk(F_WRLCK, 0, 100));
	result(!$r && ($! == EAGAIN || $! == EACCES), "posix-guest-vs-other-guest", $r ? "got a range the other guest holds" : "refused: $!");
	my $b = flk(F_WRLCK, 0, 100);
	if (fcntl($fh, F_GETLK, $b)) {
		my ($t) = unpack("s", $b);
		result($t == F_WRLCK, "posix-getlk-other-guest", "type=$t");
	}
	open(my $m, ">", "$dir/contender-waiting") or die; close $m;
	my $t0 = time;
	$r = fcntl($fh, F_SETLKW, flk(F_WRLCK, 0, 100));
	result($r, "posix-setlkw-released-by-other-guest", $r ? "granted after " . (time - $t0) . " s" : "failed: $!");
	$r = flock($fh, LOCK_EX);
	result($r, "flock-blocking-released-by-other-guest", $r ? "granted" : "failed: $!");
	open($m, ">", "$dir/contender-done") or die; close $m;
}
print "DONE\n";
exit($failed ? 1 : 0);
