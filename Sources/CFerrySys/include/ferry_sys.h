// Thin C shims for the few host calls Swift cannot make directly: variadic ioctl/syscall,
// per-thread credential syscalls (glibc broadcasts setgroups to every thread), struct file_handle
// (a flexible array member), getdents64 and unshare. Each is one call; all logic lives in Swift.
#ifndef FERRY_SYS_H
#define FERRY_SYS_H
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/vfs.h>
#include <pthread.h>
#include <spawn.h>

/// Largest file handle the kernel hands out (MAX_HANDLE_SZ).
#define FERRY_MAX_HANDLE_SZ 128

/// setfsuid/setfsgid/setgroups for the calling thread only (raw syscalls). Return the syscall result.
int ferry_thread_setfsuid(uid_t uid);
int ferry_thread_setfsgid(gid_t gid);
int ferry_thread_setgroups(size_t count, const gid_t *groups);
/// unshare(CLONE_FS): gives the calling thread its own umask and cwd.
int ferry_thread_unshare_fs(void);

/// name_to_handle_at: fills handle bytes (up to FERRY_MAX_HANDLE_SZ), its size and type, and the mount id.
int ferry_name_to_handle_at(int dirfd, const char *name, int flags,
                            unsigned char *handle, unsigned int *handle_bytes, int *handle_type,
                            int *mount_id);
/// open_by_handle_at on a handle produced by ferry_name_to_handle_at.
int ferry_open_by_handle_at(int mount_fd, const unsigned char *handle, unsigned int handle_bytes,
                            int handle_type, int flags);

/// getdents64(2).
ssize_t ferry_getdents64(int fd, void *buffer, size_t size);

/// ioctl(2) with a pointer argument.
int ferry_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument.
int ferry_ioctl_int(int fd, unsigned long request, unsigned long arg);

/// FUSE_DEV_IOC_BACKING_OPEN on /dev/fuse descriptor `devfd`: registers open file `fd` as a
/// passthrough backing file (struct fuse_backing_map {i32 fd; u32 flags; u64 padding}, all but
/// fd zero). Returns the backing id (> 0), or -1 with errno.
int ferry_fuse_backing_open(int devfd, int fd);
/// FUSE_DEV_IOC_BACKING_CLOSE: forgets backing id `id`. Returns 0, or -1 with errno.
int ferry_fuse_backing_close(int devfd, int id);

/// renameat2(2) through the raw syscall (works whatever glibc exposes).
int ferry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                    unsigned int flags);

/// openat(2) with a mode (Swift cannot call the variadic openat).
int ferry_openat(int dirfd, const char *path, int flags, mode_t mode);
/// openat2(2) through the raw syscall, with `flags` and `resolve` (RESOLVE_*) in its open_how.
int ferry_openat2(int dirfd, const char *path, int flags, uint64_t resolve);

/// struct statx as the kernel lays it out (declared here so no _GNU_SOURCE is needed).
struct ferry_statx_timestamp { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct ferry_statx {
    uint32_t stx_mask, stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink, stx_uid, stx_gid;
    uint16_t stx_mode, spare0;
    uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
    struct ferry_statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
    uint64_t stx_mnt_id;
    uint32_t stx_dio_mem_align, stx_dio_offset_align;
    uint64_t spare3[12];
};
/// statx(2) through the raw syscall.
int ferry_statx(int dirfd, const char *path, int flags, unsigned int mask, struct ferry_statx *out);

/// Calls glibc declares only under _GNU_SOURCE.
int ferry_fallocate(int fd, int mode, int64_t offset, int64_t length);
ssize_t ferry_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags);
int ferry_syncfs(int fd);
int ferry_set_thread_name(pthread_t thread, const char *name);

/// fcntl record locks (F_GETLK/F_SETLK/F_SETLKW or the F_OFD_* forms): fills/reads a struct flock
/// from the separate fields (whence is always SEEK_SET).
int ferry_fcntl_lock(int fd, int cmd, short *type, int64_t *start, int64_t *len, int *pid);
/// flock(2).
int ferry_flock(int fd, int operation);
/// pthread_create with a given stack size.
/// Pins the calling thread to CPU `cpu` (sched_setaffinity); 0 or -1 with errno.
int ferry_pin_to_cpu(int cpu);
int ferry_thread_create(pthread_t *thread, size_t stack_size, void *(*start)(void *), void *arg);

/// tgkill(2): signals one thread of this process by kernel thread id (ESRCH once it has exited).
int ferry_tgkill(int tid, int signal);

/// gettid(2).
int ferry_gettid(void);

/// fanotify_init(2) and fanotify_mark(2) (the mask is 64 bits wide).
int ferry_fanotify_init(unsigned int flags, unsigned int event_flags);
int ferry_fanotify_mark(int fanotify_fd, unsigned int flags, uint64_t mask, int dirfd, const char *path);
/// inotify_init1(2), inotify_add_watch(2), inotify_rm_watch(2).
int ferry_inotify_init(int flags);
int ferry_inotify_add_watch(int fd, const char *path, uint32_t mask);
int ferry_inotify_rm_watch(int fd, int wd);
/// eventfd(2) with EFD_CLOEXEC | EFD_NONBLOCK.
int ferry_eventfd(void);

/// epoll_create1(EPOLL_CLOEXEC).
int ferry_epoll_create(void);
/// epoll_ctl(EPOLL_CTL_ADD) for readability of `fd`, tagged `tag`; `exclusive` adds EPOLLEXCLUSIVE.
int ferry_epoll_add_readable(int epfd, int fd, int exclusive, uint64_t tag);
/// epoll_wait: fills up to `max` tags of ready descriptors; returns their count, or -1 (errno).
int ferry_epoll_wait(int epfd, uint64_t *tags, int max, int timeout);
/// pipe2(2) with O_CLOEXEC.
int ferry_pipe_cloexec(int fds[2]);
/// posix_spawn_file_actions_addchdir_np (a GNU extension).
int ferry_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);

/// open_tree(2) through the raw syscall.
int ferry_open_tree(int dirfd, const char *path, unsigned int flags);
/// mount_setattr(2) through the raw syscall, with struct mount_attr (version 0) built from its
/// fields (propagation and userns_fd left 0).
int ferry_mount_setattr(int dirfd, const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr);

/// getxattrat(2), listxattrat(2), setxattrat(2), removexattrat(2) (Linux 6.13) through the raw
/// syscalls, relative to `dirfd`, following a final symlink (or magic link); -1 with errno
/// ENOSYS on older kernels.
long ferry_getxattrat(int dirfd, const char *path, const char *name, void *value, size_t size);
long ferry_listxattrat(int dirfd, const char *path, char *list, size_t size);
int ferry_setxattrat(int dirfd, const char *path, const char *name, const void *value, size_t size, int flags);
int ferry_removexattrat(int dirfd, const char *path, const char *name);
/// fchmodat(2) following symlinks (for /proc/self/fd entries).
int ferry_fchmodat(int dirfd, const char *path, mode_t mode);
/// readlinkat(2).
long ferry_readlinkat(int dirfd, const char *path, char *buffer, size_t size);

/// unshare(2) with CLONE_* `flags` (the sandbox's namespaces).
int ferry_unshare(int flags);
/// pivot_root(2) through the raw syscall.
int ferry_pivot_root(const char *new_root, const char *put_old);
/// capget/capset (version 3) for the calling thread: the three 64-bit capability sets, each
/// split into the kernel's two 32-bit words. Return the syscall result.
int ferry_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
int ferry_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable);
/// prctl(2) with up to two unsigned-long arguments (the rest 0).
int ferry_prctl(int option, unsigned long arg2, unsigned long arg3);
/// Installs a SIGSYS handler that writes "ferry: seccomp refused system call N" to standard
/// error and then dies of SIGSYS as if there were no handler (`--seccomp trap`).
int ferry_install_sigsys_reporter(void);
/// Makes the raw system call `number` with no arguments (for the forbidden-call test hook).
long ferry_raw_syscall0(long number);

/// fork(2) (the pid namespace's supervisor and server; only while one thread runs).
int ferry_fork(void);
/// pidfd_open(2) through the raw syscall: a descriptor that turns readable when `pid` exits.
int ferry_pidfd_open(int pid);
/// Whether the process behind `pidfd` has exited (poll without waiting): 1 yes, 0 no, -1 error.
int ferry_pidfd_exited(int pidfd);
/// close_range(first, ~0U, 0) through the raw syscall: closes every descriptor from `first` up.
int ferry_close_from(int first);

#endif
