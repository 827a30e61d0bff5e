#!/usr/bin/perl
# dkim_verify.pl - offline DKIM verifier for the test suite, built on Perl
# Mail::DKIM (an implementation independent of dkimpy).
#
# Usage:
#   dkim_verify.pl --key gw2026._domainkey.example.com='v=DKIM1; k=rsa; p=MIIB...' \
#                  [--key NAME=TXT ...] [--lax] < message.eml
#
# * Reads one RFC 5322 message on stdin (CRLF or bare-LF line endings; bare LF
#   is converted to CRLF before verification, as RFC 6376 requires).
# * Public keys come ONLY from the --key arguments. Mail::DKIM's DNS layer is
#   replaced, and Net::DNS::Resolver construction/sending is made fatal, so no
#   DNS traffic can ever happen. A selector without a --key answers NXDOMAIN,
#   which Mail::DKIM reports as "invalid (public key: not available)".
# * Prints one line per DKIM-Signature header field, top to bottom:
#       <result> d=<domain> s=<selector> a=<algorithm> [reason="..."]
#   where <result> is Mail::DKIM's per-signature result (pass/fail/invalid/...).
#   A DKIM-Signature that Mail::DKIM cannot even parse is printed as
#       invalid d=? s=? a=? reason="..."
#   If the message has no DKIM-Signature at all, prints "none".
#   DomainKey-Signature (pre-DKIM) headers are ignored.
# * Exit status: 0 iff there is at least one DKIM-Signature and every one of
#   them has result "pass"; 1 otherwise; 2 on usage errors.
# * Verification is "Strict" by default (rsa-sha1 signatures are rejected as
#   invalid, keys < 1024 bits fail). --lax turns Strict off.
#
# Tested with Mail::DKIM 1.20230212 (Debian bookworm libmail-dkim-perl
# 1.20230212-2~deb12u1), Net::DNS 1.36. That Mail::DKIM version supports only
# rsa-sha1 / rsa-sha256: ed25519-sha256 signatures come out as
# "invalid ... reason="unsupported algorithm ed25519-sha256"" (and exit 1).
# For ed25519 use opendkim in test mode instead (Debian package opendkim,
# config "Mode v" + "TestPublicKeys <file>", run "opendkim -x CONF -t MSG").

use strict;
use warnings;

use Getopt::Long qw(GetOptionsFromArray);
use Net::DNS ();
use Mail::DKIM 0.40;
use Mail::DKIM::DNS ();
use Mail::DKIM::Verifier ();

my %KEYS;    # lower-case fqdn (no trailing dot) => TXT value
my $lax = 0;

sub usage {
    print STDERR "usage: $0 --key NAME=TXT [--key NAME=TXT ...] [--lax] < message\n";
    exit 2;
}

GetOptionsFromArray(
    \@ARGV,
    'key=s' => sub {
        my ( undef, $arg ) = @_;
        my ( $name, $txt ) = split /=/, $arg, 2;
        die "--key expects NAME=TXT, got '$arg'\n"
          unless defined $txt && length $name;
        $name = lc $name;
        $name =~ s/\.\z//;
        $KEYS{$name} = $txt;
    },
    'lax'  => \$lax,
    'help' => sub { usage() },
) or usage();
usage() if @ARGV;

# ---------------------------------------------------------------------------
# No network, ever: answer Mail::DKIM's DNS queries from %KEYS.
#
# Mail::DKIM::PublicKey->fetch_async() calls Mail::DKIM::DNS::query_async(),
# which (in 1.20230212) calls Mail::DKIM::DNS::query($name, $type). query()
# returns a list of Net::DNS::RR objects and leaves the rcode in $@
# ('NOERROR', 'NODATA', 'NXDOMAIN'). Both entry points are replaced so that
# this keeps working even if a future version stops routing one through the
# other; the resolver is also replaced by an object that dies if used.
# ---------------------------------------------------------------------------
{
    package DKIMVerify::NoNetworkResolver;
    sub new { return bless {}, shift }
    sub AUTOLOAD {
        our $AUTOLOAD;
        return if $AUTOLOAD =~ /::DESTROY\z/;
        die "dkim_verify.pl: real DNS resolver used ($AUTOLOAD); this must not happen\n";
    }
}

sub fake_query {
    my ( $domain, $type ) = @_;
    my $name = lc( defined $domain ? $domain : '' );
    $name =~ s/\.\z//;
    if ( !exists $KEYS{$name} ) {
        $@ = 'NXDOMAIN';
        return;
    }
    if ( uc( $type || '' ) ne 'TXT' ) {
        $@ = 'NODATA';
        return;
    }
    my $txt = $KEYS{$name};
    # Split into <=255-octet character-strings like a real TXT record;
    # Mail::DKIM joins them back with no separator (RFC 6376 3.6.2.2).
    my @chunks = length $txt ? unpack( '(a255)*', $txt ) : ('');
    my $rr = Net::DNS::RR->new(
        owner   => $name,
        type    => 'TXT',
        ttl     => 300,
        txtdata => \@chunks,
    );
    $@ = 'NOERROR';
    return ($rr);
}

{
    no warnings qw(redefine once);

    *Mail::DKIM::DNS::query = \&fake_query;

    *Mail::DKIM::DNS::query_async = sub {
        my ( $domain, $type, %prms ) = @_;
        my $callbacks  = $prms{Callbacks}      || {};
        my $on_success = $callbacks->{Success} || sub { $_[0] };
        my $on_error   = $callbacks->{Error}   || sub { die $_[0] };
        return sub {
            my @resp;
            my $rcode;
            eval {
                local $SIG{__DIE__};
                @resp  = fake_query( $domain, $type );
                $rcode = $@;
                1;
            } or return $on_error->($@);
            $@ = $rcode;
            return $on_success->(@resp);
        };
    };

    # Belt and braces: nothing may build or use a real resolver.
    Mail::DKIM::DNS::resolver( DKIMVerify::NoNetworkResolver->new );
    *Net::DNS::Resolver::new = sub {
        die "dkim_verify.pl: Net::DNS::Resolver->new called; network DNS is disabled\n";
    };
}

# ---------------------------------------------------------------------------
# Read and normalise the message.
# ---------------------------------------------------------------------------
binmode STDIN;
my $msg = do { local $/; <STDIN> };
$msg = '' unless defined $msg;
$msg =~ s/\015?\012/\015\012/g;    # LF or CRLF -> CRLF (bare CR left alone)

# Count DKIM-Signature fields independently of Mail::DKIM, as a safety net.
my ($header_block) = split /\015\012\015\012/, $msg, 2;
$header_block = '' unless defined $header_block;
my $raw_sig_count = () = $header_block =~ /^dkim-signature[ \t]*:/img;

# Subclass only to remember, in header order, every DKIM-Signature field,
# including those Mail::DKIM drops because it cannot parse them (for those it
# keeps only a reason string in $self->{signature_reject_reason}).
{
    package DKIMVerify::Verifier;
    our @ISA = ('Mail::DKIM::Verifier');

    sub handle_header {
        my $self = shift;
        my ($field_name) = @_;
        my $before = scalar @{ $self->{signatures} };
        my $prev   = delete $self->{signature_reject_reason};
        $self->SUPER::handle_header(@_);
        my $why = $self->{signature_reject_reason};
        $self->{signature_reject_reason} = $prev unless defined $why;
        return unless lc($field_name) eq 'dkim-signature';
        my $order = $self->{dkimverify_order} ||= [];
        if ( @{ $self->{signatures} } > $before ) {
            push @$order, $self->{signatures}->[-1];
        }
        else {
            $why = 'DKIM-Signature ignored by Mail::DKIM (too many signatures?)'
              unless defined $why && length $why;
            push @$order, { unparsed_reason => $why };
        }
    }
}

my $dkim = DKIMVerify::Verifier->new( Strict => ( $lax ? 0 : 1 ) );
$dkim->PRINT($msg);
$dkim->CLOSE;

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
sub q_reason {
    my ($r) = @_;
    $r =~ s/\s+/ /g;
    $r =~ s/\s+\z//;
    $r =~ s/"/'/g;
    return qq{reason="$r"};
}

my @sigs = @{ $dkim->{dkimverify_order} || [] };
my $all_pass = 1;
my $n        = 0;

for my $sig (@sigs) {
    $n++;
    if ( ref $sig eq 'HASH' ) {
        $all_pass = 0;
        print 'invalid d=? s=? a=? ', q_reason( $sig->{unparsed_reason} ), "\n";
        next;
    }
    my $result = $sig->result;
    $result = 'invalid' unless defined $result && length $result;
    my $detail = $sig->result_detail;
    my $reason = '';
    if ( defined $detail && $detail =~ /\A\Q$result\E \((.*)\)\z/s ) {
        $reason = $1;
    }
    my @f = (
        $result,
        'd=' . ( defined $sig->domain    ? $sig->domain    : '?' ),
        's=' . ( defined $sig->selector  ? $sig->selector  : '?' ),
        'a=' . ( defined $sig->algorithm ? $sig->algorithm : '?' ),
    );
    push @f, q_reason($reason) if length $reason;
    print join( ' ', @f ), "\n";
    $all_pass = 0 unless $result eq 'pass';
}

# Safety net: our own count of DKIM-Signature fields must match.
if ( $raw_sig_count != $n ) {
    print "invalid d=? s=? a=? reason=\"found $raw_sig_count DKIM-Signature fields, Mail::DKIM reported $n\"\n";
    $all_pass = 0;
}

if ( $n == 0 ) {
    print "none\n";
    exit 1;
}
exit( $all_pass ? 0 : 1 );
