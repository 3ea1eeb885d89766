# CPU work, files and late XS modules across moves: Perl's counterpart of work.py.
#
# Usage: work.pl DIR TAG. Round K prints "computing K", computes, prints its result, then
# reads one line from stdin (the test moves the program during the round and sends the line
# once the move is done). Digest::MD5 (MD5.so) is loaded after the first move, POSIX
# (POSIX.so) after the third; after the first move it also sleeps with Perl's
# select(undef, undef, undef, T) idiom (pselect6 in glibc). Exit status 4.
use strict;
use warnings;

my $ROUND = 1_000_000;
$| = 1;

sub crunch {
    my ($seed, $n) = @_;
    my ($x, $acc) = ($seed, 0);
    for my $i (0 .. $n - 1) {
        $x = ($x * 69069 + 12345) % 4294967296;
        $acc = ($acc + ($x >> 3) * ($i | 1)) % 1000000007;
    }
    return $acc;
}

sub gate {
    my $line = <STDIN>;
    if (!defined $line || $line ne "\n") {
        print "FAIL: gate\n";
        exit 1;
    }
}

my ($dir, $tag) = @ARGV;
open(my $before, '+>', "$dir/pl-before-$tag.txt") or die "open: $!";
$before->autoflush(1);
print $before "opened before the first move\n";
print "MD5 loaded at start: ", (exists $INC{'Digest/MD5.pm'} ? 1 : 0), "\n";

my $after;
for my $k (1 .. 3) {
    print "computing $k\n";
    my $r = crunch($k, $ROUND);
    print "round $k: $r\n";
    print $before "round $k: $r\n";
    gate();
    if ($k == 1) {
        require Digest::MD5;
        print "md5 after move 1: ", Digest::MD5::md5_hex("round 1: $r"), "\n";
        open($after, '+>', "$dir/pl-after-$tag.txt") or die "open: $!";
        $after->autoflush(1);
        my $left = select(undef, undef, undef, 0.05);
        print "select slept: $left\n";
    }
    print $after "after move $k: $r\n";
}

require POSIX;
my $ctx = Digest::MD5->new;
for my $f ($before, $after) {
    seek($f, 0, 0) or die "seek: $!";
    local $/;
    my $text = <$f>;
    print $text;
    $ctx->add($text);
}
print "checksum ", $ctx->hexdigest, " floor ", POSIX::floor(7.5), "\n";
exit 4;
