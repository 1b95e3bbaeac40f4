// sealkit-verity-enable: fs-verity (SHA-256, 4096-byte blocks, no salt: the
// digest services/ima/verity.ts computes) on every file named on stdin,
// each name ending in a NUL byte, in one process. `fsverity enable` takes
// one file per process; a rootfs has thousands, and the process per file
// was most of the cost (make bench ROWS=verity). A file that has fs-verity
// already (EEXIST: another name of the same inode, an earlier run) is not an
// error. Symbolic links are not followed. On the first failure it prints
// "NAME: reason" on stderr and exits 1; nothing on success.
#include <errno.h>
#include <fcntl.h>
#include <linux/fsverity.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void) {
  char *name = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getdelim(&name, &cap, '\0', stdin)) > 0) {
    if (name[n - 1] != '\0') name[n] = '\0'; // the last name may lack its NUL; getdelim leaves room
    int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      fprintf(stderr, "%s: %s\n", name, strerror(errno));
      return 1;
    }
    struct fsverity_enable_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.version = 1;
    arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
    arg.block_size = 4096;
    if (ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) != 0 && errno != EEXIST) {
      int e = errno;
      fprintf(stderr, "%s: cannot enable fs-verity: %s\n", name, e == ENOTTY || e == EOPNOTSUPP ? "the filesystem does not support fs-verity" : strerror(e));
      return 1;
    }
    close(fd);
  }
  if (ferror(stdin)) {
    fprintf(stderr, "reading the file names on stdin: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}
