// The label rows' limit: SHA-256 of every file named on stdin (NUL-separated)
// on N threads, each file opened, read into one buffer of the labeller's size
// and hashed with OpenSSL, nothing else (no walk, no xattr, no result kept).
// Usage: hash-limit THREADS BUFFER_BYTES < list; prints "files bytes".
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char **paths;
static size_t count, bufsize;
static atomic_size_t next;
static atomic_ullong total;
static atomic_int failed;

static void *hash_files(void *unused) {
  (void)unused;
  unsigned char *buf = malloc(bufsize), md[EVP_MAX_MD_SIZE];
  unsigned int mdlen;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  const EVP_MD *sha256 = EVP_sha256();
  unsigned long long bytes = 0;
  for (size_t i; (i = atomic_fetch_add(&next, 1)) < count;) {
    int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) { perror(paths[i]); failed = 1; continue; }
    EVP_DigestInit_ex(ctx, sha256, NULL);
    ssize_t n;
    while ((n = read(fd, buf, bufsize)) > 0) { EVP_DigestUpdate(ctx, buf, n); bytes += n; }
    if (n < 0) { perror(paths[i]); failed = 1; }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    close(fd);
  }
  total += bytes;
  free(buf);
  EVP_MD_CTX_free(ctx);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s THREADS BUFFER_BYTES < NUL-separated paths\n", argv[0]); return 2; }
  int threads = atoi(argv[1]);
  bufsize = strtoul(argv[2], NULL, 10);
  if (threads < 1 || threads > 64 || bufsize == 0) { fprintf(stderr, "bad THREADS or BUFFER_BYTES\n"); return 2; }
  size_t cap = 1 << 20, len = 0, r;
  char *list = malloc(cap);
  while ((r = fread(list + len, 1, cap - len, stdin)) > 0)
    if ((len += r) == cap) list = realloc(list, cap *= 2);
  for (size_t i = 0; i < len; i++) count += list[i] == 0;
  paths = malloc(count * sizeof *paths);
  for (size_t i = 0, k = 0, start = 0; i < len; i++)
    if (list[i] == 0) { paths[k++] = list + start; start = i + 1; }
  pthread_t t[64];
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, hash_files, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  printf("%zu %llu\n", count, (unsigned long long)total);
  return failed;
}
