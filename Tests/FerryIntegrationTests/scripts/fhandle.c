// File handles from the command line, for FileHandleTests.swift (needs CAP_DAC_READ_SEARCH to open).
//
//   fhandle get PATH                   prints "TYPE HEX" (name_to_handle_at, symlinks not followed)
//   fhandle open MOUNTDIR TYPE HEX     open_by_handle_at with a descriptor of MOUNTDIR as mount_fd;
//                                      prints "ok INO" (st_ino of what it opened), or for a
//                                      directory "ok INO PARENT_INO" (its ".." opened from it), or
//                                      "error ENAME (call)"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HANDLE 128

static int fail(const char *what) {
    printf("error %s (%s)\n", strerrorname_np(errno) ? strerrorname_np(errno) : "unknown", what);
    return 1;
}

int main(int argc, char **argv) {
    union { struct file_handle fh; unsigned char raw[sizeof(struct file_handle) + MAX_HANDLE]; } buf;
    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        int mount_id;
        buf.fh.handle_bytes = MAX_HANDLE;
        if (name_to_handle_at(AT_FDCWD, argv[2], &buf.fh, &mount_id, 0) != 0) return fail("name_to_handle_at");
        printf("%d ", buf.fh.handle_type);
        for (unsigned i = 0; i < buf.fh.handle_bytes; i++) printf("%02x", buf.fh.f_handle[i]);
        printf("\n");
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "open") == 0) {
        const char *hex = argv[4];
        size_t n = strlen(hex) / 2;
        if (n > MAX_HANDLE || strlen(hex) % 2) { fprintf(stderr, "bad handle\n"); return 2; }
        buf.fh.handle_bytes = (unsigned)n;
        buf.fh.handle_type = atoi(argv[3]);
        for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &buf.fh.f_handle[i]);
        int mount_fd = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (mount_fd < 0) return fail("open mount");
        int fd = open_by_handle_at(mount_fd, &buf.fh, O_RDONLY | O_NONBLOCK);
        if (fd < 0) return fail("open_by_handle_at");
        struct stat st;
        if (fstat(fd, &st) != 0) return fail("fstat");
        if (S_ISDIR(st.st_mode)) {
            struct stat up;
            if (fstatat(fd, "..", &up, 0) != 0) return fail("..");
            printf("ok %llu %llu\n", (unsigned long long)st.st_ino, (unsigned long long)up.st_ino);
        } else {
            printf("ok %llu\n", (unsigned long long)st.st_ino);
        }
        return 0;
    }
    fprintf(stderr, "usage: fhandle get PATH | fhandle open MOUNTDIR TYPE HEX\n");
    return 2;
}
