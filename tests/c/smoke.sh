#!/bin/sh
# Native smoke test for the C probe programs (no preload involved):
# builds them, makes a small tree, runs a batch exercising every probe op
# three times and checks that runs 2 and 3 are byte-identical (run 1 is a
# warm-up: the first read of a fresh file moves its atime under relatime).
#
#   sh tests/c/smoke.sh [WORKDIR]     (default: a fresh mktemp -d)
set -eu
SRC=$(cd "$(dirname "$0")" && pwd)
W=${1:-$(mktemp -d /tmp/fmc-csmoke.XXXXXX)}
mkdir -p "$W/bin" "$W/out"
for p in probe readfiles threads; do
	gcc -O1 -Wall -Wextra -Werror -o "$W/bin/$p" "$SRC/$p.c"
done

T=$W/tree
rm -rf "$T"
mkdir -p "$T/d/sub" "$T/empty"
printf 'hello world\n' >"$T/f.txt"
: >"$T/zero"
printf 'secret' >"$T/m000"; chmod 000 "$T/m000"
printf '#!/bin/sh\necho hi\n' >"$T/exe"; chmod 755 "$T/exe"
head -c 10000 /dev/zero | tr '\0' 'z' >"$T/d/big.bin"
echo a >"$T/d/a"; echo b >"$T/d/with space"
ln -s ../f.txt "$T/d/lnk"; ln -s f.txt "$T/sym"; ln -s sym "$T/symsym"
ln -s d "$T/symdir"; ln -s nowhere "$T/dangling"
ln -s loop1 "$T/loop2"; ln -s loop2 "$T/loop1"
LONGC=$(printf '%0300d' 0)
LONGP=$(i=0; while [ $i -lt 140 ]; do printf '/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'; i=$((i+1)); done)

B=$W/batch.txt
{
for op in stat lstat stat64 lstat64 fstatat fstatat_nofollow fstatat64 fstatat64_nofollow \
	statx statx_nofollow __xstat __lxstat __xstat64 __lxstat64 __fxstatat __fxstatat64 \
	__fxstatat64_nofollow; do
	for p in "$T/f.txt" "$T/sym" "$T/d" "$T/dangling" "$T/loop1" "$T/f.txt/x" "$T/nope" \
		"$T/m000" '""'; do echo "$op $p"; done
done
echo "stat $T/$LONGC"; echo "stat $LONGP"; echo "stat $T/d/with\\x20space"
for op in access faccessat euidaccess eaccess faccessat_eaccess faccessat_nofollow; do
	for m in F R W X RX RWX; do echo "$op $T/m000 $m"; done
	echo "$op $T/exe X"; echo "$op $T/f.txt X"; echo "$op $T/dangling F"; echo "$op $T/f.txt/x F"
done
for op in open open64 openat openat64 __open_2 __open64_2 __openat_2 __openat64_2; do
	echo "$op $T/f.txt RDONLY"; echo "$op $T/d/big.bin RDONLY|CLOEXEC"; echo "$op $T/zero RDONLY"
	echo "$op $T/d RDONLY|DIRECTORY"; echo "$op $T/f.txt RDONLY|DIRECTORY"
	echo "$op $T/sym RDONLY|NOFOLLOW"; echo "$op $T/sym PATH|NOFOLLOW"; echo "$op $T/nope RDONLY"
	echo "$op $T/dangling RDONLY"; echo "$op $T/f.txt/x RDONLY"; echo "$op $T/m000 RDONLY"
done
echo "fdnum $T/f.txt"
for op in fopen fopen64 freopen; do
	echo "$op $T/f.txt r"; echo "$op $T/d/big.bin re"; echo "$op $T/nope r"; echo "$op $T/d r"
done
for op in readdir readdir32 readdir_full readdir_r readdir64_r scandir scandir64 fdopendir dirfd \
	telldir telldir_full rewinddir; do
	for p in "$T/d" "$T/empty" "$T/symdir" "$T/f.txt" "$T/nope"; do echo "$op $p"; done
done
for op in readlink readlinkat readlink_small; do
	for p in "$T/sym" "$T/d/lnk" "$T/dangling" "$T/f.txt" "$T/nope" "$T/f.txt/x"; do echo "$op $p"; done
done
for op in realpath canonicalize_file_name; do
	for p in "$T/symsym" "$T/d/../sym" "$T/dangling" "$T/d/nope/x" "$T/loop1" "$T/f.txt/x" \
		"$T/symdir/lnk" '""'; do echo "$op $p"; done
done
echo "chdir $T"; echo "getcwd -"; echo "getcwd_small - 4"; echo "get_current_dir_name"
echo "fstatat_emptypath \"\""; echo "statx_emptypath \"\""
echo "chdir $T/nope"; echo "chdir d"; echo "stat big.bin"; echo "open lnk RDONLY"
echo "readdir ."; echo "realpath ../symdir/lnk"; echo "getcwd -"; echo "fchdir .."; echo "stat ./f.txt"
for op in rel_openat rel_fstatat rel_fstatat_nofollow rel_statx rel_readlinkat rel_faccessat \
	rel_fdopendir; do
	echo "$op $T/d lnk"; echo "$op $T/d a"; echo "$op $T/d sub"; echo "$op $T/f.txt a"; echo "$op $T/d nope"
done
for op in stat_null lstat_null stat64_null fstatat_null statx_null open_null openat_null access_null \
	faccessat_null readlink_null realpath_null chdir_null __xstat_null; do echo "$op -"; done
} >"$B"

for i in 1 2 3; do
	"$W/bin/probe" -f "$B" >"$W/out/probe$i.txt"
	"$W/bin/readfiles" "$T/f.txt" "$T/d/big.bin" "$T/nope" "$T/d" >"$W/out/readfiles$i.txt"
done
printf '%s\n' "$T/f.txt" "$T/d" "$T/sym" "$T/symdir" "$T/nope" "$T/dangling" "$T/d/big.bin" \
	"$T/empty" "$T/f.txt/x" >"$W/list.txt"
"$W/bin/threads" 4 0 "$W/list.txt" 20 >"$W/out/threads.txt"

cmp "$W/out/probe2.txt" "$W/out/probe3.txt"
cmp "$W/out/readfiles2.txt" "$W/out/readfiles3.txt"
grep -q '^ok 720$' "$W/out/threads.txt"
if grep -q -- '-> \(UNKNOWN-OP\|MISSING-ARG\|BAD-\)' "$W/out/probe2.txt"; then
	echo "smoke: malformed probe lines" >&2; exit 1
fi
echo "smoke ok: $(wc -l <"$B") probes, output in $W/out"
