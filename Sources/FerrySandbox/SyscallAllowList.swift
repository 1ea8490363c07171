/// The system calls a sandboxed Ferry may make, in groups, each with the reason it is needed.
/// Every call not listed is refused by the seccomp filter (`--seccomp kill` ends the process).
///
/// How the list was found: the whole test suite (both transports, both I/O engines,
/// passthrough, notifications, locks, xattrs, ioctls, stress-ng, fio) ran with
/// `--seccomp log`, and the kernel's audit records (`dmesg | grep 'type=1326'`, comm "ferry")
/// named what was still missing; then it ran again with the default `kill`. When a change
/// makes Ferry call something new, a test that reaches it dies with SIGSYS: add the call to
/// the group it belongs to, with its reason.
///
/// Names are libseccomp's (x86_64 spellings; libseccomp maps them on other architectures).
/// Calls newer than the installed libseccomp are listed by their x86_64 number in `numbered`.
public enum SyscallAllowList {
    /// One group of calls and why Ferry makes them.
    public struct Group: Sendable {
        public let reason: String
        public let names: [String]
        /// Calls libseccomp 2.5 does not know by name: (name for the log, x86_64 number).
        public let numbered: [(name: String, number: Int32)]

        init(_ reason: String, _ names: [String], numbered: [(name: String, number: Int32)] = []) {
            self.reason = reason
            self.names = names
            self.numbered = numbered
        }
    }

    /// The groups, each with its reason.
    public static let groups: [Group] = [
        Group("memory: the Swift runtime, malloc, per-thread buffers, guest memory of a VM (mmap of the regions QEMU sends)",
              ["brk", "mmap", "munmap", "mprotect", "mremap", "madvise"]),
        Group("threads: request, ring, lock-waiter, watcher and signal threads (pthread_create, futex waits, thread names, CPU pinning of ring queues)",
              ["set_robust_list", "get_robust_list", "rseq", "futex", "sched_yield", "sched_getaffinity",
               "sched_setaffinity", "gettid", "getpid", "tgkill", "prctl", "exit", "exit_group", "membarrier",
               "set_tid_address"]),
        Group("signals: the signal thread's sigwait, wake-up signals of blocked readers and lock waiters, SIGSYS reports",
              ["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack",
               "rt_tgsigqueueinfo"]),
        Group("time: timeouts, cache ages, the grace period on stop",
              ["clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time"]),
        Group("descriptors: every file operation goes through a descriptor (openat relative to inode descriptors, /proc/self/fd reopens)",
              ["openat", "openat2", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "lseek",
               "pipe2", "eventfd2", "ioctl"]),
        Group("data: READ, WRITE, FSYNC, FALLOCATE, COPY_FILE_RANGE, LSEEK on the sync engine and on /dev/fuse",
              ["read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
               "fsync", "fdatasync", "syncfs", "sync_file_range", "fallocate", "ftruncate",
               "copy_file_range"]),
        Group("metadata: LOOKUP, GETATTR, SETATTR, STATFS, READDIR, MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RENAME, READLINK, ACCESS",
              ["newfstatat", "fstat", "statx", "fstatfs", "statfs", "getdents64", "mkdirat", "mknodat",
               "unlinkat", "renameat", "renameat2", "linkat", "symlinkat", "readlinkat", "fchmod", "fchmodat",
               "fchown", "fchownat", "utimensat", "faccessat", "faccessat2", "umask", "getcwd", "fchdir"],
              numbered: [("fchmodat2", 452)]),
        Group("extended attributes and POSIX ACLs: GETXATTR, SETXATTR, LISTXATTR, REMOVEXATTR (by descriptor or /proc/self/fd path)",
              ["getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr",
               "flistxattr", "removexattr", "lremovexattr", "fremovexattr"],
              numbered: [("setxattrat", 463), ("getxattrat", 464), ("listxattrat", 465), ("removexattrat", 466)]),
        Group("inodes as file handles (name_to_handle_at when a node is remembered, open_by_handle_at when it is used)",
              ["name_to_handle_at", "open_by_handle_at"]),
        Group("locks: fcntl OFD locks and flock on the host files (blocking waits included)",
              ["flock"]),
        Group("callers' credentials: per-thread fsuid/fsgid/groups and umask (unshare(CLONE_FS) per request thread)",
              ["setfsuid", "setfsgid", "setgroups", "capget", "getuid", "geteuid", "getgid", "getegid",
               "getresuid", "getresgid"]),
        Group("the I/O core and the FUSE-over-io_uring transport",
              ["io_uring_setup", "io_uring_enter", "io_uring_register"]),
        Group("waiting: readers on /dev/fuse and their I/O completions, vhost-user queue kicks, the invalidator's ring",
              ["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll"]),
        Group("change notifications: marks for directories and file systems reached later",
              ["fanotify_mark", "inotify_add_watch", "inotify_rm_watch"]),
        Group("vhost-user: the QEMU connection (accept, SCM_RIGHTS messages), and the mount helper's socket",
              ["accept", "accept4", "recvmsg", "sendmsg", "recvfrom", "sendto", "shutdown", "getsockopt"]),
        Group("the runtime: random seeds (Swift hashing), limits and system facts read once",
              ["getrandom", "uname", "prlimit64", "getrlimit", "sysinfo", "sched_getparam", "sched_getscheduler",
               "getpriority", "restart_syscall"]),
        Group("reaping the mount helper at exit",
              ["wait4", "waitid"]),
    ]

    /// clone(2) is allowed without any of these flags (CLONE_NEWNS, CLONE_NEWCGROUP,
    /// CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET; CLONE_NEWTIME
    /// exists only for clone3 and unshare): threads, never new namespaces. clone3(2), whose flags
    /// sit in memory a filter cannot read, answers ENOSYS, and glibc then creates its threads
    /// with clone(2).
    public static let cloneForbiddenFlags: UInt64 = 0x7e02_0000

    /// unshare(2) is allowed with exactly CLONE_FS (each request thread's own umask), never to
    /// enter new namespaces.
    public static let unshareFlags: UInt64 = 0x200   // CLONE_FS
}
