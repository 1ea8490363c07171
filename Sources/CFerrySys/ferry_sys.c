#define _GNU_SOURCE
#include "ferry_sys.h"
#include <fcntl.h>
#include <errno.h>
#include <sys/stat.h>
#include <stdint.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <linux/openat2.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <signal.h>
#include <poll.h>

int ferry_thread_setfsuid(uid_t uid) { return (int)syscall(SYS_setfsuid, uid); }
int ferry_thread_setfsgid(gid_t gid) { return (int)syscall(SYS_setfsgid, gid); }
int ferry_thread_setgroups(size_t count, const gid_t *groups) {
    return (int)syscall(SYS_setgroups, count, groups);
}
int ferry_thread_unshare_fs(void) { return unshare(CLONE_FS); }

int ferry_name_to_handle_at(int dirfd, const char *name, int flags,
                            unsigned char *handle, unsigned int *handle_bytes, int *handle_type,
                            int *mount_id) {
    union {
        struct file_handle fh;
        unsigned char raw[sizeof(struct file_handle) + FERRY_MAX_HANDLE_SZ];
    } buf;
    buf.fh.handle_bytes = FERRY_MAX_HANDLE_SZ;
    int r = name_to_handle_at(dirfd, name, &buf.fh, mount_id, flags);
    if (r != 0) return r;
    *handle_bytes = buf.fh.handle_bytes;
    *handle_type = buf.fh.handle_type;
    memcpy(handle, buf.fh.f_handle, buf.fh.handle_bytes);
    return 0;
}

int ferry_open_by_handle_at(int mount_fd, const unsigned char *handle, unsigned int handle_bytes,
                            int handle_type, int flags) {
    union {
        struct file_handle fh;
        unsigned char raw[sizeof(struct file_handle) + FERRY_MAX_HANDLE_SZ];
    } buf;
    if (handle_bytes > FERRY_MAX_HANDLE_SZ) return -1;
    buf.fh.handle_bytes = handle_bytes;
    buf.fh.handle_type = handle_type;
    memcpy(buf.fh.f_handle, handle, handle_bytes);
    return open_by_handle_at(mount_fd, &buf.fh, flags);
}

ssize_t ferry_getdents64(int fd, void *buffer, size_t size) {
    return syscall(SYS_getdents64, fd, buffer, size);
}

int ferry_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int ferry_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

/* The uapi layout (include/uapi/linux/fuse.h, ABI 7.40); Debian's headers may predate it. */
struct ferry_fuse_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define FERRY_FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct ferry_fuse_backing_map)
#define FERRY_FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

int ferry_fuse_backing_open(int devfd, int fd) {
    struct ferry_fuse_backing_map map = { .fd = fd, .flags = 0, .padding = 0 };
    return ioctl(devfd, FERRY_FUSE_DEV_IOC_BACKING_OPEN, &map);
}

int ferry_fuse_backing_close(int devfd, int id) {
    uint32_t backing_id = (uint32_t)id;
    return ioctl(devfd, FERRY_FUSE_DEV_IOC_BACKING_CLOSE, &backing_id);
}

int ferry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                    unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

int ferry_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}

int ferry_openat2(int dirfd, const char *path, int flags, uint64_t resolve) {
    struct open_how how = { .flags = (uint64_t)flags, .mode = 0, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int ferry_gettid(void) { return (int)syscall(SYS_gettid); }

int ferry_statx(int dirfd, const char *path, int flags, unsigned int mask, struct ferry_statx *out) {
    return (int)syscall(SYS_statx, dirfd, path, flags, mask, out);
}

int ferry_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return fallocate(fd, mode, offset, length);
}
ssize_t ferry_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    loff_t in = *off_in, out = *off_out;
    ssize_t r = copy_file_range(fd_in, &in, fd_out, &out, len, flags);
    *off_in = in; *off_out = out;
    return r;
}
int ferry_syncfs(int fd) { return syncfs(fd); }
int ferry_set_thread_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }

int ferry_fcntl_lock(int fd, int cmd, short *type, int64_t *start, int64_t *len, int *pid) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = *type;
    lock.l_whence = SEEK_SET;
    lock.l_start = *start;
    lock.l_len = *len;
    lock.l_pid = 0;
    int r = fcntl(fd, cmd, &lock);
    if (r == 0) {
        *type = lock.l_type;
        *start = lock.l_start;
        *len = lock.l_len;
        *pid = lock.l_pid;
    }
    return r;
}
int ferry_flock(int fd, int operation) { return flock(fd, operation); }
int ferry_thread_create(pthread_t *thread, size_t stack_size, void *(*start)(void *), void *arg) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack_size > 0) pthread_attr_setstacksize(&attr, stack_size);
    int r = pthread_create(thread, &attr, start, arg);
    pthread_attr_destroy(&attr);
    return r;
}

int ferry_tgkill(int tid, int signal) { return (int)syscall(SYS_tgkill, getpid(), tid, signal); }

int ferry_fanotify_init(unsigned int flags, unsigned int event_flags) {
    return fanotify_init(flags, event_flags);
}

int ferry_fanotify_mark(int fanotify_fd, unsigned int flags, uint64_t mask, int dirfd, const char *path) {
    return fanotify_mark(fanotify_fd, flags, mask, dirfd, path);
}

int ferry_inotify_init(int flags) { return inotify_init1(flags); }

int ferry_inotify_add_watch(int fd, const char *path, uint32_t mask) { return inotify_add_watch(fd, path, mask); }

int ferry_inotify_rm_watch(int fd, int wd) { return inotify_rm_watch(fd, wd); }

int ferry_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int ferry_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int ferry_epoll_add_readable(int epfd, int fd, int exclusive, uint64_t tag) {
    struct epoll_event event = { .events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0), .data.u64 = tag };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int ferry_epoll_wait(int epfd, uint64_t *tags, int max, int timeout) {
    struct epoll_event events[8];
    if (max > 8) max = 8;
    int n = epoll_wait(epfd, events, max, timeout);
    for (int i = 0; i < n; i++) tags[i] = events[i].data.u64;
    return n;
}

int ferry_open_tree(int dirfd, const char *path, unsigned int flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

int ferry_mount_setattr(int dirfd, const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr) {
    struct { uint64_t attr_set, attr_clr, propagation, userns_fd; } attr = { attr_set, attr_clr, 0, 0 };
    return (int)syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr);
}

int ferry_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int ferry_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int ferry_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

/* The *xattrat syscalls share one number on every architecture with the generic table. */
#if defined(__x86_64__) || defined(__aarch64__)
#define FERRY_SYS_setxattrat 463
#define FERRY_SYS_getxattrat 464
#define FERRY_SYS_listxattrat 465
#define FERRY_SYS_removexattrat 466
#endif

struct ferry_xattr_args { uint64_t value; uint32_t size; uint32_t flags; };

long ferry_getxattrat(int dirfd, const char *path, const char *name, void *value, size_t size) {
#ifdef FERRY_SYS_getxattrat
    struct ferry_xattr_args args = { .value = (uint64_t)(uintptr_t)value, .size = (uint32_t)size, .flags = 0 };
    return syscall(FERRY_SYS_getxattrat, dirfd, path, 0, name, &args, sizeof args);
#else
    errno = ENOSYS; return -1;
#endif
}

long ferry_listxattrat(int dirfd, const char *path, char *list, size_t size) {
#ifdef FERRY_SYS_listxattrat
    return syscall(FERRY_SYS_listxattrat, dirfd, path, 0, list, size);
#else
    errno = ENOSYS; return -1;
#endif
}

int ferry_setxattrat(int dirfd, const char *path, const char *name, const void *value, size_t size, int flags) {
#ifdef FERRY_SYS_setxattrat
    struct ferry_xattr_args args = { .value = (uint64_t)(uintptr_t)value, .size = (uint32_t)size, .flags = (uint32_t)flags };
    return (int)syscall(FERRY_SYS_setxattrat, dirfd, path, 0, name, &args, sizeof args);
#else
    errno = ENOSYS; return -1;
#endif
}

int ferry_removexattrat(int dirfd, const char *path, const char *name) {
#ifdef FERRY_SYS_removexattrat
    return (int)syscall(FERRY_SYS_removexattrat, dirfd, path, 0, name);
#else
    errno = ENOSYS; return -1;
#endif
}

int ferry_fchmodat(int dirfd, const char *path, mode_t mode) { return fchmodat(dirfd, path, mode, 0); }

long ferry_readlinkat(int dirfd, const char *path, char *buffer, size_t size) {
    return readlinkat(dirfd, path, buffer, size);
}

int ferry_unshare(int flags) { return unshare(flags); }
int ferry_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int ferry_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    int result = (int)syscall(SYS_capget, &header, data);
    if (result != 0) return result;
    *effective = (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
    *permitted = (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
    *inheritable = (uint64_t)data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    return 0;
}

int ferry_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2] = {
        { (uint32_t)effective, (uint32_t)permitted, (uint32_t)inheritable },
        { (uint32_t)(effective >> 32), (uint32_t)(permitted >> 32), (uint32_t)(inheritable >> 32) },
    };
    return (int)syscall(SYS_capset, &header, data);
}

int ferry_prctl(int option, unsigned long arg2, unsigned long arg3) {
    return prctl(option, arg2, arg3, 0UL, 0UL);
}

static void ferry_sigsys_report(int signal, siginfo_t *info, void *context) {
    (void)context;
    char line[64] = "ferry: seccomp refused system call ";
    size_t length = strlen(line);
    char digits[20];
    int count = 0;
    unsigned number = (unsigned)info->si_syscall;
    do { digits[count++] = (char)('0' + number % 10); number /= 10; } while (number > 0);
    while (count > 0 && length < sizeof line - 2) line[length++] = digits[--count];
    line[length++] = '\n';
    (void)!write(2, line, length);
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    sigaction(signal, &fallback, NULL);
    // Make the refused call again: the filter traps it again, and the kernel's forced SIGSYS
    // now meets the default action and kills the process. raise() would not do for pid 1 of
    // a pid namespace (the sandbox's server), which ignores its own default-action signals.
    syscall(info->si_syscall);
    raise(signal);
}

int ferry_install_sigsys_reporter(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = ferry_sigsys_report;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL);
}

long ferry_raw_syscall0(long number) { return syscall(number); }

int ferry_fork(void) { return (int)fork(); }
int ferry_pidfd_open(int pid) { return (int)syscall(434 /* SYS_pidfd_open */, pid, 0); }
int ferry_pidfd_exited(int pidfd) {
    struct pollfd entry = { .fd = pidfd, .events = POLLIN };
    int ready = poll(&entry, 1, 0);
    return ready < 0 ? -1 : ready > 0;
}
int ferry_close_from(int first) { return (int)syscall(436 /* SYS_close_range */, first, ~0U, 0); }
