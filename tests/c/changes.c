/* changes: a program that changes the tree it is served from and prints
 * (deterministically, relative names only) what it then sees.
 *
 *   changes look DIR              list DIR, stat its names (the pilot run)
 *   changes streams DIR SCRATCH N LOG
 *                                 open a stream on DIR, read half of it, make N
 *                                 renames in SCRATCH (file and directory), then
 *                                 rewinddir/seekdir/telldir/dirfd/readdir on the
 *                                 stream; LOG is the program's own log file,
 *                                 written before and after: its bytes printed
 *   changes rewind DIR            read DIR, create DIR/new, rewinddir, read again
 *   changes temps DIR             mkstemp, mkstemps, mkostemp, mkdtemp (and a file
 *                                 in it), bind of a Unix socket, all in DIR; then
 *                                 stat each and list DIR
 *   changes dl LIB V2 NEW         dlopen LIB, version(); rewrite LIB in place with
 *                                 the bytes of V2; dlopen again; dlopen NEW
 *                                 (missing), create it from V2, dlopen again
 *   changes dlook LIB NEW         dlopen LIB and NEW (the pilot run of dl)
 *   changes lookdirs DIR N        stat DIR/dI/f for I < N (the pilot run)
 *   changes renamedirs DIR N      the same, renaming each DIR/dI to DIR/eI and
 *                                 stat-ing both spellings; VmRSS/VmHWM to stderr
 *   changes threads DIR SCRATCH N 8 threads each renaming its cached DIR/tI/a to b
 *                                 and back N times, checking both spellings, and
 *                                 creating/renaming/unlinking in SCRATCH
 *   changes stress DIR SCRATCH N  N renames and N unlinks in SCRATCH, 1000 renames
 *                                 in DIR/churn; VmRSS/VmHWM to stderr; then stat
 *                                 and list DIR
 */
#include <dirent.h>
#include <pthread.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the rest of a stream; prints how many names (not which: the
 * kernel's order differs between two trees). */
static void count(const char *tag, DIR *d)
{
    int n = 0;
    errno = 0;
    while (readdir(d) != NULL)
        n++;
    printf("%s %d errno=%d\n", tag, n, errno);
}

/* Reads the rest of a stream; prints the sorted names after TAG. */
static void rest(const char *tag, DIR *d)
{
    char *names[4096];
    int n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL && n < 4096)
        names[n++] = strdup(e->d_name);
    qsort(names, n, sizeof names[0], cmp);
    printf("%s %d errno=%d:", tag, n, errno);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static void list(const char *tag, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s opendir %s: %s\n", tag, dir, strerror(errno));
        return;
    }
    rest(tag, d);
    closedir(d);
}

static void show_stat(const char *tag, const char *p)
{
    struct stat st;
    if (!tag) {
        stat(p, &st);
        return;
    }
    if (stat(p, &st) != 0)
        printf("%s stat: %s\n", tag, strerror(errno));
    else
        printf("%s stat: mode %o size %lld\n", tag, (unsigned)st.st_mode,
               (long long)st.st_size);
}

static void put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) < 0)
        perror(path);
    if (fd >= 0)
        close(fd);
}

static int look(const char *dir)
{
    list("list", dir);
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    while (d && (e = readdir(d)) != NULL) {
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        stat(p, &st);
    }
    if (d)
        closedir(d);
    return 0;
}

static int streams(const char *dir, const char *scratch, int n, const char *log)
{
    int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(logfd, "start\n", 6) != 6)
        return 1;
    DIR *d = opendir(dir);
    if (!d) {
        printf("opendir: %s\n", strerror(errno));
        return 1;
    }
    int half = 0;
    struct dirent *e;
    while (half < 3 && (e = readdir(d)) != NULL)
        half++;
    long pos = telldir(d);
    char a[4096], b[4096];
    for (int i = 0; i < n; i++) {
        snprintf(a, sizeof a, "%s/f%d", scratch, i);
        snprintf(b, sizeof b, "%s/g%d", scratch, i);
        put(a, "x");
        if (rename(a, b) != 0)
            printf("rename: %s\n", strerror(errno));
        snprintf(a, sizeof a, "%s/d%d", scratch, i);
        snprintf(b, sizeof b, "%s/e%d", scratch, i);
        mkdir(a, 0755);
        if (rename(a, b) != 0 || rmdir(b) != 0)
            printf("rename dir: %s\n", strerror(errno));
    }
    /* A change the library cannot place (a name over PATH_MAX): it then
     * trusts nothing, and the stream must still work. */
    char *longp = malloc(5000);
    memset(longp, 'x', 4999);
    longp[4999] = 0;
    printf("unlink over-long: %s\n", unlink(longp) == 0 ? "ok" : strerror(errno));
    free(longp);
    printf("read %d\n", half);
    count("after changes", d);
    seekdir(d, pos);
    count("after seekdir", d);
    rewinddir(d);
    rest("after rewinddir", d);
    int fd = dirfd(d);
    struct stat st;
    printf("dirfd fstat %s\n", fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? "dir" : "bad");
    closedir(d);
    if (write(logfd, "end\n", 4) != 4)
        return 1;
    close(logfd);
    char buf[64] = {0};
    int r = open(log, O_RDONLY);
    ssize_t got = read(r, buf, sizeof buf - 1);
    close(r);
    printf("log %zd: %s", got, buf);
    return 0;
}

static int rewind_(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 1;
    rest("before", d);
    char p[4096];
    snprintf(p, sizeof p, "%s/new", dir);
    put(p, "new");
    rewinddir(d);
    rest("after rewinddir", d);
    rewinddir(d);
    rest("again", d);
    closedir(d);
    list("fresh stream", dir);
    show_stat("new", p);
    return 0;
}

static void temp_result(const char *tag, int ok, const char *path)
{
    struct stat st;
    printf("%s %s", tag, ok ? "ok" : strerror(errno));
    if (ok)
        printf(" stat %s", stat(path, &st) == 0 ? "found" : strerror(errno));
    printf("\n");
}

static int temps(const char *dir)
{
    char t[4096];
    snprintf(t, sizeof t, "%s/sXXXXXX", dir);
    int fd = mkstemp(t);
    temp_result("mkstemp", fd >= 0, t);
    snprintf(t, sizeof t, "%s/sXXXXXX.txt", dir);
    fd = mkstemps(t, 4);
    temp_result("mkstemps", fd >= 0, t);
    snprintf(t, sizeof t, "%s/oXXXXXX", dir);
    fd = mkostemp(t, O_CLOEXEC);
    temp_result("mkostemp", fd >= 0, t);
    snprintf(t, sizeof t, "%s/dXXXXXX", dir);
    char *dd = mkdtemp(t);
    temp_result("mkdtemp", dd != NULL, t);
    if (dd) {
        char f[4096];
        snprintf(f, sizeof f, "%s/inside", dd);
        put(f, "in");
        show_stat("file in mkdtemp dir", f);
        list("mkdtemp dir", dd);
    }
    snprintf(t, sizeof t, "%s/sock", dir);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, t, sizeof sa.sun_path - 1);
    int ok = bind(s, (struct sockaddr *)&sa, sizeof sa) == 0;
    temp_result("bind", ok, t);
    struct stat st;
    printf("sock is socket: %d\n", stat(t, &st) == 0 && S_ISSOCK(st.st_mode));
    /* Names are random: count them by kind. */
    DIR *d = opendir(dir);
    int kinds[4] = {0};
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        kinds[e->d_name[0] == 's' ? 0 : e->d_name[0] == 'o' ? 1 : e->d_name[0] == 'd' ? 2 : 3]++;
    if (d)
        closedir(d);
    printf("listed s* %d o* %d d* %d other %d\n", kinds[0], kinds[1], kinds[2], kinds[3]);
    return 0;
}

static void call(const char *tag, const char *lib)
{
    void *h = dlopen(lib, RTLD_NOW);
    if (!h) {
        const char *m = dlerror();
        printf("%s: dlopen fails (%s)\n", tag, m && strstr(m, "No such file") ? "No such file" : "other");
        return;
    }
    int (*v)(void) = (int (*)(void))dlsym(h, "version");
    printf("%s: version %d\n", tag, v ? v() : -1);
    dlclose(h);
}

static void copy(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n)
            perror("write");
    close(in);
    close(out);
}

static int dl(const char *lib, const char *v2, const char *fresh)
{
    call("first", lib);
    copy(v2, lib);
    call("rewritten in place", lib);
    call("missing", fresh);
    copy(v2, fresh);
    call("created", fresh);
    return 0;
}

static void mem(const char *tag)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    fprintf(stderr, "%s:", tag);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS", 5) || !strncmp(line, "VmHWM", 5)) {
            line[strcspn(line, "\n")] = 0;
            fprintf(stderr, " %s", line);
        }
    fprintf(stderr, "\n");
    if (f)
        fclose(f);
}

static int stress(const char *dir, const char *scratch, int n)
{
    char a[4096], b[4096];
    list("before", dir);
    mem("memory before");
    for (int i = 0; i < n; i++) {
        snprintf(a, sizeof a, "%s/f%d", scratch, i);
        int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            printf("create: %s\n", strerror(errno));
            return 1;
        }
        close(fd);
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        snprintf(a, sizeof a, "%s/f%d", scratch, i);
        snprintf(b, sizeof b, "%s/g%d", scratch, i);
        bad += rename(a, b) != 0;
    }
    for (int i = 0; i < n; i++) {
        snprintf(b, sizeof b, "%s/g%d", scratch, i);
        bad += unlink(b) != 0;
    }
    snprintf(a, sizeof a, "%s/churn", dir);
    mkdir(a, 0755);
    for (int i = 0; i < 1000; i++) {
        snprintf(a, sizeof a, "%s/churn/c%d", dir, i);
        snprintf(b, sizeof b, "%s/churn/k%d", dir, i);
        put(a, "c");
        bad += rename(a, b) != 0;
        bad += unlink(b) != 0;
    }
    snprintf(a, sizeof a, "%s/churn", dir);
    bad += rmdir(a) != 0;
    mem("memory after");
    printf("failures %d\n", bad);
    /* DIR/keep was never touched: served again and again. */
    snprintf(a, sizeof a, "%s/keep/k1", dir);
    for (int i = 0; i < 100; i++)
        show_stat(i ? NULL : "keep/k1", a);
    snprintf(a, sizeof a, "%s/keep", dir);
    list("keep", a);
    list("after", dir);
    return 0;
}

/* DIR/dI/f for i < N: the pilot stats each (look), the served run
 * renames each dI away and stats the old and new spellings. */
static int dirs(const char *dir, int n, int rename_them)
{
    char a[4096], b[4096];
    struct stat st;
    int found_before = 0, old_gone = 0, new_found = 0;
    if (rename_them)
        mem("memory before");
    for (int i = 0; i < n; i++) {
        snprintf(a, sizeof a, "%s/d%d/f", dir, i);
        found_before += stat(a, &st) == 0;
        if (!rename_them)
            continue;
        snprintf(a, sizeof a, "%s/d%d", dir, i);
        snprintf(b, sizeof b, "%s/e%d", dir, i);
        if (rename(a, b) != 0)
            printf("rename: %s\n", strerror(errno));
        snprintf(a, sizeof a, "%s/d%d/f", dir, i);
        old_gone += stat(a, &st) != 0 && errno == ENOENT;
        snprintf(b, sizeof b, "%s/e%d/f", dir, i);
        new_found += stat(b, &st) == 0;
    }
    if (rename_them)
        mem("memory after");
    printf("found before %d, old names gone %d, new names found %d\n", found_before, old_gone, new_found);
    return 0;
}

/* threads: 8 threads, each renaming its own cached directory DIR/tI/a to
 * b and back N times (prefixes added concurrently), checking after each
 * rename that the old spelling is gone and the new one found, and creating,
 * renaming and unlinking a file outside the cache (SCRATCH). */
struct job {
    const char *dir, *scratch;
    int id, n, bad;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    char a[2048], b[2048], fa[4096], fb[4096], s1[4096], s2[4096];
    struct stat st;
    snprintf(a, sizeof a, "%s/t%d/a", j->dir, j->id);
    snprintf(b, sizeof b, "%s/t%d/b", j->dir, j->id);
    snprintf(fa, sizeof fa, "%s/f", a);
    snprintf(fb, sizeof fb, "%s/f", b);
    snprintf(s1, sizeof s1, "%s/x%d", j->scratch, j->id);
    snprintf(s2, sizeof s2, "%s/y%d", j->scratch, j->id);
    /* What the pilot records (N = 0): the file, and b missing. */
    j->bad += stat(fa, &st) != 0;
    j->bad += stat(fb, &st) == 0;
    for (int i = 0; i < j->n; i++) {
        const char *from = i % 2 ? b : a, *to = i % 2 ? a : b;
        const char *ffrom = i % 2 ? fb : fa, *fto = i % 2 ? fa : fb;
        j->bad += stat(ffrom, &st) != 0;
        j->bad += rename(from, to) != 0;
        j->bad += !(stat(ffrom, &st) != 0 && errno == ENOENT);
        j->bad += stat(fto, &st) != 0;
        int fd = open(s1, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        j->bad += fd < 0;
        close(fd);
        j->bad += rename(s1, s2) != 0;
        j->bad += unlink(s2) != 0;
    }
    return NULL;
}

static int threads(const char *dir, const char *scratch, int n)
{
    pthread_t t[8];
    struct job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct job){dir, scratch, i, n, 0};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        bad += jobs[i].bad;
    }
    printf("threads done, failures %d\n", bad);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "look"))
        return look(argv[2]);
    if (argc >= 6 && !strcmp(argv[1], "streams"))
        return streams(argv[2], argv[3], atoi(argv[4]), argv[5]);
    if (argc >= 3 && !strcmp(argv[1], "rewind"))
        return rewind_(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "temps"))
        return temps(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "dlook")) {
        call("first", argv[2]);
        call("missing", argv[3]);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "dl"))
        return dl(argv[2], argv[3], argv[4]);
    if (argc >= 5 && !strcmp(argv[1], "threads"))
        return threads(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "lookdirs"))
        return dirs(argv[2], atoi(argv[3]), 0);
    if (argc >= 4 && !strcmp(argv[1], "renamedirs"))
        return dirs(argv[2], atoi(argv[3]), 1);
    if (argc >= 5 && !strcmp(argv[1], "stress"))
        return stress(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of changes.c\n");
    return 2;
}
